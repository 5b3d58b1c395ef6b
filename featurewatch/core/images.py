"""Image utilities: scaling for display, grids, colormaps and the one conversion to ``uint8``.

Conventions: image tensors are ``(N, C, H, W)`` floats; "display range" is ``[0, 1]``. A logged
image is an ``(H, W, 3)`` ``uint8`` NumPy array, produced only by :func:`to_uint8`, so every sink
receives exactly the same pixels (W&B would turn a float 0.5 into black, TensorBoard would not).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torchvision.utils import make_grid

#: A model's input normalization: per-channel ``(mean, std)`` (one value, or one per channel), as
#: in ``torchvision.transforms.Normalize``; the model sees ``(image - mean) / std``.
Normalize = tuple[Sequence[float], Sequence[float]]

#: RGB in ``[0, 1]`` of non-finite values (NaN, +-Inf) in colour-mapped images: magenta.
NONFINITE_RGB = (1.0, 0.0, 1.0)

__all__ = [
    "NONFINITE_RGB",
    "Normalize",
    "colorize",
    "columns_for",
    "figure_to_array",
    "grid",
    "load_images",
    "nonfinite_counts",
    "nonfinite_note",
    "normalizer",
    "scale_each",
    "to_display_channels",
    "to_uint8",
]


def scale_each(images: torch.Tensor, *, symmetric: bool = False, eps: float = 1e-8) -> torch.Tensor:
    """Min-max scale each image of a batch to ``[0, 1]`` independently.

    Args:
        images: ``(N, ...)`` tensor.
        symmetric: map ``[-m, m]`` (``m`` = max |x|) to ``[0, 1]`` so that zero stays mid-grey;
            right for signed quantities such as filter weights and gradients.

    Returns:
        A new float tensor of the same shape; a constant image becomes all zeros (all 0.5 when
        ``symmetric``).
    """
    x = images.detach().float()
    flat = x.reshape(x.shape[0], -1)
    shape = (-1,) + (1,) * (x.dim() - 1)
    if symmetric:
        m = flat.abs().amax(dim=1).clamp_min(eps).reshape(shape)
        return (x / m + 1) / 2
    lo = flat.amin(dim=1).reshape(shape)
    hi = flat.amax(dim=1).reshape(shape)
    return (x - lo) / (hi - lo).clamp_min(eps)


def colorize(values: torch.Tensor, cmap: str = "viridis") -> torch.Tensor:
    """Map ``(N, H, W)`` values in ``[0, 1]`` to ``(N, 3, H, W)`` RGB with a matplotlib colormap.

    Non-finite values (NaN, +-Inf) are painted :data:`NONFINITE_RGB` (magenta, which none of the
    usual heatmap colormaps contains), so a diverging layer is seen as such instead of costing the
    whole image: cast to an index, a NaN would be -9223372036854775808.

    Example:
        >>> colorize(torch.tensor([[[0.0, float("nan")]]]))[0, :, 0, 1].tolist()
        [1.0, 0.0, 1.0]
    """
    import matplotlib

    lut = torch.as_tensor(
        matplotlib.colormaps[cmap](np.linspace(0, 1, 256))[:, :3], dtype=torch.float32
    )
    v = values.detach().float().cpu()
    bad = ~torch.isfinite(v)
    idx = (torch.where(bad, 0.0, v).clamp(0, 1) * 255).round().long()
    out = lut[idx]
    out[bad] = torch.tensor(NONFINITE_RGB)
    return out.permute(0, 3, 1, 2).contiguous()


def nonfinite_counts(values: torch.Tensor) -> list[int]:
    """How many non-finite (NaN or +-Inf) values each element of a batch ``(N, ...)`` holds."""
    return [int(c) for c in (~torch.isfinite(values.detach())).flatten(1).sum(1).cpu()]


def nonfinite_note(counts: Sequence[int], total: int, what: str = "image") -> str:
    """Caption note naming the batch elements with non-finite values (empty if there are none).

    Args:
        counts: per element, its number of non-finite values (:func:`nonfinite_counts`).
        total: values per element, for "12 of 256".
        what: what an element is called in the caption ("probe image", "map").

    Example:
        >>> nonfinite_note([0, 4], 64, "probe image")
        '; non-finite values (NaN/Inf, shown magenta): probe image #1 4 of 64'
    """
    bad = [f"{what} #{i} {c} of {total}" for i, c in enumerate(counts) if c]
    if not bad:
        return ""
    return "; non-finite values (NaN/Inf, shown magenta): " + ", ".join(bad)


def to_display_channels(images: torch.Tensor) -> torch.Tensor:
    """Make ``(N, C, H, W)`` images displayable: 1 or 3 channels are kept, 2 or >3 channels are
    shown as their first three (padded with zeros for 2)."""
    c = images.shape[1]
    if c in (1, 3):
        return images
    if c == 2:
        return torch.cat([images, torch.zeros_like(images[:, :1])], dim=1)
    return images[:, :3]


def normalizer(
    normalize: Normalize | None, channels: int, device: torch.device | str = "cpu"
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The function that maps ``[0, 1]`` images to what the model takes: ``(x - mean) / std``.

    Rendered and dreamed images live in ``[0, 1]``; a model trained on standardized inputs must see
    them standardized the same way, or its activations are meaningless.

    Args:
        normalize: ``(mean, std)``, each one value or one per channel; ``None``: identity.
        channels: channels of the images (to check the lengths).
        device: where the constants live (the model's device).

    Returns:
        ``f(x)`` for ``(N, channels, H, W)`` tensors (one fused ``addcmul``).

    Raises:
        TypeError: if ``normalize`` is not a pair of sequences.
        ValueError: if a length fits neither 1 nor ``channels``, or a std is zero.

    Example:
        >>> norm = normalizer(((0.5,), (0.25,)), channels=1)
        >>> norm(torch.ones(1, 1, 2, 2))[0, 0, 0, 0].item()
        2.0
    """
    if normalize is None:
        return lambda x: x
    if not isinstance(normalize, (tuple, list)) or len(normalize) != 2:
        raise TypeError(f"`normalize` must be (mean, std) sequences, got {normalize!r}")
    mean, std = (
        torch.as_tensor(v, dtype=torch.float32, device=device).flatten() for v in normalize
    )
    for name, t in (("mean", mean), ("std", std)):
        if t.numel() not in (1, channels):
            raise ValueError(
                f"`normalize` {name} has {t.numel()} values; the images have {channels} channels "
                f"(give 1 or {channels})"
            )
    if (std == 0).any():
        raise ValueError(f"`normalize` std must be non-zero, got {std.tolist()}")
    scale, shift = (1.0 / std).reshape(1, -1, 1, 1), (-mean / std).reshape(1, -1, 1, 1)
    return lambda x: torch.addcmul(shift, x, scale)  # (x - mean) / std in one pass


