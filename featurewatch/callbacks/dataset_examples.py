"""DatasetExamples: the real inputs that excite each channel most, where, and through which
pixels (on 1-D signal nets: which signals, and which interval of samples)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn

from featurewatch.callbacks._probe import Normalize, ProbeImages
from featurewatch.callbacks._ranks import SharedTensor, split_projection, split_top_examples, world
from featurewatch.callbacks.base import FeatureWatchWarning, check_layers, describe_channels
from featurewatch.callbacks.rendering import Filmstrips, image_header
from featurewatch.core.calls import layer_call_counts
from featurewatch.core.drawing import examples_grid
from featurewatch.core.examples import TopExamples, top_examples
from featurewatch.core.filmstrip import topk_drift
from featurewatch.core.images import scale_each
from featurewatch.core.inspect import activation_maps
from featurewatch.core.layers import list_layers, parse_layer, resolve_layer
from featurewatch.core.projection import PROJECTION_RULES
from featurewatch.core.receptive_field import Box, Interval, receptive_fields, receptive_intervals
from featurewatch.core.signal_examples import signal_examples_grid, signal_tiles
from featurewatch.core.validation import (
    check_bool,
    check_channel_list,
    check_image_inputs,
    check_int,
    out_of_range_message,
)
from featurewatch.loggers import Event

#: ``checkpoint_pool="auto"`` keeps the pool itself in checkpoints up to this size.
MAX_CHECKPOINT_POOL_BYTES = 8 * 2**20


def _mark(pool: torch.Tensor) -> list[float]:
    """A pool's fingerprint: its shape and the sum of its values (float64)."""
    return [float(s) for s in pool.shape] + [float(pool.detach().double().sum())]


__all__ = ["DatasetExamples"]

_RULE_NAMES = {"guided": "guided-backprop", "deconvnet": "deconvnet", "gradient": "gradient"}
_PLAIN_NOTE = "(no nn.ReLU/ReLU6/LeakyReLU module before this layer: plain gradient)"
_READABLE = ("conv", "activation", "linear")  # the layer kinds whose outputs this callback reads
#: Why a 1-D layer's picture has no projection column (yet).
_NO_SIGNAL_PROJECTIONS = (
    "no projections: featurewatch.core.projection takes (N, C, H, W) images only so far"
)


def _pool_names(message: str) -> str:
    """A :class:`ProbeImages` message in this callback's argument names (``pool``,
    ``pool_size``)."""
    for old, new in (
        ("`probe`", "`pool`"),
        ("probe=", "pool="),
        ("`num_images`", "`pool_size`"),
        ("no probe images", "no pool images"),
    ):
        message = message.replace(old, new)
    return message


