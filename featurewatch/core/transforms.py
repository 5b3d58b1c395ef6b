"""Transformation robustness: small random changes applied to the image at every render step.

An image that excites a unit only at one exact offset, scale and angle is an adversarial pattern,
not a feature; optimizing through random jitter, scaling and rotation removes that high-frequency
noise (Mordvintsev et al., 2015; Olah et al., 2017).

A transform is a plain function ``t(images, generators) -> images`` on ``(N, C, H, W)`` batches.
``generators`` is one private :class:`torch.Generator` per batch element (or a single generator,
used for every element in turn): element ``i`` draws *only* from ``generators[i]``, so an
element's random sequence does not depend on which other elements share its batch (rendering a
layer's channels together equals rendering them one at a time) and the global RNG is never touched.

Magnitudes are relative to the image size: :func:`standard_transforms` gives Lucid's ImageNet
setting (pad 12, jitter 8 at 224 px) at 224 px and proportionally less on a 32 px digit.

Example:
    >>> ts = standard_transforms(64)
    >>> gens = [torch.Generator().manual_seed(s) for s in range(4)]
    >>> out = compose(ts)(images, gens)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "Generators",
    "Transform",
    "compose",
    "jitter",
    "pad",
    "random_affine",
    "random_rotate",
    "random_scale",
    "standard_transforms",
]

Generators = torch.Generator | Sequence[torch.Generator]
Transform = Callable[[torch.Tensor, Generators], torch.Tensor]


def _per_element(gens: Generators, n: int) -> list[torch.Generator]:
    if isinstance(gens, torch.Generator):
        return [gens] * n
    gens = list(gens)
    if len(gens) != n:
        raise ValueError(f"need one generator per batch element ({n}), got {len(gens)}")
    return gens


def _uniform_int(g: torch.Generator, low: int, high: int) -> int:
    """Integer in ``[low, high]`` (inclusive) from ``g``."""
    return int(torch.randint(low, high + 1, (1,), generator=g).item())


def _choice(g: torch.Generator, values: Sequence[float]) -> float:
    return float(values[int(torch.randint(len(values), (1,), generator=g).item())])


def pad(width: int, mode: str = "reflect", value: float = 0.5) -> Transform:
    """Pad every side by ``width`` pixels (``"reflect"``, ``"replicate"`` or ``"constant"`` with
    ``value``). Deterministic; the generators are not used."""
    if width < 0:
        raise ValueError(f"`width` must be >= 0, got {width}")
    if mode not in ("reflect", "replicate", "constant"):
        raise ValueError(f"`mode` must be 'reflect', 'replicate' or 'constant', got {mode!r}")

    def t(images: torch.Tensor, gens: Generators) -> torch.Tensor:
        if width == 0:
            return images
        if mode == "constant":
            return F.pad(images, (width,) * 4, mode="constant", value=value)
        w = min(width, images.shape[-1] - 1, images.shape[-2] - 1) if mode == "reflect" else width
        return F.pad(images, (w,) * 4, mode=mode)

    return t


def jitter(d: int) -> Transform:
    """Random crop that removes ``d`` pixels in each dimension (offset ``0..d``) per element."""
    if d < 0:
        raise ValueError(f"`d` must be >= 0, got {d}")

    def t(images: torch.Tensor, gens: Generators) -> torch.Tensor:
        if d == 0:
            return images
        n, _, h, w = images.shape
        if d >= min(h, w):
            raise ValueError(f"jitter({d}) would crop a {h}x{w} image to nothing")
        out = []
        for i, g in enumerate(_per_element(gens, n)):
            dy, dx = _uniform_int(g, 0, d), _uniform_int(g, 0, d)
            out.append(images[i, :, dy : dy + h - d, dx : dx + w - d])
        return torch.stack(out)

    return t


def random_affine(
    scales: Sequence[float] = (1.0,),
    degrees: Sequence[float] = (0.0,),
    padding_mode: str = "reflection",
) -> Transform:
    """Random zoom and rotation about the centre, both in one ``grid_sample`` (same output size).

    Args:
        scales: zoom factors to pick from (``> 1`` zooms in).
        degrees: rotation angles to pick from.
        padding_mode: ``grid_sample`` padding for pixels sampled outside the image.
    """
    scales, degrees = [float(s) for s in scales], [float(a) for a in degrees]
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"`scales` must be positive numbers, got {scales!r}")
    if not degrees:
        raise ValueError("`degrees` must not be empty")

    def t(images: torch.Tensor, gens: Generators) -> torch.Tensor:
        n = images.shape[0]
        params = []
        for g in _per_element(gens, n):
            s = _choice(g, scales) if len(scales) > 1 else scales[0]
            a = math.radians(_choice(g, degrees) if len(degrees) > 1 else degrees[0])
            params.append((s, a))
        if all(s == 1.0 and a == 0.0 for s, a in params):
            return images
        theta = torch.tensor(
            [[[math.cos(a) / s, -math.sin(a) / s, 0.0], [math.sin(a) / s, math.cos(a) / s, 0.0]] for s, a in params],
            dtype=images.dtype,
            device=images.device,
        )
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)

    return t


def random_scale(scales: Sequence[float]) -> Transform:
    """Random zoom about the centre (Lucid's ``random_scale``, at constant image size)."""
    return random_affine(scales=scales)


def random_rotate(degrees: Sequence[float]) -> Transform:
    """Random rotation about the centre by one of ``degrees``."""
    return random_affine(degrees=degrees)


def compose(transforms: Sequence[Transform]) -> Transform:
    """Apply ``transforms`` in order."""
    ts = list(transforms)

    def t(images: torch.Tensor, gens: Generators) -> torch.Tensor:
        for tr in ts:
            images = tr(images, gens)
        return images

    return t


def standard_transforms(size: int | tuple[int, int], *, strength: float = 1.0) -> list[Transform]:
    """Lucid's standard transforms, scaled to the image size; the output keeps the input size.

    At 224 px: a random shift of up to 12 px (reflect pad 12, then crop back), zoom in
    ``[0.95, 1.05]``, rotation in ``[-10, 10]`` degrees, another shift of up to 6 px; shifts are
    proportionally smaller for smaller images (32 px: 2 and 1 px), so a digit is not moved off its
    canvas.

    Args:
        size: the image size (``H`` or ``(H, W)``).
        strength: multiplies every magnitude (``0`` gives no transforms).
    """
    if strength < 0:
        raise ValueError(f"`strength` must be >= 0, got {strength}")
    side = min(size) if isinstance(size, (tuple, list)) else int(size)
    if strength == 0:
        return []
    p = max(1, round(12 * strength * side / 224)) if side >= 16 else 0
    scales = [1 + strength * (i - 5) / 100 for i in range(11)]
    degrees = [strength * a for a in range(-10, 11)]
    ts: list[Transform] = []
    if p:
        ts += [pad(p), jitter(2 * p)]
    ts.append(random_affine(scales, degrees))
    if p:
        q = max(1, p // 2)
        ts += [pad(q), jitter(2 * q)]
    return ts
