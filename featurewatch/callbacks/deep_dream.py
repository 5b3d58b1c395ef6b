"""DeepDream: what a layer sees in fixed probe images, amplified, at every epoch."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from featurewatch.callbacks._probe import ProbeImages
from featurewatch.callbacks.base import FeatureWatchCallback, check_layer, check_number
from featurewatch.callbacks.rendering import NormalizeArg, check_normalize, input_normalization
from featurewatch.core.deepdream import deep_dream
from featurewatch.core.images import grid, normalizer
from featurewatch.core.inspect import activation_maps
from featurewatch.core.labels import with_header
from featurewatch.core.layers import parse_layer, resolve_layer
from featurewatch.core.validation import check_image_inputs, check_int, check_positive_float
from featurewatch.loggers import Event

__all__ = ["DeepDream"]


class DeepDream(FeatureWatchCallback):
    """Dream on fixed probe images with one layer, and log the originals above the dreams.

    DeepDream (Mordvintsev, Olah & Tyka, 2015) pushes an image, by gradient ascent on its pixels,
    towards more of whatever a layer already responds to in it, at several scales. On the same
    probe images at every epoch, the dreams show the layer's vocabulary growing: blotches first,
    then strokes, loops and parts.

    Args:
        layer: layer name as in ``model.named_modules()`` (``"name@k"`` for a reused module).
        image: probe images: a ``(N, C, H, W)`` tensor normalized like the training inputs, a path
            (image file, folder or ``.pt``), or ``None`` for the first ``num_images`` validation
            inputs (training inputs without validation, or if none was seen before the first
            call), fixed for the whole run.
        num_images: number of probe images.
        octaves: scales, coarse to fine.
        octave_scale: size ratio between scales.
        steps: gradient steps per octave.
        step_size: pixel change per step relative to the mean absolute gradient.
        normalize: the model's input normalization ``(mean, std)``; ``"data"`` fits it from the
            first batch (exact for per-channel affine normalization); ``None``: inputs in [0, 1].
        seed: seed of the random shifts.
        min_size: tiles are enlarged (nearest neighbour, display only) to at least this size.
        input_key: where the images are in a batch (index for tuples, key for dicts).
        **schedule: ``every_n_epochs``, ``every_n_train_steps``, ``at_start``, ``at_end``,
            ``strict``: see :class:`~featurewatch.callbacks.base.FeatureWatchCallback`.

    Logged keys:
        - ``featurewatch/deepdream/<layer>``: image, probe images (top row) and their dreams
          (bottom row).
        - ``featurewatch/deepdream/<layer>/gain``: scalar, mean squared activation of the layer on
          the dreams divided by that on the probe images.
        - ``featurewatch/deepdream/seconds``: wall time of the call.

    Example:
        >>> DeepDream("net.features.4", num_images=4, octaves=3, steps=10)
    """

    default_name = "deepdream"

    def __init__(
        self,
        layer: str,
        image: torch.Tensor | str | None = None,
        num_images: int = 4,
        *,
        octaves: int = 3,
        octave_scale: float = 1.4,
        steps: int = 10,
        step_size: float = 0.02,
        normalize: NormalizeArg = "data",
        seed: int = 0,
        min_size: int = 64,
        input_key: int | str = 0,
        **schedule: Any,
    ) -> None:
        super().__init__(**schedule)
        check_layer("layer", layer)
        check_int("octaves", octaves, 1)
        check_int("steps", steps, 1)
        check_int("min_size", min_size, 1)
        check_number("octave_scale", octave_scale, 1, low_open=True)
        check_positive_float("step_size", step_size)
        check_normalize(normalize)
        self.layer = layer
        self.octaves = octaves
        self.octave_scale = float(octave_scale)
        self.steps = steps
        self.step_size = float(step_size)
        self.normalize = normalize
        self.seed = seed
        self.min_size = min_size
        self.input_key = input_key
        self._probe = ProbeImages(
            image,
            num_images,
            normalize if isinstance(normalize, (tuple, list)) else None,
            argument="image",
        )
        self._norm: tuple[list[float], list[float]] | None = None

    def state_key_fields(self) -> dict[str, Any]:
        return {"layer": self.layer}

    def check_model(self, pl_module: pl.LightningModule) -> None:
        resolve_layer(pl_module, self.layer)

    def check_input(self, pl_module: pl.LightningModule, x: torch.Tensor) -> None:
        check_image_inputs("DeepDream", x)
        self._norm = input_normalization(self.normalize, x)
        if self._probe.normalize is None and self._norm is not None:
            self._probe.normalize = (
                self._norm
            )  # a probe loaded from a path is normalized like inputs
        self._probe.resolve_path(x)
        activation_maps(
            pl_module, x[:1], [self.layer]
        )  # a layer (or "name@k") the forward never reaches fails now
        if self.octaves > 1:  # the smallest octave must pass the model too (not a ViT's)
            h, w = int(x.shape[-2]), int(x.shape[-1])
            k = self.octaves - 1
            small = (
                max(8, round(h / self.octave_scale**k)),
                max(8, round(w / self.octave_scale**k)),
            )
            try:
                activation_maps(pl_module, x[:1, :, : small[0], : small[1]].clone(), [self.layer])
            except Exception as err:  # noqa: BLE001 - whatever the model raises: said below
                raise ValueError(
                    f"DeepDream(octaves={self.octaves}) also runs the model on smaller images "
                    f"(down to {small[0]} x {small[1]} for {h} x {w} inputs), and "
                    f"{type(pl_module).__name__} refuses them ({type(err).__name__}: {err}); "
                    "pass octaves=1 for a model that only takes its training size (e.g. a "
                    "vision transformer)"
                ) from None

    def observe_batch(self, batch: Any, split: str) -> None:
        if self._probe.fixed is None and self._probe.source is None:
            self._probe.observe(self.input_from_batch(batch), split)

    def visualize(self, trainer: pl.Trainer, pl_module: pl.LightningModule, event: Event) -> None:
        probe = self._probe.get().float()
        if self._norm is not None:
            c = probe.shape[1]
            mean = torch.tensor(self._norm[0]).reshape(1, -1, 1, 1).expand(1, c, 1, 1)
            std = torch.tensor(self._norm[1]).reshape(1, -1, 1, 1).expand(1, c, 1, 1)
            pixels = (probe * std + mean).clamp(0, 1)
        else:
            pixels = probe.clamp(0, 1)
        self.progress(f"{self.layer}, {self.octaves} octaves x {self.steps} steps")
        dreamed = deep_dream(
            pl_module,
            pixels,
            self.layer,
            octaves=self.octaves,
            octave_scale=self.octave_scale,
            steps=self.steps,
            step_size=self.step_size,
            normalize=self._norm,
            seed=self.seed,
        )

        to_model = normalizer(self._norm, pixels.shape[1])

        def energy(images: torch.Tensor) -> float:
            m = activation_maps(pl_module, to_model(images), [self.layer])
            return float(m[str(parse_layer(self.layer))].float().pow(2).mean())

        gain = energy(dreamed) / max(energy(pixels), 1e-12)
        both = torch.cat([pixels, dreamed])
        h, w = both.shape[-2:]
        factor = max(1, -(-self.min_size // max(h, w)))
        if factor > 1:
            both = torch.nn.functional.interpolate(both, scale_factor=factor, mode="nearest")
        key = f"featurewatch/{self.name}/{self.layer}"
        event.add_image(
            key,
            with_header(
                grid(both, nrow=pixels.shape[0], padding=2, pad_value=1.0),
                f"{self.layer} · top: probes, below: dreams · epoch {event.epoch} · step "
                f"{event.step}",
            ),
            caption=(
                f"epoch {event.epoch}, step {event.step}: {self.layer}, {pixels.shape[0]} probe "
                f"images (top) and their dreams (bottom), {self.octaves} octaves x {self.steps} "
                "steps"
            ),
        )
        event.add_scalar(f"{key}/gain", gain)

    def extra_state(self) -> dict[str, Any]:
        state = dict(self._probe.state())
        if self._norm is not None:
            state["norm"] = self._norm
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self._probe.load_state(state)
        if state.get("norm") is not None:
            self._norm = state["norm"]
            self._checked_input = True  # keep the pre-resume pixel mapping; do not refit it
