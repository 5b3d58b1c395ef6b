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


_BASE_GRIDS: dict[tuple[int, int, torch.device, torch.dtype], torch.Tensor] = {}


def _base_grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(h * w, 3)`` pixel centres in ``grid_sample`` units (``align_corners=False``) and a 1.

    ``F.affine_grid`` rebuilds this for every call and every batch element; cached, the grid of a
    batch is one small matmul.
    """
    key = (h, w, torch.device(device), dtype)
    base = _BASE_GRIDS.get(key)
    if base is None:
        ys = (torch.arange(h, dtype=torch.float64) * 2 + 1) / h - 1
        xs = (torch.arange(w, dtype=torch.float64) * 2 + 1) / w - 1
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        base = (
            torch.stack([xx, yy, torch.ones_like(xx)], -1)
            .reshape(h * w, 3)
            .to(device=device, dtype=dtype)
        )
        if len(_BASE_GRIDS) >= 16:
            _BASE_GRIDS.clear()
        _BASE_GRIDS[key] = base
    return base


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
    shift: int | tuple[int, int] = 0,
    padding_mode: str = "reflection",
) -> Transform:
    """Random shift, zoom, rotation and second shift, fused into one ``grid_sample``.

    Equivalent to Lucid's ``jitter -> random_scale -> random_rotate -> jitter`` (with reflection
    instead of padding and cropping), but the image is resampled once: one bilinear interpolation
    instead of several, and one cheap backward pass instead of four. The output has the input size.

    Args:
        scales: zoom factors to pick from (``> 1`` zooms in).
        degrees: rotation angles to pick from.
        shift: largest shift in pixels, before and after the zoom/rotation (``(before, after)``
            or one int for both); each is an integer drawn from ``-shift .. shift``.
        padding_mode: ``grid_sample`` padding for pixels sampled outside the image.
    """
    scales, degrees = [float(s) for s in scales], [float(a) for a in degrees]
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"`scales` must be positive numbers, got {scales!r}")
    if not degrees:
        raise ValueError("`degrees` must not be empty")
    before, after = (shift, shift) if isinstance(shift, int) else (int(shift[0]), int(shift[1]))
    if before < 0 or after < 0:
        raise ValueError(f"`shift` must be >= 0, got {shift!r}")

    def t(images: torch.Tensor, gens: Generators) -> torch.Tensor:
        n, _, h, w = images.shape
        rows = []
        for g in _per_element(gens, n):
            d1 = (
                (_uniform_int(g, -before, before), _uniform_int(g, -before, before))
                if before
                else (0, 0)
            )
            s = _choice(g, scales) if len(scales) > 1 else scales[0]
            a = math.radians(_choice(g, degrees) if len(degrees) > 1 else degrees[0])
            d2 = (
                (_uniform_int(g, -after, after), _uniform_int(g, -after, after))
                if after
                else (0, 0)
            )
            rows.append((d1, s, a, d2))
        if all(d1 == (0, 0) and s == 1.0 and a == 0.0 and d2 == (0, 0) for d1, s, a, d2 in rows):
            return images
        # content moves by p -> d2 + s R(a) (p + d1) in centred pixel units (x, y); sampling needs
        # the inverse p_in = R(-a) (p_out - d2) / s - d1, expressed in grid_sample's [-1, 1] units.
        half_w, half_h = w / 2.0, h / 2.0
        theta = []
        for (d1x, d1y), s, a, (d2x, d2y) in rows:
            c, si = math.cos(a) / s, math.sin(a) / s
            # A_inv = [[c, si], [-si, c]] (rotation by -a, scaled by 1/s), in pixels
            a11, a12, a21, a22 = c, si, -si, c
            bx = -(a11 * d2x + a12 * d2y) - d1x
            by = -(a21 * d2x + a22 * d2y) - d1y
            theta.append(
                [
                    [a11, a12 * half_h / half_w, bx / half_w],
                    [a21 * half_w / half_h, a22, by / half_h],
                ]
            )
        th = torch.tensor(theta, dtype=images.dtype, device=images.device)
        grid = torch.matmul(
            _base_grid(h, w, images.device, images.dtype), th.transpose(1, 2)
        ).reshape(n, h, w, 2)
        return F.grid_sample(
            images, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False
        )

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
    """Lucid's standard transforms, scaled to the image size, fused into one resampling.

    Lucid at 224 px: jitter 12 (after a pad 12), zoom in ``[0.95, 1.05]``, rotation in
    ``[-10, 10]`` degrees, jitter 6. Here the shifts are proportional to the image size (32 px: up
    to 2 px and 1 px, so a digit is not moved off its canvas), the output keeps the input size, and
    all of it is one :func:`random_affine` (one ``grid_sample``, reflection at the borders).

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
    q = max(1, p // 2) if p else 0
    scales = [1 + strength * (i - 5) / 100 for i in range(11)]
    degrees = [strength * a for a in range(-10, 11)]
    return [random_affine(scales, degrees, shift=(p, q))]
