"""DeepDream: amplify, in a given image, whatever a layer already sees in it.

Gradient ascent on the *pixels* of a real image to increase a layer's activations (by default
their mean square, :func:`~featurewatch.core.objectives.layer_l2`), at several scales ("octaves",
coarse to fine, keeping the detail added at each scale) with a random shift per step, and steps
normalized by the mean absolute gradient (Mordvintsev, Olah & Tyka, 2015, "Inceptionism").

Watched across epochs on a fixed probe image, the dreams move from texture noise to the strokes and
parts the layer has learned. Same hygiene as :func:`~featurewatch.core.render.render`: isolated
model, gradients only with respect to the image, truncated forward, private RNG.

Example:
    >>> dreamed = deep_dream(model, probe01, "features.3", octaves=3, steps=10)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from featurewatch.core.hygiene import isolated, model_device_dtype
from featurewatch.core.images import Normalize, normalizer
from featurewatch.core.layers import resolve_layer
from featurewatch.core.objectives import Objective, layer_l2
from featurewatch.core.render import objective_forward
from featurewatch.core.validation import check_int, check_positive_float

__all__ = ["deep_dream"]


def deep_dream(
    model: nn.Module,
    images: torch.Tensor,
    objective: str | Objective,
    *,
    octaves: int = 3,
    octave_scale: float = 1.4,
    steps: int = 10,
    step_size: float = 0.02,
    shift: int | None = None,
    normalize: Normalize | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Dream on ``images``.

    Args:
        model: the network (left exactly as it was).
        images: ``(N, C, H, W)`` or ``(C, H, W)`` images in ``[0, 1]``.
        objective: a layer reference (dreams with ``layer_l2(layer)``) or any objective.
        octaves: number of scales; octave ``k`` works at ``size / octave_scale**(octaves-1-k)``
            (never below 8 px).
        octave_scale: ratio between consecutive scales.
        steps: gradient steps per octave.
        step_size: pixel change per step, relative to the mean absolute gradient.
        shift: largest random circular shift per step (pixels); default ``max(1, size // 16)``.
        normalize: ``(mean, std)`` the model expects; applied to the ``[0, 1]`` image.
        seed: seed of the private generator of the shifts.

    Returns:
        ``(N, C, H, W)`` dreamed images in ``[0, 1]`` (CPU, float32).
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"`images` must be a tensor, got {type(images).__name__}")
    x = images[None] if images.dim() == 3 else images
    if x.dim() != 4:
        raise ValueError(
            f"`images` must be (N, C, H, W) or (C, H, W), got shape {tuple(images.shape)}"
        )
    check_int("octaves", octaves)
    check_int("steps", steps)
    check_positive_float("octave_scale", octave_scale)
    if octave_scale <= 1.0:
        raise ValueError(f"`octave_scale` must be > 1, got {octave_scale}")
    check_positive_float("step_size", step_size)
    obj = layer_l2(objective) if isinstance(objective, str) else objective
    if not isinstance(obj, Objective):
        raise TypeError(
            f"`objective` must be a layer name or an Objective, got {type(objective).__name__}"
        )
    for layer in obj.layers:
        resolve_layer(model, layer)
    h, w = x.shape[-2:]
    shift = max(1, min(h, w) // 16) if shift is None else int(shift)
    sizes: Sequence[tuple[int, int]] = [
        (max(8, round(h / octave_scale**k)), max(8, round(w / octave_scale**k)))
        for k in reversed(range(octaves))
    ]
    gen = torch.Generator().manual_seed(int(seed))
    with isolated(model):
        device, _ = model_device_dtype(model)
        base = x.detach().to(device=device, dtype=torch.float32).clone().clamp(0, 1)
        norm = normalizer(normalize, base.shape[1], device)
        detail = torch.zeros_like(base)
        out = base
        with objective_forward(model, obj, base, norm) as evaluate:
            for size in sizes:
                here = (
                    F.interpolate(
                        base, size=size, mode="bilinear", align_corners=False, antialias=True
                    )
                    if size != (h, w)
                    else base
                )
                d = (
                    F.interpolate(detail, size=size, mode="bilinear", align_corners=False)
                    if detail.shape[-2:] != size
                    else detail
                )
                img = (here + d).clamp(0, 1)
                for _ in range(steps):
                    dy, dx = (int(v) for v in torch.randint(-shift, shift + 1, (2,), generator=gen))
                    rolled = img.roll((dy, dx), dims=(2, 3)).requires_grad_(True)
                    (grad,) = torch.autograd.grad(evaluate(rolled).sum(), [rolled])
                    grad = grad.roll((-dy, -dx), dims=(2, 3))
                    scale = grad.abs().flatten(1).mean(1).clamp_min(1e-12).reshape(-1, 1, 1, 1)
                    img = (img + step_size * grad / scale).clamp(0, 1).detach()
                detail = img - here
                out = img
        return out.detach().float().cpu()
