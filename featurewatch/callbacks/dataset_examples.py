"""DatasetExamples: the real inputs that excite each channel most, where, and through which pixels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch

from featurewatch.callbacks._probe import Normalize, ProbeImages
from featurewatch.callbacks.base import FeatureWatchCallback, check_int, describe_channels
from featurewatch.core.examples import (
    PROJECTION_RULES,
    Box,
    TopExamples,
    examples_grid,
    project,
    receptive_fields,
    top_examples,
)
from featurewatch.core.inspect import activation_maps
from featurewatch.core.layers import list_layers, parse_layer, resolve_layer
from featurewatch.loggers import Event

__all__ = ["DatasetExamples"]

_RULE_NAMES = {"guided": "guided-backprop", "deconvnet": "deconvnet", "gradient": "gradient"}


class DatasetExamples(FeatureWatchCallback):
    """Log, per watched channel, the pool images that excite it most (Zeiler & Fergus, 2014).

    A rendered feature visualization shows what a channel *could* respond to; dataset examples
    show what it *does* respond to in your data, at every epoch, on the same fixed image pool.
    For each channel: the ``k`` pool images with the highest spatial maximum of the channel, the
    receptive-field patch around that maximum (the part of the image the unit can see at all),
    and the projection of the activation back to pixels (guided backprop by default), which
    shows which pixels inside the patch drive it. Watching them across epochs shows channels
    specializing (or dying: a row of zero activations).

    Cost per call and layer: ``pool_size / batch_size`` forwards that stop right after the layer,
    one forward/backward for the receptive fields of new positions (cached for the run) and one
    forward/backward for the ``len(channels) * k`` projections. Everything runs isolated: the
    model's parameters, ``.grad``, ``requires_grad``, train flags, BatchNorm statistics and the
    global RNG are exactly as they were; the user's dataloaders are never iterated.

    Args:
        layers: layer names as in ``model.named_modules()`` (a str or a list; ``"name@k"`` picks
            the k-th call of a reused module). Conv-like ``(N, C, H, W)`` outputs get crops;
            fully-connected ``(N, C)`` outputs get top images and projections only.
        channels: channel indices per layer. Default: the first ``max_channels``.
        max_channels: channels per layer when ``channels`` is not given (one row each).
        k: top images per channel (capped at the pool size).
        pool: the image pool: an ``(N, C, H, W)`` tensor (normalized like training inputs), a
            path (image file, folder, ``.pt`` tensor; resized to the training input size and
            normalized with ``normalize``), or ``None``: the first ``pool_size`` validation inputs
            as Lightning feeds them, fixed at the end of the first validation epoch and kept in
            checkpoints (calls before it, e.g. ``at_start``, use the sanity check's images); with
            no validation, the first training inputs, fixed after the first epoch. Your
            dataloaders are never iterated by the callback.
        pool_size: images in the pool when it is taken from batches or a folder.
        projection: ``"guided"`` (guided backprop), ``"deconvnet"`` (Zeiler & Fergus's rule),
            ``"gradient"`` (plain gradient) or ``None`` (no projections). Applies to ``nn.ReLU``
            modules; ``F.relu`` calls keep the plain gradient.
        crops: show the receptive-field crops (and crop the projections to them).
        input_key: where the images are in a batch (index for tuples, key for dicts).
        normalize: ``(mean, std)`` applied to pool images loaded from a path.
        batch_size: pool images per forward.
        min_size: tiles are enlarged (nearest neighbour, display only) to at least this size.
        every_n_epochs, every_n_train_steps, at_start, at_end, strict: see
            :class:`~featurewatch.callbacks.base.FeatureWatchCallback`.

    Logged keys:
        - ``featurewatch/examples/<layer>``: image, one row per channel: the ``k`` top images
          (highest first, receptive field outlined in red) | their receptive-field crops |
          their projections (zero is grey). The caption gives, per channel, the pool indices
          and activation values, with the epoch and step.
        - ``featurewatch/examples/seconds``: wall time of the call.

    Example:
        >>> DatasetExamples(["net.features.2", "net.features.6"], max_channels=8, k=6, projection="guided")
    """

    name = "examples"

    def __init__(
        self,
        layers: str | Sequence[str],
        channels: Sequence[int] | None = None,
        *,
        max_channels: int = 8,
        k: int = 6,
        pool: torch.Tensor | str | None = None,
        pool_size: int = 256,
        projection: str | None = "guided",
        crops: bool = True,
        input_key: int | str = 0,
        normalize: Normalize | None = None,
        batch_size: int = 64,
        min_size: int = 32,
        every_n_epochs: int | None = 1,
        every_n_train_steps: int | None = None,
        at_start: bool = False,
        at_end: bool = True,
        strict: bool = False,
    ) -> None:
        super().__init__(
            every_n_epochs=every_n_epochs,
            every_n_train_steps=every_n_train_steps,
            at_start=at_start,
            at_end=at_end,
            strict=strict,
        )
        if isinstance(layers, str):
            layers = [layers]
        if (
            not isinstance(layers, Sequence)
            or not layers
            or not all(isinstance(la, str) for la in layers)
        ):
            raise TypeError(
                f"`layers` must be a layer name or a non-empty list of names, got {layers!r}"
            )
        for layer in layers:
            parse_layer(layer)
        if channels is not None:
            channels = list(channels)
            if not channels or any(
                isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in channels
            ):
                raise ValueError(
                    f"`channels` must be a non-empty list of non-negative ints or None, got {channels!r}"
                )
        check_int("max_channels", max_channels)
        check_int("k", k)
        check_int("pool_size", pool_size)
        check_int("batch_size", batch_size)
        check_int("min_size", min_size)
        if projection is not None and projection not in PROJECTION_RULES:
            raise ValueError(
                f"`projection` must be one of {', '.join(map(repr, PROJECTION_RULES))} or None, got {projection!r}"
            )
        self.layers = [str(parse_layer(la)) for la in layers]
        self.channels = channels
        self.max_channels = max_channels
        self.k = k
        self.projection = projection
        self.crops = bool(crops)
        self.input_key = input_key
        self.batch_size = batch_size
        self.min_size = min_size
        self._pool = ProbeImages(pool, pool_size, normalize)
        self._num_channels: dict[str, int] = {}
        # receptive fields per (layer, input shape) and feature-map position: fixed by the
        # architecture, so computed once per position for the whole run
        self._boxes: dict[tuple[str, tuple[int, ...]], dict[tuple[int, int], Box]] = {}

    @property
    def pool_size(self) -> int:
        return self._pool.num_images

    def state_key_fields(self) -> dict[str, Any]:
        return {"layers": self.layers}

    # ------------------------------------------------------------------ checks
    def check_model(self, pl_module: pl.LightningModule) -> None:
        for layer in self.layers:
            resolve_layer(pl_module, layer)

    def check_input(self, pl_module: pl.LightningModule, x: torch.Tensor) -> None:
        self._pool.resolve_path(x)
        sample = self._pool.fixed if self._pool.fixed is not None else x
        maps = activation_maps(pl_module, sample[:1], self.layers)
        for layer, m in maps.items():
            if m.dim() not in (2, 4):
                raise ValueError(
                    f"DatasetExamples needs (N, C, H, W) or (N, C) layer outputs, but layer {layer!r} outputs "
                    f"shape {tuple(m.shape)}; name conv, activation or linear layers "
                    f"(e.g. {', '.join(list_layers(pl_module, kinds=('conv', 'activation', 'linear'))[:6])})"
                )
            self._num_channels[layer] = int(m.shape[1])
            if self.channels is not None and max(self.channels) >= m.shape[1]:
                raise ValueError(
                    f"DatasetExamples: channel {max(self.channels)} out of range for layer {layer!r} "
                    f"with {m.shape[1]} channels (valid: 0..{m.shape[1] - 1})"
                )

    def observe_batch(self, batch: Any, split: str) -> None:
        if self._pool.fixed is None and self._pool.source is None:
            self._pool.observe(self.input_from_batch(batch), split)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            # the sanity check saw these same batches: do not keep them twice
            self._pool.drop("val")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and self._pool.source is None and self._pool.seen("val"):
            self._pool.get()  # fixed from the first real validation epoch, for the whole run

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pool.source is None and self._pool.fixed is None and self._pool.seen("train"):
            self._pool.get()  # no validation so far: the first training inputs, fixed after one epoch
        super().on_train_epoch_end(trainer, pl_module)

    # ------------------------------------------------------------------ work
    def _channels(self, pl_module: pl.LightningModule, layer: str, pool: torch.Tensor) -> list[int]:
        if self.channels is not None:
            return list(self.channels)
        if layer not in self._num_channels:
            # e.g. after a resume: one truncated forward of one image
            self._num_channels[layer] = int(
                activation_maps(pl_module, pool[:1], [layer])[layer].shape[1]
            )
        return list(range(min(self.max_channels, self._num_channels[layer])))

    def _receptive_fields(
        self,
        pl_module: pl.LightningModule,
        layer: str,
        shape: tuple[int, ...],
        positions: list[tuple[int, int]],
    ) -> list[Box]:
        cache = self._boxes.setdefault((layer, shape), {})
        missing = sorted({p for p in positions if p not in cache})
        if missing:
            found = receptive_fields(pl_module, layer, shape, missing, batch_size=self.batch_size)
            cache.update(zip(missing, found))
        return [cache[p] for p in positions]

    def visualize(self, trainer: pl.Trainer, pl_module: pl.LightningModule, event: Event) -> None:
        pool = self._pool.peek()
        shape = tuple(int(s) for s in pool.shape[1:])
        for layer in self.layers:
            chans = self._channels(pl_module, layer, pool)
            top = top_examples(pl_module, pool, layer, chans, k=self.k, batch_size=self.batch_size)
            rows, k = top.indices.shape
            flat_positions = None
            if top.positions is not None:
                flat_positions = [(int(y), int(x)) for y, x in top.positions.flatten(0, 1).tolist()]
            boxes = None
            if self.crops and flat_positions is not None:
                found = self._receptive_fields(pl_module, layer, shape, flat_positions)
                boxes = [found[r * k : (r + 1) * k] for r in range(rows)]
            projections = None
            if self.projection is not None:
                proj = project(
                    pl_module,
                    pool[top.indices.flatten()],
                    layer,
                    [c for c in chans for _ in range(k)],
                    flat_positions,
                    rule=self.projection,  # type: ignore[arg-type]
                    batch_size=self.batch_size,
                )
                projections = proj.reshape(rows, k, *proj.shape[1:])
            image = examples_grid(
                pool, top, boxes=boxes, projections=projections, min_size=self.min_size
            )
            event.add_image(
                f"featurewatch/examples/{layer}",
                image,
                caption=self._caption(event, layer, top, boxes, projections),
            )

    def _caption(
        self,
        event: Event,
        layer: str,
        top: TopExamples,
        boxes: list[list[Box]] | None,
        projections: torch.Tensor | None,
    ) -> str:
        columns = ["top images"]
        if boxes is not None:
            columns.append("receptive-field crops")
        if projections is not None:
            columns.append(f"{_RULE_NAMES[str(self.projection)]} projections")
        head = (
            f"epoch {event.epoch}, step {event.step}: {layer}, top {top.k} of {top.pool_size} pool "
            f"images per channel; rows: {describe_channels(top.channels)}; columns: {' | '.join(columns)}"
        )
        lines = [head]
        for c, idx, val in zip(top.channels, top.indices.tolist(), top.values.tolist()):
            pairs = ", ".join(f"#{i} ({v:.3g})" for i, v in zip(idx, val))
            lines.append(f"channel {c}: {pairs}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ resume
    def extra_state(self) -> dict[str, Any]:
        return self._pool.state()

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self._pool.load_state(state)