class DatasetExamples(Filmstrips):
    """Log, per watched channel, the pool images that excite it most (Zeiler & Fergus, 2014).

    A rendered feature visualization shows what a channel *could* respond to; dataset examples
    show what it *does* respond to in your data, at every epoch, on the same fixed image pool.
    For each channel: the ``k`` pool images with the highest spatial maximum of the channel, the
    receptive-field patch around that maximum (the part of the image the unit can see at all),
    and the projection of the activation back to pixels (guided backprop by default), which
    shows which pixels inside the patch drive it. Watching them across epochs shows channels
    specializing (or dying: a row of zero activations).

    On a net over 1-D signals (``(N, C, L)`` inputs, a ``Conv1d`` layer's ``(N, C, L)`` output:
    audio, sensor series) the same search runs over time: each row shows the channel's ``k`` top
    signals as small waveform plots with the interval of samples the maximal unit can see shaded
    (:func:`~featurewatch.core.receptive_field.receptive_intervals`), titled with the pool index,
    the activation and the interval; projections are not drawn for 1-D layers yet (the caption
    says so); the pool is taken from the batches (``pool=None``) or given as ``(N, C, L)``.

    Cost per call: one forward per pool batch (``pool_size / batch_size`` of them) serves every
    watched layer and stops right after the deepest one - each module up to it runs once per
    batch, none after it; per layer, one forward/backward of the ``rows * k`` top images for the
    projections (stopped after the layer) and one stand-in forward/backward for the receptive
    fields of positions not seen before (cached for the run). One single-image forward counts
    module calls, once per input shape for the run. Everything runs isolated: the model's
    parameters, ``.grad``, ``requires_grad``, train flags, BatchNorm statistics and the global RNG
    are exactly as they were; the user's dataloaders are never iterated. A layer that fails is
    reported (warning and ``.../<layer>/error`` text) and the others are still logged.

    Args:
        layers: layer names as in ``model.named_modules()`` (a str or a list; ``"name@k"`` picks
            the k-th call of a reused module). Conv-like ``(N, C, H, W)`` outputs get crops;
            fully-connected ``(N, C)`` outputs get top images and projections only.
        channels: channel indices: one list used for every layer, or ``{layer: [channels]}`` per
            layer (layers not in it get the default). Default: the first ``max_channels``.
        max_channels: channels per layer when ``channels`` does not give them (one row each).
        k: top images per channel (capped at the pool size).
        pool: the image pool: an ``(N, C, H, W)`` tensor (normalized like training inputs), a
            path (image file, folder, ``.pt`` tensor; resized to the training input size and
            normalized with ``normalize``), or ``None``: the first ``pool_size`` validation inputs
            as Lightning feeds them, fixed at the end of the first validation epoch (calls before
            it, e.g. ``at_start``, use the sanity check's images); with no validation, the first
            training inputs, fixed after the first epoch. Your dataloaders are never iterated by
            the callback.
        pool_size: images in the pool when it is taken from batches or a folder.
        projection: ``"guided"`` (guided backprop), ``"deconvnet"`` (Zeiler & Fergus's rule),
            ``"gradient"`` (plain gradient) or ``None`` (no projections). The rules rewrite
            ``nn.ReLU``, ``nn.ReLU6`` and ``nn.LeakyReLU`` modules; ``F.relu`` calls keep the
            plain gradient, and a layer with no such module before it gets the plain gradient
            (the caption says so).
        crops: show the receptive-field crops (and crop the projections to them).
        input_key: where the images are in a batch (index for tuples, key for dicts).
        normalize: ``(mean, std)`` applied to pool images loaded from a path.
        batch_size: the most pool images per pass; fewer for large images
            (:mod:`~featurewatch.core.batching`: at 224 px 8 per forward, 4 per projection).
        min_size: tiles are enlarged (nearest neighbour, display only) to at least this size
            (default 64: a 16 px digit is drawn 64 px wide, each pixel a crisp 4 x 4 block).
        checkpoint_pool: what checkpoints keep of the pool. ``"auto"`` (default): the pool
            itself when it takes at most :data:`MAX_CHECKPOINT_POOL_BYTES` (8 MiB: 256 digits
            of 16 x 16 take 256 KiB), else only its fingerprint (shape and sum, a few bytes):
            after a resume the pool is collected again from the batches Lightning feeds, and
            once it is fixed its fingerprint is compared with the checkpoint's (a warning says
            when they differ, e.g. a shuffling validation loader; the drift then starts
            afresh). ``True``: always the pool (``pool_size * C * H * W * 4`` bytes in every
            checkpoint: 154 MB for 256 RGB images of 224 x 224). ``False``: nothing.
        filmstrip_every: also log the filmstrips every this many calls (``None``: only at the
            end of training); see :class:`~featurewatch.callbacks.rendering.Filmstrips`.
        **schedule: ``every_n_epochs``, ``every_n_train_steps``, ``at_start``, ``at_end``,
            ``strict``: see :class:`~featurewatch.callbacks.base.FeatureWatchCallback`; with
            ``strict=True`` a failing layer raises instead of being reported.

    Logged keys:
        - ``featurewatch/examples/<layer>``: image, one row per channel: the ``k`` top images
          (highest first, receptive field outlined in red) | their receptive-field crops |
          their projections (zero is grey); above each row a strip with the channel, pool
          indices and activations (``"ch 5 · top 6: #12 (4.1), #3 (3.9), ..."``, as many as
          fit), under the header ``"<layer> · epoch E · step S"``. The caption gives, per
          channel, all the pool indices and activation values, with the epoch and step. On a
          1-D layer: the ``k`` top signals plotted, the receptive-field interval shaded, and the
          caption gives per example the pool index, the value, the time position of the maximum
          and the interval of input samples (``"#12 (4.1) t=5 [6, 20)"``).
        - ``featurewatch/examples/<layer>/drift``: scalar, how much the channels' top images
          changed since the previous call: the mean over channels of ``1 - |P ∩ C| / |P ∪ C|``
          (Jaccard distance) of the channel's top-``k`` pool indices then (``P``) and now
          (``C``). In ``[0, 1]``: 0 the same images (in any order), 1 none in common. Not logged
          at the first call, nor when the pool changed (e.g. from the sanity check's images to
          the fixed pool). The caption gives each channel's value.
        - ``featurewatch/examples/<layer>/drift_units``: histogram, those per-channel values.
        - ``featurewatch/examples/<layer>/filmstrip``: image, at the end of training (and every
          ``filmstrip_every`` calls): one row per channel, its top pool image (on 1-D layers: a
          thumbnail plot of its top signal) at each call (at
          most 12 columns, evenly spread, titled with epoch and step), with an animated GIF where
          the logger shows animations; see
          :class:`~featurewatch.callbacks.rendering.Filmstrips` for the memory bound.
        - ``featurewatch/examples/<layer>/error``: text, when that layer failed in a call (the
          other layers are still logged).
        - ``featurewatch/examples/seconds``: wall time of the call.

    Under DDP every rank searches a share of rank zero's pool (sent once) and projects a share of
    the examples; rank zero logs the merged result, the same as one process's.

    Example:
        >>> DatasetExamples(["net.features.2", "net.features.6"], max_channels=8, k=6)
        >>> DatasetExamples(["layer1", "layer3"], channels={"layer3": [5, 17, 40]}, crops=False)
    """

    default_name = "examples"
    all_ranks = True  # each rank searches and projects its share (see callbacks/_ranks.py)

    def __init__(
        self,
        layers: str | Sequence[str],
        channels: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
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
        min_size: int = 64,
        checkpoint_pool: bool | str = "auto",
        filmstrip_every: int | None = None,
        **schedule: Any,
    ) -> None:
        super().__init__(**schedule)
        names = list(dict.fromkeys(str(parse_layer(la)) for la in check_layers(layers) or []))
        chosen: list[int] | dict[str, list[int]] | None = None
        if isinstance(channels, Mapping):
            chosen = {}
            for key, value in channels.items():
                if not isinstance(key, str):
                    raise TypeError(
                        f"`channels` keys must be layer names, got {type(key).__name__} {key!r}"
                    )
                layer = str(parse_layer(key))
                if layer not in names:
                    raise ValueError(
                        f"`channels` names layer {key!r}, which is not in `layers` "
                        f"({', '.join(names)})"
                    )
                chosen[layer] = check_channel_list(f"channels[{key!r}]", value, allow_int=False)
        elif channels is not None:
            chosen = check_channel_list("channels", channels, allow_int=False)
        for name, count in (
            ("max_channels", max_channels),
            ("k", k),
            ("pool_size", pool_size),
            ("batch_size", batch_size),
            ("min_size", min_size),
        ):
            check_int(name, count)
        self.init_filmstrips(filmstrip_every, min_size)
        check_bool("crops", crops)
        if not (isinstance(checkpoint_pool, bool) or checkpoint_pool == "auto"):
            raise ValueError(
                f"`checkpoint_pool` must be 'auto', True or False, got {checkpoint_pool!r}"
            )
        if projection is not None and projection not in PROJECTION_RULES:
            raise ValueError(
                f"`projection` must be one of {', '.join(map(repr, PROJECTION_RULES))} or None, "
                f"got {projection!r}"
            )
        self.layers = names
        self.channels = chosen
        self.max_channels = max_channels
        self.k = k
        self.projection = projection
        self.crops = crops
        self.input_key = input_key
        self.batch_size = batch_size
        self.min_size = min_size
        self.checkpoint_pool = checkpoint_pool
        try:
            self._pool = ProbeImages(pool, pool_size, normalize, argument="pool")
        except (TypeError, ValueError, FileNotFoundError) as err:
            raise type(err)(_pool_names(str(err))) from None
        self._num_channels: dict[str, int] = {}
        # module calls per forward, per input shape (C, H, W): fixed by the architecture
        self._call_counts: dict[tuple[int, ...], dict[str, int]] = {}
        # receptive fields per (layer, input shape) and map position: fixed, computed once
        self._boxes: dict[tuple[str, tuple[int, ...]], dict[tuple[int, int], Box]] = {}
        # the same for the time positions of 1-D layers: intervals of input samples
        self._intervals: dict[tuple[str, tuple[int, ...]], dict[int, Interval]] = {}
        # per layer: (channels, step, (channels, k) top indices) of the previous call, valid for
        # the pool marked by _pool_mark (its shape and sum)
        self._previous: dict[str, tuple[list[int], int, torch.Tensor]] = {}
        self._pool_mark: list[float] | None = None
        # the fingerprint of a checkpointed pool that was not saved itself, until compared
        self._expected_mark: list[float] | None = None
        self._shared_pool = SharedTensor()

    @property
    def pool_size(self) -> int:
        return self._pool.num_images

    def state_key_fields(self) -> dict[str, Any]:
        return {"layers": self.layers, "channels": self.channels}

    def _given_channels(self, layer: str) -> list[int] | None:
        if isinstance(self.channels, dict):
            return self.channels.get(layer)
        return self.channels

    # ------------------------------------------------------------------ checks
    def check_model(self, pl_module: pl.LightningModule) -> None:
        for layer in self.layers:
            resolve_layer(pl_module, layer)

    def check_input(self, pl_module: pl.LightningModule, x: torch.Tensor) -> None:
        if x.dim() != 3:  # 1-D signals (N, C, L) are drawn as waveforms
            check_image_inputs("DatasetExamples", x)
        self._pool.resolve_path(x)
        sample = self._pool.fixed if self._pool.fixed is not None else x
        maps = activation_maps(pl_module, sample[:1], self.layers)
        spatial, shapes = (
            (3, "(N, C, L) or (N, C)") if x.dim() == 3 else (4, "(N, C, H, W) or (N, C)")
        )
        for layer, m in maps.items():
            if m.dim() not in (2, spatial):
                raise ValueError(
                    f"DatasetExamples needs {shapes} layer outputs on inputs of shape "
                    f"{tuple(x.shape)}, but layer {layer!r} outputs shape {tuple(m.shape)}; name "
                    "conv, activation or linear layers (e.g. "
                    f"{', '.join(list_layers(pl_module, kinds=_READABLE)[:6])})"
                )
            self._num_channels[layer] = int(m.shape[1])
            given = self._given_channels(layer)
            if given is not None and max(given) >= m.shape[1]:
                raise ValueError(
                    "DatasetExamples: "
                    + out_of_range_message(max(given), int(m.shape[1]), layer=layer)
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
            self._verify(self._pool.get())  # fixed from the first real validation epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pool.source is None and self._pool.fixed is None and self._pool.seen("train"):
            self._verify(self._pool.get())  # no validation so far: the first training inputs
        super().on_train_epoch_end(trainer, pl_module)

    def _verify(self, pool: torch.Tensor) -> None:
        """Compare a pool fixed after a resume with the checkpoint's fingerprint (once)."""
        expected, self._expected_mark = self._expected_mark, None
        if expected is not None and _mark(pool) != expected:
            rank_zero_warn(
                f"DatasetExamples({self.name!r}): the pool collected after resuming differs from "
                "the checkpointed one (its fingerprint: shape and sum); a shuffling validation "
                "loader or other data? The top images are now from the new pool, their drift "
                "starts afresh. Pass checkpoint_pool=True to keep the pool itself in checkpoints.",
                category=FeatureWatchWarning,
            )

    # ------------------------------------------------------------------ work
    def _peek_pool(self) -> torch.Tensor:
        try:
            return self._pool.peek()
        except RuntimeError as err:
            raise RuntimeError(_pool_names(str(err))) from None

    def _layer_channels(self, pl_module: pl.LightningModule, pool: torch.Tensor) -> None:
        """Channel counts of the layers that use the default channels (e.g. after a resume):
        one truncated forward of one image for all of them; a failure is reported per layer."""
        missing = [
            la
            for la in self.layers
            if la not in self._num_channels and self._given_channels(la) is None
        ]
        if not missing:
            return
        try:
            maps = activation_maps(pl_module, pool[:1], missing)
        except Exception:  # noqa: BLE001 - each layer is retried alone and reports its own error
            return
        self._num_channels.update({la: int(m.shape[1]) for la, m in maps.items()})

    def _channels(self, pl_module: pl.LightningModule, layer: str, pool: torch.Tensor) -> list[int]:
        given = self._given_channels(layer)
        if given is not None:
            return list(given)
        if layer not in self._num_channels:
            self._num_channels[layer] = int(
                activation_maps(pl_module, pool[:1], [layer])[layer].shape[1]
            )
        return list(range(min(self.max_channels, self._num_channels[layer])))

    def _counts(self, pl_module: pl.LightningModule, pool: torch.Tensor) -> dict[str, int] | None:
        """Module calls per forward for this input shape (cached), or ``None`` if counting fails
        (each layer then counts, and fails, on its own)."""
        shape = tuple(int(s) for s in pool.shape[1:])
        if shape not in self._call_counts:
            try:
                self._call_counts[shape] = layer_call_counts(pl_module, pool[:1], self.layers)
            except Exception:  # noqa: BLE001 - reported per layer below
                return None
        return self._call_counts[shape]

    def _receptive_fields(
        self,
        pl_module: pl.LightningModule,
        layer: str,
        shape: tuple[int, ...],
        positions: list[tuple[int, int]],
        counts: dict[str, int] | None = None,
    ) -> list[Box]:
        cache = self._boxes.setdefault((layer, shape), {})
        missing = sorted({p for p in positions if p not in cache})
        if missing:
            found = receptive_fields(
                pl_module, layer, shape, missing, batch_size=self.batch_size, call_counts=counts
            )
            cache.update(zip(missing, found))
        return [cache[p] for p in positions]

    def _receptive_intervals(
        self,
        pl_module: pl.LightningModule,
        layer: str,
        shape: tuple[int, ...],
        positions: list[int],
        counts: dict[str, int] | None = None,
    ) -> list[Interval]:
        cache = self._intervals.setdefault((layer, shape), {})
        missing = sorted({t for t in positions if t not in cache})
        if missing:
            found = receptive_intervals(
                pl_module, layer, shape, missing, batch_size=self.batch_size, call_counts=counts
            )
            cache.update(zip(missing, found))
        return [cache[t] for t in positions]

    def _layer_failed(self, event: Event, layer: str, err: Exception) -> None:
        """Report one layer's failure (call from inside the ``except`` block); re-raise if
        strict."""
        self.report_failure(event, layer, f"layer {layer!r}", err)

    def visualize(self, trainer: pl.Trainer, pl_module: pl.LightningModule, event: Event) -> None:
        pool = self._shared_pool(self._peek_pool())  # rank zero's on every rank (DDP)
        shape = tuple(int(s) for s in pool.shape[1:])
        mark = _mark(pool)
        if mark != self._pool_mark:  # other images: their indices cannot be compared
            self._previous.clear()
            self._pool_mark = mark
        counts = self._counts(pl_module, pool)
        self._layer_channels(pl_module, pool)
        wanted: dict[str, list[int]] = {}
        for layer in self.layers:
            try:
                wanted[layer] = self._channels(pl_module, layer, pool)
            except Exception as err:  # noqa: BLE001 - reported per layer (re-raised if strict)
                self._layer_failed(event, layer, err)
        if not wanted:
            return
        tops: dict[str, TopExamples] = {}
        self.progress(f"top {self.k} of {len(pool)} pool inputs, {len(wanted)} layers")
        try:
            # one pass over the pool for every layer, stopped after the deepest
            tops = split_top_examples(  # under DDP each rank searches its share of the pool
                pl_module, pool, wanted, k=self.k, batch_size=self.batch_size, call_counts=counts
            )
        except Exception:  # noqa: BLE001 - find the failing layer(s) one by one
            for layer, chans in wanted.items():
                try:
                    tops[layer] = top_examples(
                        pl_module,
                        pool,
                        layer,
                        chans,
                        k=self.k,
                        batch_size=self.batch_size,
                        call_counts=counts,
                    )
                except Exception as err:  # noqa: BLE001 - reported per layer (re-raised if strict)
                    self._layer_failed(event, layer, err)
        for i, layer in enumerate(self.layers, 1):
            if layer not in tops:
                continue
            self.progress(f"{layer} ({i}/{len(self.layers)})")
            try:
                top = tops[layer]
                drift = self._drift(event, layer, top)
                if pool.dim() == 3:
                    self._show_signals(pl_module, event, pool, shape, layer, top, counts, drift)
                    thumbnails = signal_tiles(pool[top.indices[:, 0]])
                else:
                    self._show(pl_module, event, pool, shape, layer, top, counts, drift)
                    thumbnails = scale_each(pool[top.indices[:, 0]].detach().float().cpu())
                self.keep(
                    event,
                    f"featurewatch/{self.name}/{layer}",
                    thumbnails,
                    [str(c) for c in top.channels],
                    part=layer,
                    title=f"{layer}: top pool image of each channel (rows) over calls (columns)",
                )
            except Exception as err:  # noqa: BLE001 - reported per layer (re-raised if strict)
                self._layer_failed(event, layer, err)
        self.add_due_filmstrips(event)

    def _drift(
        self, event: Event, layer: str, top: TopExamples
    ) -> tuple[int, dict[int, float]] | None:
        """Per channel, the Jaccard distance of its top-k pool indices now and at the previous
        call (with that call's step), logged; ``None`` at the first call. Remembers these
        indices for the next call."""
        chans = list(top.channels)
        indices = top.indices.detach().cpu().long()
        previous = self._previous.get(layer)
        self._previous[layer] = (chans, event.step, indices.clone())
        if previous is None:
            return None
        old_chans, old_step, old = previous
        common = [c for c in chans if c in old_chans]
        if not common:
            return None
        values = topk_drift(
            old[[old_chans.index(c) for c in common]], indices[[chans.index(c) for c in common]]
        ).tolist()
        key = f"featurewatch/{self.name}/{layer}"
        event.add_scalar(f"{key}/drift", sum(values) / len(values))
        event.add_histogram(f"{key}/drift_units", values)
        return old_step, dict(zip(common, values))

    def _show(
        self,
        pl_module: pl.LightningModule,
        event: Event,
        pool: torch.Tensor,
        shape: tuple[int, ...],
        layer: str,
        top: TopExamples,
        counts: dict[str, int] | None,
        drift: tuple[int, dict[int, float]] | None = None,
    ) -> None:
        rows, k = top.indices.shape
        flat_positions = None
        if top.positions is not None:
            flat_positions = [(int(y), int(x)) for y, x in top.positions.flatten(0, 1).tolist()]
        projections = None
        plain = False
        if self.projection is not None:
            result = split_projection(  # under DDP each rank projects its share
                pl_module,
                pool[top.indices.flatten()],
                layer,
                [c for c in top.channels for _ in range(k)],
                flat_positions,
                rule=self.projection,  # type: ignore[arg-type]
                batch_size=self.batch_size,
                call_counts=counts,
            )
            projections = result.gradients.reshape(rows, k, *result.gradients.shape[1:])
            plain = result.plain and self.projection != "gradient"
        if world()[0] != 0:  # the other DDP ranks only share the work; rank zero draws and logs
            return
        boxes = None
        if self.crops and flat_positions is not None:
            found = self._receptive_fields(pl_module, layer, shape, flat_positions, counts)
            boxes = [found[r * k : (r + 1) * k] for r in range(rows)]
        titles = [
            f"ch {c} · top {k}: " + ", ".join(f"#{i} ({v:.3g})" for i, v in zip(idx, val))
            for c, idx, val in zip(top.channels, top.indices.tolist(), top.values.tolist())
        ]
        image = examples_grid(
            pool,
            top,
            boxes=boxes,
            projections=projections,
            min_size=self.min_size,
            row_titles=titles,
            header=image_header(layer, event),
        )
        event.add_image(
            f"featurewatch/{self.name}/{layer}",
            image,
            caption=self._caption(event, layer, top, boxes, projections, plain, drift),
        )
        self._table(event, pool, layer, top, boxes)

    def _table(
        self,
        event: Event,
        pool: torch.Tensor,
        layer: str,
        top: TopExamples,
        boxes: list[list[Box]] | None,
    ) -> None:
        """The same examples as one row each (W&B shows a sortable table; other sinks skip it)."""
        shown = scale_each(pool[top.indices.flatten()].detach().float().cpu())
        rows: list[list[Any]] = []
        for r, channel in enumerate(top.channels):
            for j in range(top.k):
                box = boxes[r][j] if boxes is not None else None
                rows.append(
                    [
                        channel,
                        j + 1,
                        int(top.indices[r, j]),
                        float(top.values[r, j]),
                        "" if box is None else f"rows {box[0]}:{box[2]}, cols {box[1]}:{box[3]}",
                        shown[r * top.k + j],
                    ]
                )
        event.add_table(
            f"featurewatch/{self.name}/{layer}/table",
            ["channel", "rank", "pool index", "activation", "receptive field", "image"],
            rows,
        )

    def _show_signals(
        self,
        pl_module: pl.LightningModule,
        event: Event,
        pool: torch.Tensor,
        shape: tuple[int, ...],
        layer: str,
        top: TopExamples,
        counts: dict[str, int] | None,
        drift: tuple[int, dict[int, float]] | None = None,
    ) -> None:
        """The picture of a 1-D layer (``(N, C, L)`` pool): waveform plots, intervals shaded."""
        rows, k = top.indices.shape
        times: list[int] | None = None
        intervals = None
        if top.positions is not None:
            times = [int(t) for t in top.positions.flatten().tolist()]
            if self.crops:
                found = self._receptive_intervals(pl_module, layer, shape, times, counts)
                intervals = [found[r * k : (r + 1) * k] for r in range(rows)]
        titles = [
            f"ch {c} · top {k}: " + ", ".join(f"#{i} ({v:.3g})" for i, v in zip(idx, val))
            for c, idx, val in zip(top.channels, top.indices.tolist(), top.values.tolist())
        ]
        image = signal_examples_grid(
            pool, top, intervals=intervals, row_titles=titles, header=image_header(layer, event)
        )
        head = (
            f"epoch {event.epoch}, step {event.step}: {layer}, top {top.k} of {top.pool_size} pool "
            f"signals per channel; rows: {describe_channels(top.channels)}; plots: the top "
            "signals, highest first"
        )
        if intervals is not None:
            head += (
                ", the receptive field of the maximal unit shaded; per example: pool index "
                "(activation) t=time position of the maximum [start, stop) of input samples"
            )
        if self.projection is not None:
            head += f"; {_NO_SIGNAL_PROJECTIONS}"
        if drift is not None:
            head += (
                f"; drift since step {drift[0]}: 1 - Jaccard index of the channel's top "
                f"{top.k} pool indices then and now"
            )
        lines = [head]
        for r, (c, idx, val) in enumerate(
            zip(top.channels, top.indices.tolist(), top.values.tolist())
        ):
            pairs = []
            for j, (i, v) in enumerate(zip(idx, val)):
                pair = f"#{i} ({v:.3g})"
                if times is not None:
                    pair += f" t={times[r * k + j]}"
                if intervals is not None:
                    start, stop = intervals[r][j]
                    pair += f" [{start}, {stop})"
                pairs.append(pair)
            moved = f"; drift {drift[1][c]:.3f}" if drift is not None and c in drift[1] else ""
            lines.append(f"channel {c}: {', '.join(pairs)}{moved}")
        event.add_image(f"featurewatch/{self.name}/{layer}", image, caption="\n".join(lines))

    def _caption(
        self,
        event: Event,
        layer: str,
        top: TopExamples,
        boxes: list[list[Box]] | None,
        projections: torch.Tensor | None,
        plain: bool = False,
        drift: tuple[int, dict[int, float]] | None = None,
    ) -> str:
        columns = ["top images"]
        if boxes is not None:
            columns.append("receptive-field crops")
        if projections is not None:
            name = f"{_RULE_NAMES[str(self.projection)]} projections"
            columns.append(f"{name} {_PLAIN_NOTE}" if plain else name)
        head = (
            f"epoch {event.epoch}, step {event.step}: {layer}, top {top.k} of {top.pool_size} pool "
            f"images per channel; rows: {describe_channels(top.channels)}; columns: "
            f"{' | '.join(columns)}"
        )
        if drift is not None:
            head += (
                f"; drift since step {drift[0]}: 1 - Jaccard index of the channel's top "
                f"{top.k} pool indices then and now"
            )
        lines = [head]
        for c, idx, val in zip(top.channels, top.indices.tolist(), top.values.tolist()):
            pairs = ", ".join(f"#{i} ({v:.3g})" for i, v in zip(idx, val))
            moved = f"; drift {drift[1][c]:.3f}" if drift is not None and c in drift[1] else ""
            lines.append(f"channel {c}: {pairs}{moved}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ resume
    def extra_state(self) -> dict[str, Any]:
        fixed = self._pool.fixed
        keep = self.checkpoint_pool is True or (
            self.checkpoint_pool == "auto"
            and fixed is not None
            and fixed.numel() * fixed.element_size() <= MAX_CHECKPOINT_POOL_BYTES
        )
        state = self._pool.state() if keep else {}
        if not keep and self.checkpoint_pool == "auto" and fixed is not None:
            state["pool_fingerprint"] = _mark(fixed)
        state.update(self.filmstrip_state())
        if self._previous:
            state["drift"] = {
                "pool_mark": self._pool_mark,
                "layers": {
                    layer: {"channels": chans, "step": step, "indices": indices.clone()}
                    for layer, (chans, step, indices) in self._previous.items()
                },
            }
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self._pool.load_state(state)
        found = state.get("pool_fingerprint")
        self._expected_mark = [float(v) for v in found] if found is not None else None
        self.load_filmstrip_state(state)
        saved = state.get("drift") or {}
        mark = saved.get("pool_mark")
        self._pool_mark = [float(v) for v in mark] if mark is not None else None
        for layer, entry in (saved.get("layers") or {}).items():
            self._previous[layer] = (
                [int(c) for c in entry["channels"]],
                int(entry["step"]),
                entry["indices"].long(),
            )
