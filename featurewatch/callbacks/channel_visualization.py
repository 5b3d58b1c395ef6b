"""ChannelVisualization: what each channel of a layer responds to, rendered at every epoch."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from featurewatch.callbacks.base import (
    FeatureWatchCallback,
    check_int,
    check_layers,
    describe_channels,
)
from featurewatch.core.fit_stats import ImageStats, fit_image_stats
from featurewatch.core.images import grid
from featurewatch.core.inspect import activation_maps
from featurewatch.core.layers import list_layers, parse_layer, resolve_layer
from featurewatch.core.objectives import Objective
from featurewatch.core.param import ImageSpec
from featurewatch.core.render import RenderResult, render, unit_objective
from featurewatch.loggers import Event

__all__ = ["ChannelVisualization"]

#: ``(mean, std)``, ``"data"`` (fitted from the first batch) or ``None`` (the model sees [0, 1]).
NormalizeArg = tuple[Sequence[float], Sequence[float]] | str | None


class _RenderCallback(FeatureWatchCallback):
    """Shared machinery of the callbacks that render images by optimization.

    Handles the render settings, the input normalization (given, or fitted from the first batch),
    optional image statistics fitted from the first batch, and the render size (default: the
    training input size).
    """

    def __init__(
        self,
        *,
        size: int | None,
        steps: int,
        lr: float,
        normalize: NormalizeArg,
        fit_stats: str,
        transforms: str | None,
        redirect_steps: int,
        polish_steps: int | None,
        batch_size: int | None,
        time_budget: float | None,
        seed: int,
        min_size: int,
        input_key: int | str,
        every_n_epochs: int | None,
        every_n_train_steps: int | None,
        at_start: bool,
        at_end: bool,
        strict: bool,
    ) -> None:
        super().__init__(
            every_n_epochs=every_n_epochs,
            every_n_train_steps=every_n_train_steps,
            at_start=at_start,
            at_end=at_end,
            strict=strict,
        )
        if size is not None:
            check_int("size", size, 8)
        check_int("steps", steps, 1)
        check_int("redirect_steps", redirect_steps, 0)
        if polish_steps is None:
            polish_steps = (
                steps // 4 if isinstance(steps, int) and not isinstance(steps, bool) else 0
            )
        check_int("polish_steps", polish_steps, 0)
        check_int("seed", seed, 0)
        check_int("min_size", min_size, 1)
        if polish_steps > steps:
            raise ValueError(f"`polish_steps` ({polish_steps}) cannot exceed `steps` ({steps})")
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0:
            raise ValueError(f"`lr` must be a positive number, got {lr!r}")
        if batch_size is not None:
            check_int("batch_size", batch_size, 1)
        if time_budget is not None and (
            isinstance(time_budget, bool)
            or not isinstance(time_budget, (int, float))
            or time_budget <= 0
        ):
            raise ValueError(
                f"`time_budget` must be a positive number of seconds or None, got {time_budget!r}"
            )
        if isinstance(normalize, str) and normalize != "data":
            raise ValueError(f"`normalize` must be (mean, std), 'data' or None, got {normalize!r}")
        if (
            normalize is not None
            and not isinstance(normalize, str)
            and (not isinstance(normalize, (tuple, list)) or len(normalize) != 2)
        ):
            raise ValueError(f"`normalize` must be (mean, std), 'data' or None, got {normalize!r}")
        if fit_stats not in ("color", "all", "none"):
            raise ValueError(f"`fit_stats` must be 'color', 'all' or 'none', got {fit_stats!r}")
        if transforms not in ("standard", "none", None):
            raise ValueError(f"`transforms` must be 'standard', 'none' or None, got {transforms!r}")
        self.size = size
        self.steps = steps
        self.lr = float(lr)
        self.normalize = normalize
        self.fit_stats = fit_stats
        self.transforms = transforms
        self.redirect_steps = redirect_steps
        self.polish_steps = polish_steps
        self.batch_size = batch_size
        self.time_budget = None if time_budget is None else float(time_budget)
        self.seed = seed
        self.min_size = min_size
        self.input_key = input_key
        self._stats: ImageStats | None = None
        self._norm: tuple[list[float], list[float]] | None = None
        self._input_shape: tuple[int, int, int] | None = None  # (C, H, W) of the training input

    # ------------------------------------------------------------------ input-derived settings
    def _learn_input(self, x: torch.Tensor) -> None:
        x = x.detach().float().cpu()
        self._input_shape = (int(x.shape[1]), int(x.shape[2]), int(x.shape[3]))
        fit = self.fit_stats != "none"
        stats = fit_image_stats(x) if (fit or self.normalize == "data") else None
        if self.normalize == "data":
            assert stats is not None
            self._norm = stats.normalize
        elif self.normalize is not None:
            mean, std = self.normalize  # type: ignore[misc]
            self._norm = ([float(v) for v in mean], [float(v) for v in std])
            for name, v in (("mean", self._norm[0]), ("std", self._norm[1])):
                if len(v) not in (1, x.shape[1]):
                    raise ValueError(
                        f"`normalize` {name} has {len(v)} values; the inputs have {x.shape[1]} channels"
                    )
            if fit:
                stats = fit_image_stats(x, normalize=self._norm)
        self._stats = stats if fit else None

    def _ensure_input(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The input size and statistics come from the first batch Lightning feeds the model.

        The base class runs even the ``at_start`` call after that batch has been seen, so this only
        fails if the callback is driven by hand before any batch. We never draw a batch from the
        user's dataloader ourselves: that would advance its sampler and change the run.
        """
        if self._input_shape is None:
            raise RuntimeError(f"{type(self).__name__} has not seen an input batch yet")

    def _spec(self) -> ImageSpec:
        assert self._input_shape is not None
        c, h, w = self._input_shape
        size = (self.size, self.size) if self.size is not None else (h, w)
        return ImageSpec(
            channels=c, size=size, stats=self._stats, fitted_spectrum=self.fit_stats == "all"
        )

    def _render(
        self,
        pl_module: pl.LightningModule,
        objective: Objective,
        seeds: list[int],
        budget: float | None,
    ) -> RenderResult:
        return render(
            pl_module,
            objective,
            self._spec(),
            seeds=seeds,
            steps=self.steps,
            lr=self.lr,
            transforms=self.transforms,
            normalize=self._norm,
            batch_size=self.batch_size,
            time_budget=budget,
            redirect_steps=self.redirect_steps,
            polish_steps=self.polish_steps,
        )

    def _display(self, images: torch.Tensor, group: int = 1) -> torch.Tensor:
        """Tiles enlarged to ``min_size``, in a near-square grid; groups of ``group`` consecutive
        images (the variants of one unit) stay together on one row."""
        h, w = images.shape[-2:]
        factor = max(1, -(-self.min_size // max(h, w)))
        tiles = F.interpolate(images, scale_factor=factor, mode="nearest") if factor > 1 else images
        nrow = None if group == 1 else group * math.ceil(math.sqrt(images.shape[0] / group**2))
        return grid(tiles, nrow=nrow, padding=2, pad_value=1.0)

    def extra_state(self) -> dict[str, Any]:
        if self._input_shape is None:
            return {}
        state: dict[str, Any] = {"input_shape": list(self._input_shape), "norm": self._norm}
        if self._stats is not None:
            s = self._stats
            state["stats"] = {
                "low": s.low,
                "high": s.high,
                "color": s.color,
                "freqs": s.freqs,
                "amplitude": s.amplitude,
            }
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if "input_shape" in state:
            self._input_shape = tuple(int(v) for v in state["input_shape"])  # type: ignore[assignment]
            self._norm = state.get("norm")
            st = state.get("stats")
            self._stats = ImageStats(**st) if isinstance(st, dict) else None
            self._checked_input = True


class ChannelVisualization(_RenderCallback):
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
        size: rendered image size in pixels. Default: the training input size (never upsampled).
        steps: optimization steps per call (64: ~0.3 s for 16 channels of a small CNN on 32 px,
            2 CPU cores; raise to 256-512 on a GPU or for ImageNet-size models).
        lr: Adam learning rate.
        unit: ``"channel"`` (mean over the map) or ``"neuron"`` (the centre position).
        negative: also render images that *minimize* each unit (logged under ``.../negative``).
        variants: images per channel. With more than one, the images of a channel are rewarded for
            differing in style (Lucid's diversity objective, Gram matrices at the layer), which shows
            several things a channel responds to instead of one; they are logged side by side.
        diversity: weight of that reward, relative to the channel's activation (1.0 keeps about
            80% of the activation of a single image on the example CNN; 0 turns it off).
        normalize: the model's input normalization ``(mean, std)``; ``"data"`` fits it from the
            first batch (maps each channel's observed range to [0, 1], exact for inputs normalized
            with any per-channel affine map); ``None``: the model sees [0, 1] images.
        fit_stats: what to fit from the first batch: ``"color"`` the colour-decorrelation matrix
            (any channel count, instead of ImageNet's RGB matrix) with a ``1/f`` spectrum;
            ``"all"`` also the spectrum profile (natural-looking, but smoother and lower
            activations on blurry data such as upsampled digits); ``"none"``.
        transforms: ``"standard"`` (jitter, zoom, rotation scaled to the image size) or ``"none"``.
        redirect_steps: steps of ReLU-gradient redirect at the start (weak units get a signal).
        polish_steps: final steps without transforms (sharper, more specific images); default
            ``steps // 4``.
        batch_size: render at most this many channels at once (memory cap for big layers / GPUs).
        time_budget: seconds per call for all layers; steps are cut short when exceeded (logged).
        seed: base seed of the initial noise and transforms.
        min_size: tiles are enlarged (nearest neighbour, display only) to at least this size.
        input_key: where the images are in a batch (index for tuples, key for dicts).
        every_n_epochs, every_n_train_steps, at_start, at_end, strict: see
            :class:`~featurewatch.callbacks.base.FeatureWatchCallback`.

    Logged keys:
        - ``featurewatch/channels/<layer>``: image, one tile per channel (row-major; the caption
          lists the channel indices and the units that could not be excited).
        - ``featurewatch/channels/<layer>/negative``: image, minimizing images (with ``negative``).
        - ``featurewatch/channels/<layer>/mean_activation``: scalar, mean final objective value.
        - ``featurewatch/channels/<layer>/weak_units``: scalar, channels that could not be excited.
        - ``featurewatch/channels/<layer>/steps``: scalar, steps run (less than ``steps`` when the
          time budget cut them short).
        - ``featurewatch/channel_visualization/seconds``: wall time of the call.

    Example:
        >>> ChannelVisualization(["net.features.0", "net.features.4"], max_channels=16, steps=64)
    """

    name = "channel_visualization"

    def __init__(
        self,
        layers: str | Sequence[str],
        channels: Sequence[int] | None = None,
        *,
        max_channels: int = 16,
        size: int | None = None,
        steps: int = 64,
        lr: float = 0.1,
        unit: str = "channel",
        negative: bool = False,
        variants: int = 1,
        diversity: float = 1.0,
        normalize: NormalizeArg = "data",
        fit_stats: str = "color",
        transforms: str | None = "standard",
        redirect_steps: int = 8,
        polish_steps: int | None = None,
        batch_size: int | None = None,
        time_budget: float | None = None,
        seed: int = 0,
        min_size: int = 64,
        input_key: int | str = 0,
        every_n_epochs: int | None = 1,
        every_n_train_steps: int | None = None,
        at_start: bool = False,
        at_end: bool = True,
        strict: bool = False,
    ) -> None:
        super().__init__(
            size=size, steps=steps, lr=lr, normalize=normalize, fit_stats=fit_stats, transforms=transforms,
            redirect_steps=redirect_steps, polish_steps=polish_steps, batch_size=batch_size,
            time_budget=time_budget, seed=seed, min_size=min_size, input_key=input_key,
            every_n_epochs=every_n_epochs, every_n_train_steps=every_n_train_steps, at_start=at_start,
            at_end=at_end, strict=strict,
        )  # fmt: skip
        layers = check_layers(layers)
        check_int("max_channels", max_channels, 1)
        check_int("variants", variants, 1)
        if isinstance(diversity, bool) or not isinstance(diversity, (int, float)) or diversity < 0:
            raise ValueError(f"`diversity` must be a non-negative number, got {diversity!r}")
        if channels is not None:
            channels = list(channels)
            if not channels or any(
                isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in channels
            ):
                raise ValueError(
                    f"`channels` must be a non-empty list of non-negative ints, got {channels!r}"
                )
        if unit not in ("channel", "neuron"):
            raise ValueError(f"`unit` must be 'channel' or 'neuron', got {unit!r}")
        self.layers = list(layers)
        self.channels = channels
        self.max_channels = max_channels
        self.unit = unit
        self.negative = bool(negative)
        self.variants = variants
        self.diversity = float(diversity)
        self._num_channels: dict[str, int] = {}

    def state_key_fields(self) -> dict[str, Any]:
        return {"layers": self.layers, "unit": self.unit}

    def check_model(self, pl_module: pl.LightningModule) -> None:
        for layer in self.layers:
            resolve_layer(pl_module, layer)

    def check_input(self, pl_module: pl.LightningModule, x: torch.Tensor) -> None:
        self._learn_input(x)
        maps = activation_maps(pl_module, x[:1], self.layers)
        for layer, m in maps.items():
            if m.dim() != 4:
                raise ValueError(
                    f"ChannelVisualization renders channels of spatial feature maps, but layer {layer!r} outputs "
                    f"shape {tuple(m.shape)}; name conv or activation layers (e.g. {', '.join(list_layers(pl_module)[:6])})"
                )
            self._num_channels[layer] = int(m.shape[1])
            if self.channels is not None and max(self.channels) >= m.shape[1]:
                raise ValueError(
                    f"ChannelVisualization: channel {max(self.channels)} out of range for layer {layer!r} "
                    f"with {m.shape[1]} channels (valid: 0..{m.shape[1] - 1})"
                )

    def _channels(self, layer: str) -> list[int]:
        if self.channels is not None:
            return list(self.channels)
        return list(range(min(self.max_channels, self._num_channels[layer])))

    def visualize(self, trainer: pl.Trainer, pl_module: pl.LightningModule, event: Event) -> None:
        self._ensure_input(trainer, pl_module)
        if any(str(parse_layer(la)) not in self._num_channels for la in self.layers):
            maps = activation_maps(pl_module, torch.zeros(1, *self._input_shape), self.layers)  # type: ignore[misc]
            self._num_channels.update({k: int(v.shape[1]) for k, v in maps.items()})
        jobs = len(self.layers) * (2 if self.negative else 1)
        budget = None if self.time_budget is None else self.time_budget / jobs
        for layer in self.layers:
            key = f"featurewatch/channels/{layer}"
            chans = self._channels(str(parse_layer(layer)))
            v = self.variants
            objective, seeds = unit_objective(
                layer, chans, seed=self.seed, unit=self.unit, variants=v, diversity=self.diversity
            )
            result = self._render(pl_module, objective, seeds, budget)
            # a channel is weak when none of its variants could excite it
            weak = [c for c, w in zip(chans, result.weak.view(len(chans), v).all(1).tolist()) if w]
            what = "neurons (map centre)" if self.unit == "neuron" else "channels"
            layout = f"{describe_channels(chans)} (row-major" + (
                f", {v} diverse images per channel side by side)" if v > 1 else ")"
            )
            caption = (
                f"epoch {event.epoch}, step {event.step}: {layer}, {what} maximized, {layout}"
                + (f"; could not be excited: {', '.join(map(str, weak))}" if weak else "")
                + (
                    f"; time budget cut steps to {int(result.steps.min())}"
                    if result.budget_exceeded
                    else ""
                )
            )
            event.add_image(key, self._display(result.images, v), caption=caption)
            event.add_scalar(f"{key}/mean_activation", float(result.values.mean()))
            event.add_scalar(f"{key}/weak_units", float(len(weak)))
            event.add_scalar(f"{key}/steps", float(result.steps.float().mean()))
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
                neg = self._render(pl_module, objective, seeds, budget)
                event.add_image(
                    f"{key}/negative",
                    self._display(neg.images, v),
                    caption=f"epoch {event.epoch}, step {event.step}: {layer}, {what} minimized, {layout}",
                )