def grid(
    images: torch.Tensor | Sequence[torch.Tensor],
    *,
    nrow: int | None = None,
    padding: int = 2,
    pad_value: float = 1.0,
) -> torch.Tensor:
    """Tile ``(N, C, H, W)`` images in ``[0, 1]`` into one ``(3, H', W')`` image.

    ``nrow`` is the number of tiles per row (default: a near-square layout).
    """
    batch = torch.stack(list(images)) if not isinstance(images, torch.Tensor) else images
    if batch.dim() != 4:
        raise ValueError(f"grid expects (N, C, H, W) images, got shape {tuple(batch.shape)}")
    batch = to_display_channels(batch.detach().float().cpu())
    if nrow is None:
        nrow = columns_for(batch.shape[0])
    out = make_grid(batch, nrow=nrow, padding=padding, pad_value=pad_value)
    return out


def columns_for(n: int) -> int:
    """Tiles per row for ``n`` tiles: near-square, preferring full rows (32 -> 8 x 4, not 6 x 6)."""
    root = max(1, int(np.ceil(np.sqrt(n))))
    for cols in range(root, min(n, 2 * root) + 1):
        if n % cols == 0:
            return cols
    return root


def to_uint8(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """The one conversion of a display image to what loggers receive.

    Args:
        image: ``(C, H, W)`` tensor or ``(H, W, C)``/``(H, W)`` array. Floats are read as ``[0, 1]``
            (clipped); ``uint8`` passes through.

    Returns:
        ``(H, W, 3)`` contiguous ``uint8`` array (grayscale is repeated to RGB, alpha dropped).
    """
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.dim() == 3 and t.shape[0] in (1, 2, 3, 4) and t.shape[-1] not in (1, 3, 4):
            t = t.permute(1, 2, 0)
        arr = t.numpy()
    else:
        arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f"expected an image of shape (C, H, W) or (H, W, C), got {arr.shape}")
    if arr.dtype != np.uint8:
        arr = (np.clip(arr.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    elif arr.shape[2] == 2:
        arr = np.concatenate([arr, np.zeros_like(arr[:, :, :1])], axis=2)
    return np.ascontiguousarray(arr)


def figure_to_array(figure: object, *, close: bool = True) -> np.ndarray:
    """Rasterize a matplotlib figure to an ``(H, W, 3)`` ``uint8`` array (Agg, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not isinstance(figure, Figure):
        raise TypeError(f"expected a matplotlib Figure, got {type(figure).__name__}")
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    arr = np.asarray(canvas.buffer_rgba())[:, :, :3].copy()
    if close:
        import matplotlib.pyplot as plt

        plt.close(figure)
    return arr


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def load_images(
    path: str | os.PathLike[str],
    *,
    channels: int | None = None,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Load probe images from disk as an ``(N, C, H, W)`` float tensor in ``[0, 1]``.

    Args:
        path: an image file, a folder of image files (sorted by name), or a ``.pt`` file holding an
            ``(N, C, H, W)`` or ``(C, H, W)`` tensor (returned as saved, not rescaled).
        channels: convert to this many channels (1 = grayscale, 3 = RGB); ``None`` keeps RGB.
        size: resize to ``(H, W)`` (bilinear, antialiased) so images of any size can be batched.

    Raises:
        FileNotFoundError: if the path does not exist or a folder holds no images.
        ValueError: if a ``.pt`` file does not hold an image tensor.
    """
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor, resize

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"probe path {str(p)!r} does not exist")
    if p.suffix == ".pt":
        t = torch.load(p, map_location="cpu", weights_only=True)
        if not isinstance(t, torch.Tensor) or t.dim() not in (3, 4):
            raise ValueError(f"{str(p)!r} must hold a (N, C, H, W) or (C, H, W) tensor")
        t = t.float()
        return t[None] if t.dim() == 3 else t
    files = (
        sorted(f for f in p.iterdir() if f.suffix.lower() in _IMAGE_SUFFIXES) if p.is_dir() else [p]
    )
    if not files:
        raise FileNotFoundError(f"no image files ({', '.join(_IMAGE_SUFFIXES)}) in {str(p)!r}")
    out = []
    for f in files:
        with Image.open(f) as im:
            mode = "L" if channels == 1 else "RGB"
            t = pil_to_tensor(im.convert(mode)).float() / 255.0
        if channels is not None and channels not in (1, 3):
            t = t.mean(0, keepdim=True).repeat(channels, 1, 1)
        if size is not None:
            t = resize(t, list(size), antialias=True)
        out.append(t)
    if size is None and len({tuple(t.shape) for t in out}) > 1:
        raise ValueError(f"images in {str(p)!r} differ in size; pass `size` to resize them")
    return torch.stack(out)
