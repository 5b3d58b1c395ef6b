"""Images a dashboard can read on its own: titled tiles, colour bars with a unit, bounded sizes.

A logged grid of channel visualizations or class model images says nothing unless each tile names
what it shows, and a heat map says nothing without its scale (issue 10). This module draws that
text *into* the image, so TensorBoard, W&B and the files page all show the same labelled pixels:

- :func:`labelled_grid`: tiles with a title strip above each (never over the pixels), tiny tiles
  upscaled by an integer factor with nearest neighbour (an 8 px digit stays crisp), and an optional
  header line ("features.5 · epoch 3 · step 240").
- :func:`colour_bar` / :func:`with_colour_bar`: the colormap's gradient, tick values and the unit,
  with exactly the colours of :func:`~featurewatch.core.images.colorize`.
- :func:`bound_size`: area-averaged downscaling to :data:`MAX_PNG_PIXELS`, so one logged image is
  at most about 2 MB of PNG.

Text: Pillow with matplotlib's bundled DejaVu Sans (:func:`label_font`). No Lightning here.

Example:
    >>> picture = labelled_grid(torch.rand(10, 1, 8, 8), [f"ch {i}" for i in range(10)])
    >>> picture.shape[0], picture.shape[2] >= 5 * 64   # (3, H', W'), 8 px tiles shown at 64 px
    (3, True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.utils import make_grid

from featurewatch.core.images import NONFINITE_RGB, colorize, columns_for, to_display_channels
from featurewatch.core.validation import check_images

__all__ = [
    "ELLIPSIS",
    "MAX_PNG_BYTES",
    "MAX_PNG_PIXELS",
    "bound_size",
    "colour_bar",
    "label_font",
    "labelled_grid",
    "shorten",
    "text_band",
    "with_colour_bar",
    "with_header",
]

#: The budget of one logged image: about 2 MB of PNG.
MAX_PNG_BYTES = 2_000_000
#: Pixels of one logged image (800 x 800). An RGB PNG is never much larger than its raw 3 bytes a
#: pixel (deflate only adds a filter byte per row and a few bytes per 64 KB block), so even pure
#: noise at this size stays under :data:`MAX_PNG_BYTES`; feature images compress to far less.
MAX_PNG_PIXELS = 640_000
#: Marks a title shortened to fit its tile.
ELLIPSIS = "…"

_STRIP = 0.94  # title strips: light grey, so they read as labels, not as part of a white tile
_INK = 0.1  # text: near black (a light ink on dark backgrounds, see _ink)
_MARGIN = 3  # pixels around text
_SEPARATORS = "·:,;-–—/|"  # left dangling at the end of a shortened title: dropped


@lru_cache(maxsize=32)
def label_font(size: int = 11, *, bold: bool = False) -> Any:
    """The font of every label: matplotlib's DejaVu Sans at ``size`` pixels.

    matplotlib is a dependency, so the file is there on a bare machine; should it fail to load,
    Pillow's bundled font (``ImageFont.load_default(size=...)``) is used.
    """
    import matplotlib
    from PIL import ImageFont

    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    try:
        return ImageFont.truetype(f"{matplotlib.get_data_path()}/fonts/ttf/{name}", size)
    except (OSError, ImportError):
        return ImageFont.load_default(size=size)


def _width(font: Any, text: str) -> int:
    return math.ceil(font.getlength(text)) if text else 0


def _line_height(font: Any) -> int:
    return int(sum(font.getmetrics()))  # ascent + descent: the same for every text


def shorten(text: str, font: Any, width: int) -> str:
    """``text`` as drawn in at most ``width`` pixels: whole words, then :data:`ELLIPSIS`.

    Words are dropped from the end (with a separator such as "·" left dangling) until the rest
    plus "…" fits, so "7 · seven" becomes "7 …", never "7 · se…". Only a first word that alone
    is too wide is cut inside, as the last resort that keeps the text within its strip.

    Example:
        >>> shorten("layer4 · channel 12", label_font(10), 60)
        'layer4 …'
    """
    if _width(font, text) <= width:
        return text
    words = text.split()
    for n in range(len(words) - 1, 0, -1):
        kept = words[:n]
        while kept and all(ch in _SEPARATORS for ch in kept[-1]):
            kept.pop()
        candidate = " ".join(kept) + " " + ELLIPSIS
        if kept and _width(font, candidate) <= width:
            return candidate
    first = words[0] if words else text
    for n in range(len(first) - 1, 0, -1):
        if _width(font, first[:n] + ELLIPSIS) <= width:
            return first[:n] + ELLIPSIS
    return ELLIPSIS if _width(font, ELLIPSIS) <= width else ""


def _first_fitting(title: str | Sequence[str], font: Any, width: int) -> str:
    """``title``, or of alternatives (longest first) the first that fits ``width`` (else the last,
    which :func:`shorten` then cuts)."""
    if isinstance(title, str):
        return title
    options = [str(t) for t in title] or [""]
    return next((t for t in options if _width(font, t) <= width), options[-1])


def text_band(
    width: int, text: str, *, size: int = 11, background: float = 1.0, align: str = "left"
) -> torch.Tensor:
    """A ``(3, h, width)`` strip of ``background`` with one line of dark (or, on a dark
    background, light) ``text`` in :func:`label_font` of ``size`` px, shortened to fit
    (:func:`shorten`); ``align`` is ``"left"`` or ``"centre"``. For row labels of pictures that
    are not a grid of equal tiles (e.g. a dataset-examples row)."""
    if align not in ("left", "centre"):
        raise ValueError(f"`align` must be 'left' or 'centre', got {align!r}")
    return _text_band(width, text, label_font(size), float(background), align=align)


def with_header(image: torch.Tensor, text: str, *, size: int = 12) -> torch.Tensor:
    """``image`` ``(3, H, W)`` in [0, 1] under a white strip holding one line of ``text`` (what
    the picture is, e.g. ``"features.5 · epoch 3 · step 240"``), so it reads without a caption.

    Returns:
        ``(3, H + h, W)``.
    """
    image = torch.as_tensor(image).float()
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"`image` must be (3, H, W), got shape {tuple(image.shape)}")
    band = _text_band(int(image.shape[-1]), text, label_font(size), 1.0, align="left")
    return torch.cat([band.to(image.dtype), image], dim=1)


def _ink(background: float) -> tuple[int, int, int]:
    v = _INK if background >= 0.5 else 1.0 - _INK
    return (round(v * 255),) * 3


def _text_band(
    width: int, text: str, font: Any, background: float, *, align: str = "centre"
) -> torch.Tensor:
    """A ``(3, h, width)`` band of ``background`` with one line of ``text`` (shortened to fit)."""
    from PIL import Image, ImageDraw

    height = _line_height(font) + 2 * _MARGIN
    band = Image.new("RGB", (width, height), (round(background * 255),) * 3)
    line = shorten(text, font, width - 2 * _MARGIN)
    centre = align == "centre"
    xy = (width / 2 if centre else _MARGIN, _MARGIN + font.getmetrics()[0])  # on the baseline
    ImageDraw.Draw(band).text(
        xy, line, fill=_ink(background), font=font, anchor="ms" if centre else "ls"
    )
    return _tensor(band)


def _tensor(image: Any) -> torch.Tensor:
    """A Pillow RGB image as a ``(3, H, W)`` float tensor in ``[0, 1]``."""
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255.0


def _paint_nonfinite(images: torch.Tensor) -> torch.Tensor:
    """Pixels with any non-finite channel painted :data:`NONFINITE_RGB`, as ``colorize`` does."""
    bad = ~torch.isfinite(images).all(dim=-3, keepdim=True)
    magenta = torch.tensor(NONFINITE_RGB, dtype=images.dtype).reshape(3, 1, 1)
    return torch.where(bad, magenta, images)


def labelled_grid(
    images: torch.Tensor,
    titles: Sequence[str | Sequence[str]],
    *,
    ncol: int | None = None,
    min_tile: int = 64,
    header: str | None = None,
    pad: int = 2,
    fill: float = 1.0,
) -> torch.Tensor:
    """Tile images into one picture, each tile under its own title, optionally under a header.

    Each tile gets a light strip *above* it with its title in dark text ("ch 12", "7 · seven"),
    so no pixel of the tile is covered. The font is ``clamp(tile width // 7, 10, 14)`` px; a title
    too long for its tile loses whole words at the end for an ellipsis (:func:`shorten`). Tiles
    smaller than ``min_tile`` pixels are enlarged by the integer factor
    ``ceil(min_tile / max(H, W))`` with nearest neighbour, so every shown pixel is a source pixel
    and an 8 x 8 digit stays crisp instead of a blur. The ``header`` spans the top, left aligned;
    the picture is widened (up to 1024 px) so that a header longer than the grid fits.

    Args:
        images: ``(N, C, H, W)`` floats in ``[0, 1]``, ``C`` = 1 or 3 (2 or more than 3 channels
            are shown as in :func:`~featurewatch.core.images.to_display_channels`). Non-finite
            pixels are painted magenta (:data:`~featurewatch.core.images.NONFINITE_RGB`).
        titles: ``N`` titles, one per tile, in order. A title may be a tuple of alternatives,
            longest first: the first that fits the tile is drawn (``("ch 5 (weak)", "5 (weak)")``
            keeps the mark on a narrow tile), the last one shortened if none fits.
        ncol: tiles per row; default near-square
            (:func:`~featurewatch.core.images.columns_for`).
        min_tile: the smallest tile side shown, in pixels; larger tiles are kept as they are.
        header: a line across the top, e.g. ``"features.5 · epoch 3 · step 240"``.
        pad: pixels between cells (and around the grid).
        fill: the colour of the padding, in ``[0, 1]``.

    Returns:
        ``(3, H', W')`` float image. Row ``r``, column ``c``'s cell starts at
        ``(header_h + pad + r * (strip + H * k + pad), pad + c * (W * k + pad))``; its tile lies
        ``strip`` rows below that.

    Raises:
        TypeError: if ``images`` is not a tensor or ``titles`` is a single string.
        ValueError: for a wrong shape, a number of titles other than ``N`` or a bad option.

    Example:
        >>> digits = torch.rand(10, 1, 8, 8)
        >>> labelled_grid(digits, [f"{d} · digit" for d in range(10)], header="epoch 3").shape[0]
        3
    """
    n = check_images("images", images).shape[0]
    if isinstance(titles, str) or not isinstance(titles, Sequence):
        hint = " (wrap one title in a list)" if isinstance(titles, str) else ""
        raise TypeError(
            f"`titles` must be a sequence of {n} strings, got {type(titles).__name__}{hint}"
        )
    if len(titles) != n:
        raise ValueError(f"`titles` must hold one title per image ({n}), got {len(titles)}")
    if ncol is not None and (not isinstance(ncol, int) or ncol < 1):
        raise ValueError(f"`ncol` must be a positive int or None, got {ncol!r}")
    if not isinstance(min_tile, int) or min_tile < 1:
        raise ValueError(f"`min_tile` must be a positive int (pixels), got {min_tile!r}")
    if not isinstance(pad, int) or pad < 0:
        raise ValueError(f"`pad` must be an int >= 0 (pixels), got {pad!r}")
    if not 0.0 <= float(fill) <= 1.0:
        raise ValueError(f"`fill` must be a colour value in [0, 1], got {fill!r}")

    x = to_display_channels(images.detach().float().cpu())
    x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
    x = _paint_nonfinite(x)
    h, w = x.shape[-2:]
    k = max(1, -(-min_tile // max(h, w)))
    if k > 1:  # exact nearest neighbour: each source pixel becomes a k x k block
        x = x.repeat_interleave(k, dim=-2).repeat_interleave(k, dim=-1)
    tile_w = w * k
    size = min(14, max(10, tile_w // 7))
    font = label_font(size)
    room = tile_w - 2 * _MARGIN
    strips = [_text_band(tile_w, _first_fitting(t, font, room), font, _STRIP) for t in titles]
    cells = torch.stack([torch.cat([s, tile], dim=1) for s, tile in zip(strips, x)])
    cols = min(n, ncol if ncol is not None else columns_for(n))
    picture = make_grid(cells, nrow=cols, padding=pad, pad_value=float(fill))
    if header:
        head_font = label_font(size + 1, bold=True)
        width = max(picture.shape[-1], min(1024, _width(head_font, header) + 2 * _MARGIN + pad))
        picture = F.pad(picture, (0, width - picture.shape[-1]), value=float(fill))
        band = _text_band(width - pad, header, head_font, float(fill), align="left")
        band = F.pad(band, (pad, 0, pad, 0), value=float(fill))
        picture = torch.cat([band, picture], dim=1)
    return picture


def _ticks(vmin: float, vmax: float, max_ticks: int) -> list[float]:
    """Round values inside ``[vmin, vmax]`` (matplotlib's locator); the two ends if < 2 fit."""
    from matplotlib.ticker import MaxNLocator

    if vmax == vmin:
        return [vmin]
    locs = MaxNLocator(nbins=max(1, max_ticks - 1)).tick_values(vmin, vmax)
    eps = 1e-9 * (vmax - vmin)
    inside = [0.0 if abs(v) <= eps else float(v) for v in locs if vmin - eps <= v <= vmax + eps]
    return inside if len(inside) >= 2 else [vmin, vmax]


def _tick_label(value: float, step: float) -> str:
    """``value`` with as many decimals as the tick step needs (0.25 -> 2; 0.5 -> 1; 5 -> 0)."""
    if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
        return f"{value:.2g}"
    decimals = next((d for d in range(5) if abs(round(step, d) - step) <= 1e-6 * step), 4)
    return f"{value:.{decimals}f}"


def colour_bar(
    cmap: str, vmin: float, vmax: float, *, height: int, unit: str, width: int = 14
) -> torch.Tensor:
    """A vertical colour bar: the colormap's gradient, tick values and the unit, on white.

    The gradient runs from ``vmax`` (top) to ``vmin`` (bottom) with exactly the colours
    :func:`~featurewatch.core.images.colorize` gives the normalized values
    ``(v - vmin) / (vmax - vmin)`` (its 256-entry lookup table), so the bar reads a heat map made
    with the same colormap. Ticks are matplotlib's round values; the unit (e.g.
    ``"|grad| (normalized)"``) runs up the right side, shortened to the height if need be.
    Readable from a height of about 64 px.

    Args:
        cmap: a matplotlib colormap name (``matplotlib.colormaps[cmap]``).
        vmin: the value at the bottom (normalized 0).
        vmax: the value at the top (normalized 1), ``>= vmin``.
        height: pixels; the height of the image the bar goes beside.
        unit: what the values are.
        width: pixels of the gradient band (the whole bar is wider: ticks, values, unit).

    Returns:
        ``(3, height, W)`` float image in ``[0, 1]``.

    Raises:
        ValueError: for an unknown colormap, non-finite or reversed limits, or a bad size.

    Example:
        >>> tuple(colour_bar("inferno", 0.0, 1.0, height=128, unit="|grad| (normalized)").shape[:2])
        (3, 128)
    """
    import matplotlib
    from PIL import Image, ImageDraw

    if cmap not in matplotlib.colormaps:
        raise ValueError(f"unknown colormap {cmap!r}; e.g. 'viridis', 'inferno', 'magma', 'jet'")
    if not (math.isfinite(vmin) and math.isfinite(vmax)) or vmin > vmax:
        raise ValueError(f"colour bar limits must be finite with vmin <= vmax, got {vmin}, {vmax}")
    if not all(isinstance(v, int) and v >= 1 for v in (height, width)):
        raise ValueError(f"`height` and `width` must be positive ints, got {height!r}, {width!r}")
    font = label_font(min(13, max(10, height // 16)))
    line = _line_height(font)
    top = min(line // 2 + 1, max(0, (height - 2) // 2))  # room for the end labels' half lines
    rows = height - 2 * top
    ticks = _ticks(float(vmin), float(vmax), max(2, rows // (2 * line)))
    step = (ticks[1] - ticks[0]) if len(ticks) > 1 else abs(vmax) or 1.0
    labels = [_tick_label(v, step) for v in ticks]
    tick_len, gap = 4, 2
    text_x = _MARGIN + width + tick_len + gap
    unit_x = text_x + max(_width(font, s) for s in labels) + 2 * gap
    total = unit_x + line + _MARGIN

    canvas = Image.new("RGB", (total, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    ink = _ink(1.0)
    span = (vmax - vmin) or 1.0
    for v, s in zip(ticks, labels):
        y = top + round((1 - (v - vmin) / span) * (rows - 1)) if vmax > vmin else top + rows // 2
        draw.line([(_MARGIN + width, y), (_MARGIN + width + tick_len - 1, y)], fill=ink)
        draw.text((text_x, y), s, fill=ink, font=font, anchor="lm")
    label = Image.new("RGB", (max(1, height - 2 * _MARGIN), line), (255, 255, 255))
    text = shorten(unit, font, label.width)
    ImageDraw.Draw(label).text((label.width / 2, line / 2), text, fill=ink, font=font, anchor="mm")
    canvas.paste(label.rotate(90, expand=True), (unit_x, _MARGIN))

    out = _tensor(canvas)
    levels = torch.linspace(1.0, 0.0, rows) if vmax > vmin else torch.full((rows,), 0.5)
    gradient = colorize(levels.reshape(1, rows, 1).expand(1, rows, width), cmap)[0]
    out[:, top : top + rows, _MARGIN : _MARGIN + width] = gradient
    return out


def with_colour_bar(
    image: torch.Tensor, cmap: str, vmin: float, vmax: float, unit: str, *, width: int = 14
) -> torch.Tensor:
    """``image`` with its :func:`colour_bar` appended on the right, of the same height.

    Args:
        image: ``(3, H, W)`` (or ``(1, H, W)``) float image, e.g. a heat map or an overlay grid
            made with ``colorize(..., cmap)``.
        cmap, vmin, vmax, unit, width: as in :func:`colour_bar`.

    Returns:
        ``(3, H, W + w)``: the image's pixels unchanged, then the bar.

    Raises:
        TypeError: if ``image`` is not a tensor; ValueError: for its shape, and as colour_bar.

    Example:
        >>> heat = colorize(torch.rand(1, 96, 96), "inferno")[0]
        >>> with_colour_bar(heat, "inferno", 0.0, 1.0, "|grad| (normalized)").shape[:2] == (3, 96)
        True
    """
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"`image` must be a (3, H, W) tensor, got {type(image).__name__}")
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"`image` must be a (3, H, W) or (1, H, W) tensor, got {image.shape}")
    img = image.detach().float().cpu()
    img = img.expand(3, -1, -1) if img.shape[0] == 1 else img
    bar = colour_bar(cmap, vmin, vmax, height=img.shape[1], unit=unit, width=width)
    return torch.cat([img, bar], dim=2)


def bound_size(image: torch.Tensor, max_pixels: int = MAX_PNG_PIXELS) -> tuple[torch.Tensor, float]:
    """Downscale an image above ``max_pixels`` to fit, keeping its aspect ratio; never upscale.

    One logged picture of 512 activation maps of a ResNet at 224 px is 1822 x 1822 (11 MB of PNG
    per call, issue 10); bounded to :data:`MAX_PNG_PIXELS` it is at most about 2 MB. Downscaling
    averages areas (``F.interpolate(mode="area")``), so thin structure fades rather than aliases.

    Args:
        image: ``(C, H, W)`` (or ``(N, C, H, W)``, the budget per image) float tensor.
        max_pixels: the largest ``H' * W'`` allowed.

    Returns:
        ``(image, factor)``: the image as it came and ``1.0`` when within the budget; otherwise a
        new image of ``(floor(H * factor), floor(W * factor))`` (at least 1) pixels with
        ``factor = sqrt(max_pixels / (H * W)) < 1``.

    Raises:
        TypeError: if ``image`` is not a tensor.
        ValueError: if ``image`` is not 3-D or 4-D or ``max_pixels`` is not a positive int.

    Example:
        >>> small, factor = bound_size(torch.rand(3, 1822, 1822))
        >>> tuple(small.shape), round(factor, 3)
        ((3, 800, 800), 0.439)
    """
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"`image` must be a (C, H, W) tensor, got {type(image).__name__}")
    if image.dim() not in (3, 4):
        raise ValueError(f"`image` must be a (C, H, W) or (N, C, H, W) tensor, got {image.shape}")
    if not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"`max_pixels` must be a positive int, got {max_pixels!r}")
    h, w = image.shape[-2:]
    if h * w <= max_pixels:
        return image, 1.0
    factor = math.sqrt(max_pixels / (h * w))
    nh = max(1, math.floor(h * factor + 1e-9))
    nw = max(1, min(math.floor(w * factor + 1e-9), max_pixels // nh))
    out = F.interpolate(image.reshape(-1, *image.shape[-3:]).float(), size=(nh, nw), mode="area")
    return out.reshape(*image.shape[:-2], nh, nw), factor
