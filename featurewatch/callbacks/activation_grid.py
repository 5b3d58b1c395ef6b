"""ActivationGrid: the feature maps of fixed probe inputs at chosen layers (images, 1-D signals,
vision-transformer tokens)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch

from featurewatch.callbacks._probe import Normalize, ProbeImages
from featurewatch.callbacks.base import FeatureWatchCallback, check_layers
from featurewatch.callbacks.rendering import image_header
from featurewatch.core.attribution import feature_map
from featurewatch.core.images import grid, nonfinite_counts, nonfinite_note, scale_each
from featurewatch.core.inspect import activation_grid, activation_maps, map_scale
from featurewatch.core.labels import MAX_PNG_PIXELS, with_header
from featurewatch.core.layers import list_layers, resolve_layer
from featurewatch.core.signals import signal_curves, signal_heatmaps
from featurewatch.core.validation import (
    NON_IMAGE_ALTERNATIVES,
    check_channel_list,
    check_int,
    out_of_range_message,
)
from featurewatch.loggers import Event

__all__ = ["ActivationGrid"]


class ActivationGrid(FeatureWatchCallback):
    """Log, for a few fixed probe inputs, every channel's feature map at the named layers.

    The view of the Deep Visualization Toolbox (Yosinski et al., 2015): early layers look like
    filtered copies of the input, deeper ones grow sparse and selective; a channel that is dark for
    every probe at every epoch is a candidate dead filter.

    What is drawn follows the layer's output (one rule with
    :func:`~featurewatch.core.attribution.feature_map`):

    * ``(N, C, H, W)`` maps: per probe image, a grid of its channel maps;
    * ``(N, C, L)`` maps of a 1-D net over ``(N, C, L)`` signals: per probe signal, a heatmap of
      channels (rows) x time steps (columns) with a colour bar
      (:func:`~featurewatch.core.signals.signal_heatmaps`);
    * ``(N, T, D)`` tokens of a vision transformer over images: the patch tokens laid on their
      square patch grid (the class token dropped), one map per token channel, as for conv maps.

    Tabular models (``(N, F)`` inputs) are refused at the first batch: they have no maps.

    Args:
        layers: layer names as in ``model.named_modules()`` (``"name@k"`` picks the k-th call of a
            module used several times in ``forward``). Default: the conv layers whose maps are
            larger than 1x1 at the input size (not the 1x1 maps of squeeze-excitation convs), all
            of them if there are at most ``max_layers``, else ``max_layers`` of them evenly spaced
            from the first to the last (a DenseNet-121 has 120 convs: one grid each would swamp a
            dashboard).
        probe: the probe inputs: a ``(N, C, H, W)`` tensor (already normalized like training
            inputs), a path (image file, folder of images, or ``.pt`` tensor; resized to the
            training input size and normalized with ``normalize``), or ``None`` to take the first
            ``num_images`` inputs of the validation dataloader (training one if there is none, or
            if none was seen before the first call: ``num_sanity_val_steps=0`` with ``at_start``)
            once and keep them for the whole run (the only source for 1-D signals for now).
        num_images: number of probe inputs (when taken from a dataloader or a folder).
        channels: which channels to show per layer (default: the first ``max_channels``).
        max_channels: cap on shown channels per layer.
        max_layers: cap on the default layers (ignored when ``layers`` is given).
        normalize: ``(mean, std)`` applied to probe images loaded from a path.
        max_pixels: the pixels of one call's maps, all layers together: each layer's grid gets an
            equal share, at most :data:`~featurewatch.core.labels.MAX_PNG_PIXELS` (0.64 MP), and
            maps larger than their share are averaged down (said in the caption). The default,
            three times that, keeps a call under 2 MB of PNG: 1.25 MB of maps on a ResNet-18 at
            224 px with 8 layers and 4 probe images (2.9 MB with 0.64 MP for every layer); the
            title strips count towards it. ``None``: no bound.
        input_key: where the images are in a batch (index for tuples, key for dicts).
        **schedule: ``every_n_epochs``, ``every_n_train_steps``, ``at_start``, ``at_end``,
            ``strict``: see :class:`~featurewatch.callbacks.base.FeatureWatchCallback`.

    Logged keys:
        - ``featurewatch/activations/<layer>``: image; per probe image (titled ``probe image i``),
          a grid of its channel maps, each under its channel index (viridis, one colour scale per
          probe image, zero darkest), under the header ``<layer> · epoch E · step S``; or per
          probe signal a channels x time heatmap (one colour scale and colour bar per signal).
          Non-finite values (NaN, Inf) are magenta and the caption counts them per probe input; a
          layer that cannot be drawn is reported (``featurewatch/activations/<layer>/error``) and
          the other layers are still logged.
        - ``featurewatch/activations/probe``: image, the probe images (first call only; for 1-D
          signals, their waveforms).
        - ``featurewatch/activations/seconds``: wall time of the call.
    """

    default_name = "activations"

    def __init__(
        self,
        layers: Sequence[str] | None = None,
        probe: torch.Tensor | str | None = None,
        num_images: int = 4,
        *,
        channels: Sequence[int] | None = None,
        max_channels: int = 64,
        max_layers: int = 8,
        normalize: Normalize | None = None,
        max_pixels: int | None = 3 * MAX_PNG_PIXELS,
        input_key: int | str = 0,
        **schedule: Any,
    ) -> None:
        super().__init__(**schedule)
        layers = check_layers(layers, allow_none=True)
        check_int("max_channels", max_channels)
        check_int("max_layers", max_layers)
        self.max_layers = max_layers
        self._default_layers: list[str] | None = None
        self.layers = list(layers) if layers is not None else None
        self.channels = (
            None if channels is None else check_channel_list("channels", channels, allow_int=False)
        )
        self.max_channels = max_channels
        check_int("max_pixels", max_pixels, allow_none=True)
        self.max_pixels = max_pixels
        self.input_key = input_key
        self._probe = ProbeImages(probe, num_images, normalize)
        self._probe_logged = False

    def state_key_fields(self) -> dict[str, Any]:
        return {"layers": self.layers}

    def _layers(self, pl_module: pl.LightningModule) -> list[str]:
        if self.layers is not None:
            return self.layers
        if self._default_layers is not None:
            return self._default_layers
        convs = list_layers(pl_module, kinds=("conv",))
        if not convs:
            raise ValueError(
                f"ActivationGrid shows the feature maps of conv layers by default, and "
                f"{type(pl_module).__name__} has none; pass `layers=` naming layers with (N, C, H, "
                f"W), (N, C, L) or token (N, T, D) outputs, or: {NON_IMAGE_ALTERNATIVES}"
            )
        return convs

    def check_model(self, pl_module: pl.LightningModule) -> None:
        for layer in self._layers(pl_module):
            resolve_layer(pl_module, layer)

    def check_input(self, pl_module: pl.LightningModule, x: torch.Tensor) -> None:
        if x.dim() not in (3, 4):
            kind = "feature vectors (N, F)" if x.dim() == 2 else "neither images nor signals"
            raise ValueError(
                f"ActivationGrid draws the feature maps of images (N, C, H, W) or 1-D signals "
                f"(N, C, L), but this model's inputs are {kind}, shape {tuple(x.shape)}, which "
                f"have no maps; {NON_IMAGE_ALTERNATIVES}"
            )
        self._probe.resolve_path(x)
        sample = self._probe.fixed if self._probe.fixed is not None else x
        self._default_layers = None
        maps = activation_maps(pl_module, sample[:1], self._layers(pl_module))
        if self.layers is None:
            spatial = [la for la, m in maps.items() if m.dim() in (3, 4) and _positions(m) > 1]
            self._default_layers = _evenly_spaced(spatial or list(maps), self.max_layers)
            maps = {la: maps[la] for la in self._default_layers}
        for layer, m in maps.items():
            if m.dim() not in (3, 4):
                raise ValueError(
                    "ActivationGrid shows feature maps - (N, C, H, W), (N, C, L) or token "
                    f"(N, T, D) outputs - but layer {layer!r} outputs shape {tuple(m.shape)}; "
                    f"name conv or activation layers (e.g. {', '.join(list_layers(pl_module)[:5])})"
                )
            try:
                m = feature_map(pl_module, layer, m, sample[:1])
            except ValueError as err:
                raise ValueError(f"ActivationGrid: {err}") from err
            if self.channels is not None and max(self.channels) >= m.shape[1]:
                raise ValueError(
                    "ActivationGrid: "
                    + out_of_range_message(max(self.channels), int(m.shape[1]), layer=layer)
                )

    def observe_batch(self, batch: Any, split: str) -> None:
        if self._probe.fixed is None and self._probe.source is None:
            self._probe.observe(self.input_from_batch(batch), split)

    def visualize(self, trainer: pl.Trainer, pl_module: pl.LightningModule, event: Event) -> None:
        probe = self._probe.get()
        maps = activation_maps(pl_module, probe, self._layers(pl_module))
        signals = probe.dim() == 3
        what = "probe signal" if signals else "probe image"
        share = (
            None if self.max_pixels is None else min(MAX_PNG_PIXELS, self.max_pixels // len(maps))
        )
        for i, (layer, raw) in enumerate(maps.items(), 1):
            self.progress(f"{layer} ({i}/{len(maps)})")
            try:  # one layer that cannot be drawn must not cost the others
                m = feature_map(pl_module, layer, raw, probe)  # tokens: on the patch grid
                shown = list(
                    self.channels
                    if self.channels is not None
                    else range(min(self.max_channels, m.shape[1]))
                )
                if m.dim() == 3:
                    image = signal_heatmaps(
                        m,
                        channels=shown,
                        titles=[f"probe signal {i}" for i in range(m.shape[0])],
                        title=f"{layer} · epoch {event.epoch} · step {event.step}",
                    )
                else:
                    image = activation_grid(
                        m,
                        channels=shown,
                        max_channels=self.max_channels,
                        max_pixels=share,
                        input_titles=[f"{what} {i}" for i in range(m.shape[0])],
                    )
                    image = with_header(image, image_header(layer, event))
            except Exception as err:  # noqa: BLE001 - reported; re-raised if strict
                self.report_failure(event, layer, f"layer {layer!r}", err)
                continue
            if m.dim() == 3:
                how = "channel x time heatmap per signal, own colour scale each"
            elif raw.dim() == 3:
                how = f"{raw.shape[1]} tokens laid on the {m.shape[-2]}x{m.shape[-1]} patch grid"
            else:
                how = "in reading order"
                scale = map_scale((m.shape[0], len(shown), *m.shape[2:]), 32, share, titles=True)
                if scale < 1.0:  # see activation_grid's max_pixels
                    how += f"; maps averaged down to {scale:.2f} of their size (size bound)"
            event.add_image(
                f"featurewatch/{self.name}/{layer}",
                image,
                caption=(
                    f"epoch {event.epoch}, step {event.step}: {layer}, {m.shape[1]} channels "
                    f"({len(shown)} shown) for {m.shape[0]} {what}s ({how})"
                    + nonfinite_note(nonfinite_counts(m[:, shown]), m[0, shown].numel(), what)
                ),
            )
        if not self._probe_logged:
            if signals:
                picture = signal_curves(
                    probe,
                    titles=[f"probe signal {i}" for i in range(probe.shape[0])],
                    title="probe signals (the inputs, normalized like training inputs)",
                )
            else:
                picture = grid(scale_each(probe), nrow=probe.shape[0])
            event.add_image(
                f"featurewatch/{self.name}/probe",
                picture,
                caption=f"probe {'signals' if signals else 'images'}",
            )
            self._probe_logged = True

    def extra_state(self) -> dict[str, Any]:
        return self._probe.state()

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self._probe.load_state(state)
        self._probe_logged = self._probe.fixed is not None


def _evenly_spaced(items: list[str], k: int) -> list[str]:
    """``k`` of ``items`` from the first to the last at even steps (all of them if ``len <= k``)."""
    if len(items) <= k:
        return list(items)
    if k == 1:
        return [items[-1]]
    picks = sorted({round(i * (len(items) - 1) / (k - 1)) for i in range(k)})
    return [items[i] for i in picks]


def _positions(m: torch.Tensor) -> int:
    """How many positions a conv layer's output has: ``h * w`` or ``L``."""
    return int(m.shape[-2] * m.shape[-1]) if m.dim() == 4 else int(m.shape[-1])
