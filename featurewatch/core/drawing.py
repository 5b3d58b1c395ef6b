"""The picture of a layer's dataset examples: per channel, top images | receptive-field crops |
projections, in the layout of Zeiler & Fergus (2014), Fig. 2.

Pure drawing on CPU tensors in ``[0, 1]``: what to show comes from
:func:`~featurewatch.core.examples.top_examples`,
:func:`~featurewatch.core.receptive_field.receptive_fields` and
:func:`~featurewatch.core.projection.project`.

Example:
    >>> picture = examples_grid(pool, top, boxes=boxes, projections=proj)   # (3, H', W')
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from featurewatch.core.images import grid, scale_each, to_display_channels
from featurewatch.core.labels import label_font, text_band
from featurewatch.core.receptive_field import Box
from featurewatch.core.validation import check_images

if TYPE_CHECKING:  # examples.py re-exports examples_grid: no import cycle at run time
    from featurewatch.core.examples import TopExamples

__all__ = ["examples_grid", "titled_rows"]

_STRIP = 0.94  # row title strips: the light grey of labelled_grid's title strips
_ROW_SIZE = 11  # px, the row titles' font
_HEADER_SIZE = 12  # px, the header's font


def _rgb(images: torch.Tensor) -> torch.Tensor:
    images = to_display_channels(images)
    return images.repeat(1, 3, 1, 1) if images.shape[1] == 1 else images


def _fit_tile(patch: torch.Tensor, size: tuple[int, int], fill: float) -> torch.Tensor:
    """Resize ``(3, h, w)`` to fit ``size`` keeping its aspect ratio (nearest neighbour, so
    pixels stay visible), centred on a ``fill`` background."""
    th, tw = size
    h, w = patch.shape[-2:]
    scale = min(th / h, tw / w)
    nh, nw = max(1, min(th, round(h * scale))), max(1, min(tw, round(w * scale)))
    resized = F.interpolate(patch[None], size=(nh, nw), mode="nearest")[0]
    tile = torch.full((patch.shape[0], th, tw), fill, dtype=patch.dtype)
    top, left = (th - nh) // 2, (tw - nw) // 2
    tile[:, top : top + nh, left : left + nw] = resized
    return tile


def _outline(
    tile: torch.Tensor, box: Box, factor: int, colour: tuple[float, float, float]
) -> torch.Tensor:
    top, left, bottom, right = (v * factor for v in box)
    bottom, right = bottom - 1, right - 1
    c = torch.tensor(colour, dtype=tile.dtype).reshape(3, 1)
    tile = tile.clone()
    tile[:, top, left : right + 1] = c
    tile[:, bottom, left : right + 1] = c
    tile[:, top : bottom + 1, left] = c
    tile[:, top : bottom + 1, right] = c
    return tile


def examples_grid(
    images: torch.Tensor,
    top: TopExamples,
    *,
    boxes: Sequence[Sequence[Box]] | None = None,
    projections: torch.Tensor | None = None,
    min_size: int = 32,
    outline: bool = True,
    row_titles: Sequence[str] | None = None,
    header: str | None = None,
) -> torch.Tensor:
    """One picture of a layer's dataset examples: a row per channel.

    Each row shows, left to right, separated by white gaps:

    1. the ``k`` top images, highest activation first, each min-max scaled for display, with the
       receptive field of the maximal unit outlined in red (when ``boxes`` are given);
    2. the receptive-field crops (when ``boxes`` are given), cut from the display-scaled image and
       resized to the tile size keeping their aspect ratio (nearest neighbour);
    3. the projections (when given), each scaled symmetrically so that zero is mid-grey, cropped
       to the same receptive field as in Zeiler & Fergus's Fig. 2 when ``boxes`` are given.

    Tiles are the input size enlarged by an integer factor to at least ``min_size`` pixels.

    Args:
        images: ``(N, C, H, W)`` pool the examples index into.
        top: from :func:`top_examples`.
        boxes: ``boxes[c][j]`` the receptive field of ``top``'s example ``j`` of row ``c``.
        projections: ``(rows, k, C, H, W)`` from :func:`project`.
        min_size: minimum tile size in pixels.
        outline: draw the receptive field on the top images.
        row_titles: one line per row, drawn left aligned in a light strip above the row's tiles
            (e.g. ``"ch 5 · top 6: #12 (4.1), #3 (3.9), ..."``; words that do not fit are dropped
            for "…", see :func:`~featurewatch.core.labels.shorten`). ``None``: no strips.
        header: a line across the top, e.g. ``"features.5 · epoch 3 · step 240"``; a picture
            narrower than it is widened with white on the right (up to 1024 px).

    Returns:
        ``(3, H', W')`` image in ``[0, 1]``.
    """
    check_images("images", images)
    rows, k = top.indices.shape
    if row_titles is not None and (isinstance(row_titles, str) or len(row_titles) != rows):
        raise ValueError(f"`row_titles` must hold one title per row ({rows}), got {row_titles!r}")
    if boxes is not None and (len(boxes) != rows or any(len(b) != k for b in boxes)):
        raise ValueError(f"`boxes` must hold {rows} rows of {k} boxes")
    if projections is not None and tuple(projections.shape[:2]) != (rows, k):
        raise ValueError(
            f"`projections` must be ({rows}, {k}, C, H, W), got {tuple(projections.shape)}"
        )
    h, w = images.shape[-2:]
    factor = max(1, -(-int(min_size) // max(h, w)))
    tile_size = (h * factor, w * factor)
    picked = _rgb(scale_each(images[top.indices.flatten()].detach().float().cpu())).reshape(
        rows, k, 3, h, w
    )
    proj = None
    if projections is not None:
        p = projections.detach().float().cpu()
        proj = _rgb(scale_each(p.flatten(0, 1), symmetric=True)).reshape(rows, k, 3, *p.shape[-2:])

    def up(t: torch.Tensor) -> torch.Tensor:
        return F.interpolate(t[None], scale_factor=factor, mode="nearest")[0] if factor > 1 else t

    gap = 6
    row_images = []
    for r in range(rows):
        groups: list[list[torch.Tensor]] = [[], [], []]
        for j in range(k):
            img = picked[r, j]
            box = boxes[r][j] if boxes is not None else None
            tile = up(img)
            if box is not None and outline:
                tile = _outline(tile, box, factor, (1.0, 0.15, 0.15))
            groups[0].append(tile)
            if box is not None:
                t, le, b, ri = box
                groups[1].append(_fit_tile(img[:, t:b, le:ri], tile_size, 1.0))
            if proj is not None:
                pj = proj[r, j]
                if box is not None:
                    t, le, b, ri = box
                    groups[2].append(_fit_tile(pj[:, t:b, le:ri], tile_size, 1.0))
                else:
                    groups[2].append(up(pj))
        parts = [grid(torch.stack(g), nrow=k, padding=1, pad_value=1.0) for g in groups if g]
        spacer = torch.ones(3, parts[0].shape[1], gap)
        joined: list[torch.Tensor] = []
        for i, part in enumerate(parts):
            joined.extend([spacer, part] if i else [part])
        row_images.append(torch.cat(joined, dim=2))
    return titled_rows(row_images, row_titles=row_titles, header=header)


def titled_rows(
    rows: Sequence[torch.Tensor],
    *,
    row_titles: Sequence[str] | None = None,
    header: str | None = None,
) -> torch.Tensor:
    """Stack ``(3, h, w)`` row pictures (equal widths) into one picture, each under its title.

    The one layout of a dataset-examples picture, shared by :func:`examples_grid` (image tiles)
    and :func:`~featurewatch.core.signal_examples.signal_examples_grid` (waveform plots): a light
    strip with the row's title above each row, 4 px white between rows, and an optional header
    line across the top (the picture widened with white on the right, up to 1024 px, when the
    header would not fit).

    Args:
        rows: ``(3, h_i, w)`` pictures in ``[0, 1]``, one per row.
        row_titles: one line per row (shortened to fit with "…"), or ``None``: no strips.
        header: a line across the top, e.g. ``"features.5 · epoch 3 · step 240"``.

    Returns:
        ``(3, H, W)`` image in ``[0, 1]``.
    """
    if row_titles is not None and (isinstance(row_titles, str) or len(row_titles) != len(rows)):
        raise ValueError(
            f"`row_titles` must hold one title per row ({len(rows)}), got {row_titles!r}"
        )
    titled = []
    for r, row in enumerate(rows):
        if row_titles is not None:
            strip = text_band(row.shape[-1], str(row_titles[r]), size=_ROW_SIZE, background=_STRIP)
            row = torch.cat([strip, row], dim=1)
        titled.append(row)
    height = max(int(t.shape[1]) for t in titled)
    titled = [F.pad(t, (0, 0, 0, height - t.shape[1]), value=1.0) for t in titled]
    picture = grid(torch.stack(titled), nrow=1, padding=4, pad_value=1.0)
    if header:  # widened (up to 1024 px) so that a header longer than a narrow picture fits
        needed = math.ceil(label_font(_HEADER_SIZE).getlength(header)) + 2 * 3 + 4
        width = max(picture.shape[-1], min(1024, needed))
        picture = F.pad(picture, (0, width - picture.shape[-1]), value=1.0)
        band = text_band(width - 4, header, size=_HEADER_SIZE)
        picture = torch.cat([F.pad(band, (4, 0, 4, 0), value=1.0), picture], dim=1)
    return picture
