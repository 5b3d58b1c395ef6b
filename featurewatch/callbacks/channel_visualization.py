"""ChannelVisualization: what each channel of a layer responds to, rendered at every epoch."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch

from featurewatch.callbacks._ranks import world
from featurewatch.callbacks.base import check_layers, describe_channels
from featurewatch.callbacks.rendering import THUMBNAIL_SIZE, RenderCallback, image_header
from featurewatch.core.filmstrip import render_drift, shrink
from featurewatch.core.inspect import activation_maps
from featurewatch.core.layers import list_layers, parse_layer, resolve_layer
from featurewatch.core.render import unit_objective
from featurewatch.core.validation import (
    check_bool,
    check_channel_list,
    check_image_inputs,
    check_int,
    check_positive_float,
    out_of_range_message,
)
from featurewatch.loggers import Event

__all__ = ["ChannelVisualization"]


def _titles(
    chans: Sequence[int], variants: int, weak: Sequence[int], broken: Sequence[int]
) -> list[tuple[str, ...]]:
    """Tile titles, ``variants`` per channel: ``"ch 12"``, marked ``"ch 5 (weak)"`` or
    ``"ch 5 (NaN)"`` (non-finite activation) on the channel's first tile, its other variants
    ``"ch 12 · 2"``; each with shorter alternatives that keep the index and the mark on a
    narrow tile (``"5 (weak)"``)."""
    titles: list[tuple[str, ...]] = []
    for c in chans:
        mark = " (NaN)" if c in broken else " (weak)" if c in weak else ""
        titles.append(
            (f"ch {c}{mark}", f"{c}{mark}", f"{c}{mark.replace('(', '').replace(')', '')}")
        )
        titles.extend((f"ch {c} · {j}", f"{c} · {j}") for j in range(2, variants + 1))
    return titles


class ChannelVisualization(RenderCallback):
    """Render, at every call, one image per channel that maximizes that channel.

    Feature visualization by optimization (Olah et al., 2017, Distill): for each watched channel
    an image is optimized (spectral parametrization, transformation robustness) until the channel
    fires strongly. Across epochs a first layer's channels turn from noise into edge and stroke
    detectors; deeper ones into parts. Every call starts each channel from the *same* noise with the
    *same* transform sequence (seeded by ``seed`` and the channel index), so differences between
    epochs are the network's. All channels of a layer render in one batch; the forward pass stops
    after the layer; the model's parameters, gradients, BatchNorm statistics, train flags and RNG
    are left exactly as they were.

    Args:
        layers: layer names as in ``model.named_modules()`` (a str or a list; ``"name@k"`` picks
            the k-th call of a reused module). Required: each layer costs one batched optimization
            per call, so name the few you want to watch (an early ReLU and a deep one show the
            edges-to-parts progression).
        channels: channel indices to render per layer. Default: the first ``max_channels``.
        max_channels: cap on channels per layer when ``channels`` is not given.
        unit: ``"channel"`` (mean over the map) or ``"neuron"`` (the centre position).
        negative: also render images that *minimize* each unit (logged under ``.../negative``).
        variants: images per channel. With more than one, the images of a channel are rewarded for
            differing in style (Lucid's diversity objective, Gram matrices at the layer), which
            shows several things a channel responds to instead of one; they are logged side by
            side.
        diversity: weight of that reward, relative to the channel's activation (1.0 keeps about
            80% of the activation of a single image on the example CNN; 0 turns it off).
        **settings: the render settings ``size`` (default: the training input size), ``steps``
            (64: ~0.3 s for 16 channels of a small CNN on 32 px, 2 CPU cores), ``lr``,
            ``normalize`` (default ``"data"``: fitted from the first batch), ``fit_stats``,
            ``transforms``, ``redirect_steps`` (default 8), ``polish_steps``, ``batch_size``
            (channels rendered at once), ``time_budget`` (seconds per call for all layers),
            ``seed``, ``min_size``, ``input_key``, ``filmstrip_every``: see
            :class:`~featurewatch.callbacks.rendering.RenderCallback`; and the schedule keywords
            ``every_n_epochs``, ``every_n_train_steps``, ``at_start``, ``at_end``, ``strict``: see
            :class:`~featurewatch.callbacks.base.FeatureWatchCallback`.

    Logged keys:
        - ``featurewatch/channels/<layer>``: image, one tile per channel (row-major), each under a
          title strip: ``"ch 12"``, ``"ch 5 (weak)"`` for a unit that could not be excited,
          ``"ch 5 (NaN)"`` for a non-finite activation; with ``variants``, a channel's further
          images ``"ch 12 · 2"``; under the header ``"<layer> · epoch E · step S"``. The caption
          lists the channel indices, the weak and non-finite units and the drift.
        - ``featurewatch/channels/<layer>/negative``: image, minimizing images (with ``negative``).
        - ``featurewatch/channels/<layer>/mean_activation``: scalar, mean final objective value.
        - ``featurewatch/channels/<layer>/weak_units``: scalar, channels that could not be excited;
          from the first call that has one on (a chart of zeros on every healthy net would only
          crowd the dashboard; once logged, the count goes on, down to 0 when they recover).
        - ``featurewatch/channels/<layer>/nonfinite_units``: scalar, channels whose activation was
          NaN or Inf (listed in the caption; left out of ``mean_activation`` and ``drift``); from
          the first call that has one on, like ``weak_units``.
        - ``featurewatch/channels/<layer>/steps``: scalar, steps run (less than ``steps`` when the
          time budget cut them short; only with a ``time_budget``).
        - ``featurewatch/channels/<layer>/drift``: scalar, how much the channels' images changed
          since the previous call, the mean over channels of ``1 - r``, with ``r`` the Pearson
          correlation of a channel's image now and at the previous call (same seed, so an
          unchanged channel gives 0; its variants together; images above 64 px are compared
          scaled down to 64 px). In ``[0, 2]``; not logged at the first call. The caption lists
          each channel's value.
        - ``featurewatch/channels/<layer>/drift_units``: histogram, those per-channel values.
        - ``featurewatch/channels/<layer>/filmstrip``: image, at the end of training (and every
          ``filmstrip_every`` calls): one row per channel, one column per call (at most 12,
          evenly spread, titled with epoch and step), with an animated GIF where the logger shows
          animations; see :class:`~featurewatch.callbacks.rendering.Filmstrips` for the memory
          bound.
        - ``featurewatch/channels/seconds``: wall time of the call.

    Memory between calls: per layer, the last call's images (at most 64 px a side, float32) for
    the drift, and the filmstrip thumbnails; both are kept in checkpoints, so a resumed run goes
    on comparing with the last call before it stopped.

    Under DDP every rank renders a contiguous share of the channels (whole channels with their
    variants) and the images are gathered: a call's wall time falls with the number of ranks,
    the images are those of one process, and rank zero logs them.

    Example:
        >>> ChannelVisualization(["net.features.0", "net.features.4"], max_channels=16, steps=64)
    """

    default_name = "channels"
    all_ranks = True  # each rank renders its share of the units (see _render)

    def __init__(
        self,
        layers: str | Sequence[str],
        channels: Sequence[int] | None = None,
        *,
        max_channels: int = 16,
        unit: str = "channel",
        negative: bool = False,
        variants: int = 1,
        diversity: float = 1.0,
        **settings: Any,
    ) -> None:
        super().__init__(**settings)
        names = check_layers(layers)
        check_int("max_channels", max_channels, 1)
        check_int("variants", variants, 1)
        check_positive_float("diversity", diversity, allow_zero=True)
        check_bool("negative", negative)
        if unit not in ("channel", "neuron"):
            raise ValueError(f"`unit` must be 'channel' or 'neuron', got {unit!r}")
        self.layers = names
        self.channels = (
            None if channels is None else check_channel_list("channels", channels, allow_int=False)
        )
        self.max_channels = max_channels
        self.unit = unit
        self.negative = negative
        self.variants = variants
        self.diversity = float(diversity)
        self._num_channels: dict[str, int] = {}
        # per layer: (channels, step, (channels, ...) float images) of the previous call
        self._previous: dict[str, tuple[list[int], int, torch.Tensor]] = {}
        # the count scalars logged so far (``<layer>/weak_units``...): logged from their first
        # nonzero value on
        self._counting: set[str] = set()

    def state_key_fields(self) -> dict[str, Any]:
        return {"layers": self.layers, "unit": self.unit}

    def check_model(self, pl_module: pl.LightningModule) -> None:
        for layer in self.layers:
            resolve_layer(pl_module, layer)

    def check_input(self, pl_module: pl.LightningModule, x: torch.Tensor) -> None:
        check_image_inputs("ChannelVisualization", x)
        self._learn_input(x)
        maps = activation_maps(pl_module, x[:1], self.layers)
        for layer, m in maps.items():
            if m.dim() != 4:
                raise ValueError(
                    "ChannelVisualization renders channels of spatial feature maps, but layer "
                    f"{layer!r} outputs shape {tuple(m.shape)}; name conv or activation layers "
                    f"(e.g. {', '.join(list_layers(pl_module)[:6])})"
                )
            self._num_channels[layer] = int(m.shape[1])
            if self.channels is not None and max(self.channels) >= m.shape[1]:
                raise ValueError(
                    "ChannelVisualization: "
                    + out_of_range_message(max(self.channels), int(m.shape[1]), layer=layer)
                )

    def _channels(self, layer: str) -> list[int]:
        if self.channels is not None:
            return list(self.channels)
        return list(range(min(self.max_channels, self._num_channels[layer])))

    def visualize(self, trainer: pl.Trainer, pl_module: pl.LightningModule, event: Event) -> None:
        self._ensure_input(trainer, pl_module)
        if any(str(parse_layer(la)) not in self._num_channels for la in self.layers):
            zeros = torch.zeros(1, *self._input_shape)  # type: ignore[misc]
            maps = activation_maps(pl_module, zeros, self.layers)
            self._num_channels.update({k: int(v.shape[1]) for k, v in maps.items()})
        jobs = len(self.layers) * (2 if self.negative else 1)
        budget = None if self.time_budget is None else self.time_budget / jobs
        for i, layer in enumerate(self.layers, 1):
            self.progress(f"{layer} ({i}/{len(self.layers)})")
            key = f"featurewatch/{self.name}/{layer}"
            chans = self._channels(str(parse_layer(layer)))
            v = self.variants
            objective, seeds = unit_objective(
                layer, chans, seed=self.seed, unit=self.unit, variants=v, diversity=self.diversity
            )
            result = self._render(pl_module, objective, seeds, budget)
            neg = None
            if self.negative:
                objective, seeds = unit_objective(
                    layer,
                    chans,
                    seed=self.seed,
                    unit=self.unit,
                    negative=True,
                    variants=v,
                    diversity=self.diversity,
                )
                self.progress(f"{layer} minimized ({i}/{len(self.layers)})")
                neg = self._render(pl_module, objective, seeds, budget)
            if world()[0] != 0:  # the other DDP ranks only share the renders; rank zero draws
                continue
            drift = self._drift(str(parse_layer(layer)), chans, result.images, event.step)
            # a unit whose activation is NaN/Inf has no meaningful image, value or drift: flagged
            finite = torch.isfinite(result.values)
            broken = [
                c for c, ok in zip(chans, finite.view(len(chans), v).all(1).tolist()) if not ok
            ]
            # a channel is weak when none of its variants could excite it
            weak = [
                c
                for c, w in zip(chans, result.weak.view(len(chans), v).all(1).tolist())
                if w and c not in broken
            ]
            what = "neurons (map centre)" if self.unit == "neuron" else "channels"
            layout = f"{describe_channels(chans)} (row-major" + (
                f", {v} diverse images per channel side by side)" if v > 1 else ")"
            )
            caption = (
                f"epoch {event.epoch}, step {event.step}: {layer}, {what} maximized, {layout}"
                + (f"; could not be excited: {', '.join(map(str, weak))}" if weak else "")
                + (
                    f"; activation not finite (NaN/Inf): {', '.join(map(str, broken))}"
                    if broken
                    else ""
                )
                + (
                    f"; time budget cut steps to {int(result.steps.min())}"
                    if result.budget_exceeded
                    else ""
                )
            )
            if drift is not None:
                since, values = drift
                values = {c: d for c, d in values.items() if math.isfinite(d)}
                drift = (since, values) if values else None
            if drift is not None:
                since, values = drift
                caption += f"; drift since step {since} (1 - Pearson r): " + ", ".join(
                    f"{c}: {d:.3f}" for c, d in values.items()
                )
            titles = _titles(chans, v, weak, broken)
            header = image_header(layer, event)
            picture = self._display(result.images, titles, group=v, header=header)
            event.add_image(key, picture, caption=caption)
            if bool(finite.any()):
                event.add_scalar(f"{key}/mean_activation", float(result.values[finite].mean()))
            for count, units in (("weak_units", weak), ("nonfinite_units", broken)):
                if units or f"{key}/{count}" in self._counting:
                    self._counting.add(f"{key}/{count}")
                    event.add_scalar(f"{key}/{count}", float(len(units)))
            if self.time_budget is not None:  # otherwise constant: always ``steps``
                event.add_scalar(f"{key}/steps", float(result.steps.float().mean()))
            if drift is not None:
                event.add_scalar(f"{key}/drift", sum(drift[1].values()) / len(drift[1]))
                event.add_histogram(f"{key}/drift_units", list(drift[1].values()))
            first = result.images.reshape(len(chans), v, *result.images.shape[1:])[:, 0]
            self.keep(
                event,
                key,
                first,
                [str(c) for c in chans],
                part=layer,
                title=f"{layer}: channels (rows) over calls (columns)",
            )
            if neg is not None:
                event.add_image(
                    f"{key}/negative",
                    self._display(
                        neg.images,
                        _titles(chans, v, [], []),
                        group=v,
                        header=image_header(f"{layer} (minimized)", event),
                    ),
                    caption=(
                        f"epoch {event.epoch}, step {event.step}: {layer}, {what} minimized, "
                        f"{layout}"
                    ),
                )
        self.add_due_filmstrips(event)

    def _drift(
        self, layer: str, chans: list[int], images: torch.Tensor, step: int
    ) -> tuple[int, dict[int, float]] | None:
        """Per channel, ``1 - r`` of its images now and at the previous call (with that call's
        step), for the channels rendered both times; ``None`` at the first call. Remembers
        these images for the next call."""
        pictures = shrink(images, THUMBNAIL_SIZE).reshape(len(chans), -1)  # variants together
        previous = self._previous.get(layer)
        self._previous[layer] = (list(chans), int(step), pictures)
        if previous is None:
            return None
        old_chans, old_step, old = previous
        common = [c for c in chans if c in old_chans]
        if not common or old.shape[1] != pictures.shape[1]:
            return None  # other channels or another size (e.g. changed settings on resume)
        values = render_drift(
            old[[old_chans.index(c) for c in common]], pictures[[chans.index(c) for c in common]]
        )
        return old_step, dict(zip(common, values.tolist()))

    def extra_state(self) -> dict[str, Any]:
        state = super().extra_state()
        if state and self._counting:
            state["counting"] = sorted(self._counting)
        if state and self._previous:
            state["drift"] = {
                layer: {"channels": chans, "step": step, "images": images.clone()}
                for layer, (chans, step, images) in self._previous.items()
            }
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        self._counting = set(state.get("counting") or ())
        for layer, saved in (state.get("drift") or {}).items():
            self._previous[layer] = (
                [int(c) for c in saved["channels"]],
                int(saved["step"]),
                saved["images"].float(),
            )
