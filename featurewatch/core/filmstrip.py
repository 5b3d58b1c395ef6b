"""Filmstrips: how each unit's picture evolved over a run, in one image and one animated GIF.

A callback that draws one picture per unit at every call (a rendered channel, a class model image,
a channel's top dataset example) keeps a small ``uint8`` thumbnail of each in a
:class:`ThumbnailStore`; at the end of training (and every few calls if asked) it draws
:func:`draw_filmstrip`: one row per unit, one column per call (at most 12, evenly spread over the
stored calls, first and last included), each column titled with its epoch and step. The same
thumbnails make an animated GIF (:func:`animation_frames`, :func:`encode_gif`; Pillow, since
TensorBoard's ``add_video`` is broken with moviepy 2).

The drift helpers say how much each unit's picture moved between two consecutive calls:
:func:`render_drift` (``1 -`` Pearson correlation of two renders) and :func:`topk_drift`
(``1 -`` Jaccard index of two top-k index sets).

Pure torch / NumPy / Pillow: no Lightning, no logger.

Example:
    >>> store = ThumbnailStore(capacity=24, size=64)
    >>> store.add(torch.rand(4, 1, 16, 16), epoch=0, step=10, labels=["0", "1", "2", "3"])
    >>> picture = draw_filmstrip(store.frames, store.labels, title="conv1")  # (H, W, 3) uint8
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from featurewatch.core.images import columns_for, to_display_channels

__all__ = [
    "COLUMNS",
    "Frame",
    "ThumbnailStore",
    "animation_frames",
    "draw_filmstrip",
    "encode_gif",
    "even_indices",
    "render_drift",
    "shrink",
    "topk_drift",
]

#: Columns (calls) of a filmstrip at most.
COLUMNS = 12

_BG = (255, 255, 255)
_FG = (28, 33, 40)
_MUTED = (106, 115, 125)
_PAD = 2  # pixels between tiles
_MARGIN = 6  # pixels around text blocks


def even_indices(n: int, m: int) -> list[int]:
    """``min(n, m)`` indices into ``range(n)``, evenly spread, first and last included.

    Example:
        >>> even_indices(10, 4)
        [0, 3, 6, 9]
    """
    if n <= 0 or m <= 0:
        return []
    if n <= m:
        return list(range(n))
    if m == 1:
        return [n - 1]
    return sorted({round(i * (n - 1) / (m - 1)) for i in range(m)})


def shrink(images: torch.Tensor, size: int) -> torch.Tensor:
    """``(N, C, H, W)`` images scaled down (area averaging) so that neither side exceeds ``size``
    pixels, keeping the aspect ratio; smaller images are returned as they are (as float)."""
    x = images.detach().float().cpu()
    h, w = x.shape[-2:]
    if max(h, w) <= size:
        return x
    scale = size / max(h, w)
    return F.interpolate(x, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="area")


def _rgb_uint8(images: torch.Tensor) -> torch.Tensor:
    x = to_display_channels(images)
    x = x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x
    return (x.clamp(0, 1) * 255 + 0.5).to(torch.uint8)


@dataclass(frozen=True)
class Frame:
    """The thumbnails of one call: ``tiles`` is ``(units, 3, h, w)`` ``uint8``."""

    call: int  # 0-based index of the call among those the store has seen
    epoch: int
    step: int
    tiles: torch.Tensor


class ThumbnailStore:
    """Small ``uint8`` thumbnails of every unit at every call, at most ``capacity`` calls of them.

    Memory is bounded by ``capacity * units * 3 * size * size`` bytes (24 calls of 16 units at
    64 px: 4.7 MB), however long the run: when a new call would exceed ``capacity``, the stored
    calls are thinned to every other one (the kept calls are always ``0, s, 2s, ...`` for a stride
    ``s`` that doubles, plus the latest call), so they stay evenly spread over the whole run, the
    first and the latest included.

    Args:
        capacity: calls kept at most (>= 2).
        size: longest side of a thumbnail in pixels; larger pictures are scaled down (area).

    Raises:
        ValueError: if ``capacity < 2`` or ``size < 1``.
    """

    def __init__(self, capacity: int = 2 * COLUMNS, size: int = 64) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 2:
            raise ValueError(f"`capacity` must be an int >= 2, got {capacity!r}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"`size` must be an int >= 1, got {size!r}")
        self.capacity = capacity
        self.size = size
        self.stride = 1
        self.calls = 0  # calls seen (stored or thinned away)
        self.labels: list[str] = []
        self.frames: list[Frame] = []

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def nbytes(self) -> int:
        """Bytes held by the thumbnails."""
        return sum(f.tiles.numel() for f in self.frames)

    def add(self, images: torch.Tensor, *, epoch: int, step: int, labels: Sequence[str]) -> None:
        """Store the thumbnails of one call.

        Args:
            images: ``(units, C, H, W)`` pictures in ``[0, 1]`` (1 or 3 channels shown as they
                are, others as their first three), one per unit, in row order.
            epoch, step: where in training the call happened (the column's title).
            labels: one row label per unit (a channel index, a class name). If the units change
                (another count or other labels), the earlier calls are dropped: their rows would
                not line up.

        Raises:
            ValueError: if ``images`` is not ``(units, C, H, W)`` or ``labels`` has another
                length.
        """
        if images.dim() != 4 or images.shape[0] == 0:
            raise ValueError(f"expected (units, C, H, W) images, got shape {tuple(images.shape)}")
        labels = [str(s) for s in labels]
        if len(labels) != images.shape[0]:
            raise ValueError(f"got {images.shape[0]} images but {len(labels)} labels")
        tiles = _rgb_uint8(shrink(images, self.size))
        if labels != self.labels or (self.frames and self.frames[0].tiles.shape != tiles.shape):
            self.frames, self.stride, self.calls = [], 1, 0
            self.labels = labels
        if self.frames and self.frames[-1].call % self.stride:
            self.frames.pop()  # the previous latest call, kept only because it was the latest
        self.frames.append(Frame(self.calls, int(epoch), int(step), tiles))
        self.calls += 1
        while len(self.frames) > self.capacity:
            self.stride *= 2
            last = self.frames[-1]
            self.frames = [f for f in self.frames if f.call % self.stride == 0 or f is last]

    def columns(self, count: int = COLUMNS) -> list[Frame]:
        """At most ``count`` stored calls, evenly spread, the first and the latest included."""
        return [self.frames[i] for i in even_indices(len(self.frames), count)]

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        """Plain values and tensors only (loads with ``torch.load(weights_only=True)``)."""
        return {
            "capacity": self.capacity,
            "size": self.size,
            "stride": self.stride,
            "calls": self.calls,
            "labels": list(self.labels),
            "frames": [
                {"call": f.call, "epoch": f.epoch, "step": f.step, "tiles": f.tiles.clone()}
                for f in self.frames
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; thinned again if this store's capacity is smaller."""
        self.stride = int(state.get("stride", 1))
        self.calls = int(state.get("calls", 0))
        self.labels = [str(s) for s in state.get("labels", [])]
        self.frames = [
            Frame(int(f["call"]), int(f["epoch"]), int(f["step"]), f["tiles"].to(torch.uint8))
            for f in state.get("frames", [])
        ]
        while len(self.frames) > self.capacity:
            self.stride *= 2
            last = self.frames[-1]
            self.frames = [f for f in self.frames if f.call % self.stride == 0 or f is last]


# ---------------------------------------------------------------------------------------- drawing
def _font(size: int = 11) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # a Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _text_size(font: Any, text: str) -> tuple[int, int]:
    if not text:
        return 0, 0
    left, top, right, bottom = font.getbbox(text)
    return int(right - min(left, 0)), int(bottom - min(top, 0))


def _factor(tile_h: int, tile_w: int, min_size: int) -> int:
    return max(1, -(-int(min_size) // max(tile_h, tile_w)))


def _tile(tiles: torch.Tensor, i: int, factor: int) -> np.ndarray:
    t = tiles[i].permute(1, 2, 0).numpy()
    return np.repeat(np.repeat(t, factor, axis=0), factor, axis=1) if factor > 1 else t


def draw_filmstrip(
    frames: Sequence[Frame],
    labels: Sequence[str],
    *,
    title: str = "",
    min_size: int = 48,
    columns: int = COLUMNS,
) -> np.ndarray:
    """One picture of how every unit evolved: a row per unit, a column per call.

    Args:
        frames: the stored calls (e.g. :attr:`ThumbnailStore.frames`); at most ``columns`` of them
            are drawn, evenly spread, first and last included.
        labels: the row labels (one per unit), drawn left of each row.
        title: a heading drawn above the columns.
        min_size: tiles are enlarged by an integer factor (nearest neighbour) to at least this.
        columns: columns at most.

    Returns:
        ``(H, W, 3)`` ``uint8``; each column is titled ``epoch <e>`` / ``step <s>``.

    Raises:
        ValueError: if there is no frame or the labels do not match the units.
    """
    from PIL import Image, ImageDraw

    if not frames:
        raise ValueError("no stored call to draw a filmstrip from")
    chosen = [frames[i] for i in even_indices(len(frames), columns)]
    units, _, th, tw = chosen[0].tiles.shape
    if len(labels) != units:
        raise ValueError(f"got {len(labels)} labels for {units} units")
    factor = _factor(th, tw, min_size)
    th, tw = th * factor, tw * factor
    font, small = _font(11), _font(10)
    heads = [(f"epoch {f.epoch}", f"step {f.step}") for f in chosen]
    head_w = max(max(_text_size(small, a)[0], _text_size(small, b)[0]) for a, b in heads)
    line_h = max(_text_size(small, "epoch 0step")[1], 10) + 2
    col_w = max(tw, head_w) + 2 * _PAD
    label_w = max(_text_size(font, str(s))[0] for s in labels) + 2 * _MARGIN
    title_h = _text_size(font, title)[1] + 2 * _MARGIN if title else 0
    head_h = 2 * line_h + _MARGIN
    row_h = th + 2 * _PAD
    width = max(label_w + col_w * len(chosen), _text_size(font, title)[0] + 2 * _MARGIN)
    height = title_h + head_h + row_h * units + _MARGIN
    canvas = np.full((height, width, 3), _BG, dtype=np.uint8)
    top = title_h + head_h
    for c, frame in enumerate(chosen):
        x0 = label_w + c * col_w + (col_w - tw) // 2
        for u in range(units):
            y0 = top + u * row_h + _PAD
            canvas[y0 : y0 + th, x0 : x0 + tw] = _tile(frame.tiles, u, factor)
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    if title:
        draw.text((_MARGIN, _MARGIN), title, fill=_FG, font=font)
    for c, (a, b) in enumerate(heads):
        cx = label_w + c * col_w + col_w // 2
        draw.text((cx, title_h + line_h // 2), a, fill=_FG, font=small, anchor="mm")
        draw.text((cx, title_h + line_h + line_h // 2), b, fill=_MUTED, font=small, anchor="mm")
    for u, label in enumerate(labels):
        cy = top + u * row_h + row_h // 2
        draw.text((label_w - _MARGIN, cy), str(label), fill=_FG, font=font, anchor="rm")
    return np.asarray(image).copy()


def animation_frames(
    frames: Sequence[Frame],
    labels: Sequence[str],
    *,
    title: str = "",
    min_size: int = 48,
) -> list[np.ndarray]:
    """One picture per stored call for an animation: the units' tiles in a near-square grid
    (row-major, each labelled below), headed ``<title> · epoch <e> · step <s>``.

    Returns:
        ``(H, W, 3)`` ``uint8`` arrays, all of one size.

    Raises:
        ValueError: if there is no frame or the labels do not match the units.
    """
    from PIL import Image, ImageDraw

    if not frames:
        raise ValueError("no stored call to animate")
    units, _, th, tw = frames[0].tiles.shape
    if len(labels) != units:
        raise ValueError(f"got {len(labels)} labels for {units} units")
    factor = _factor(th, tw, min_size)
    th, tw = th * factor, tw * factor
    font, small = _font(11), _font(10)
    heads = [
        " · ".join(p for p in (title, f"epoch {f.epoch}", f"step {f.step}") if p) for f in frames
    ]
    head_h = max(_text_size(font, h)[1] for h in heads) + 2 * _MARGIN
    label_h = max(_text_size(small, str(s))[1] for s in labels) + 2
    cols = columns_for(units)
    rows = -(-units // cols)
    cell_w = max(tw, max(_text_size(small, str(s))[0] for s in labels)) + 2 * _PAD
    cell_h = th + label_h + 2 * _PAD
    width = max(cols * cell_w, max(_text_size(font, h)[0] for h in heads) + 2 * _MARGIN)
    height = head_h + rows * cell_h + _PAD
    out = []
    for frame, head in zip(frames, heads):
        canvas = np.full((height, width, 3), _BG, dtype=np.uint8)
        for u in range(units):
            r, c = divmod(u, cols)
            x0 = c * cell_w + (cell_w - tw) // 2
            y0 = head_h + r * cell_h + _PAD
            canvas[y0 : y0 + th, x0 : x0 + tw] = _tile(frame.tiles, u, factor)
        image = Image.fromarray(canvas)
        draw = ImageDraw.Draw(image)
        draw.text((_MARGIN, _MARGIN), head, fill=_FG, font=font)
        for u, label in enumerate(labels):
            r, c = divmod(u, cols)
            cx = c * cell_w + cell_w // 2
            cy = head_h + r * cell_h + _PAD + th + label_h // 2 + 1
            draw.text((cx, cy), str(label), fill=_MUTED, font=small, anchor="mm")
        out.append(np.asarray(image).copy())
    return out


def encode_gif(frames: Sequence[np.ndarray], *, frame_ms: int = 500, last_ms: int = 1500) -> bytes:
    """An endlessly looping animated GIF of ``(H, W, 3)`` ``uint8`` frames of one size (Pillow;
    each frame gets its own 256-colour palette). The last frame is held ``last_ms``.

    Raises:
        ValueError: if there is no frame or the frames differ in size.
    """
    from PIL import Image

    if not frames:
        raise ValueError("no frame to encode")
    if len({f.shape for f in frames}) != 1:
        raise ValueError(f"frames differ in size: {sorted({f.shape for f in frames})}")
    images = [Image.fromarray(np.ascontiguousarray(f, dtype=np.uint8)) for f in frames]
    durations = [int(frame_ms)] * (len(images) - 1) + [int(last_ms)]
    buffer = io.BytesIO()
    images[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=durations if len(images) > 1 else int(last_ms),
        loop=0,
    )
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------ drift
def render_drift(previous: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """Per unit, ``1 - r``, with ``r`` the Pearson correlation of its two pictures.

    Pearson (cosine similarity of the mean-centred pixels) rather than plain cosine: renders sit
    around mid-grey, so the cosine of raw pixels stays near 1 whatever they show. 0: the same
    picture up to brightness and contrast; 1: unrelated; up to 2: inverted. A unit whose picture
    is constant in either call counts as 0 if both pictures are equal, else 1.

    Args:
        previous, current: ``(units, ...)`` float pictures of the same shape.

    Returns:
        ``(units,)`` float64 in ``[0, 2]``.

    Raises:
        ValueError: if the shapes differ.
    """
    if previous.shape != current.shape:
        raise ValueError(
            f"pictures differ in shape: {tuple(previous.shape)} vs {tuple(current.shape)}"
        )
    x = previous.detach().double().cpu().flatten(1)
    y = current.detach().double().cpu().flatten(1)
    a, b = x - x.mean(1, keepdim=True), y - y.mean(1, keepdim=True)
    na, nb = a.norm(dim=1), b.norm(dim=1)
    flat = (na <= 1e-12) | (nb <= 1e-12)
    r = (a * b).sum(1) / (na * nb).clamp_min(1e-300)
    equal = (x == y).all(1)
    r = torch.where(flat, equal.double(), r)
    return (1 - r).clamp(0, 2)


def topk_drift(previous: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """Per row, ``1 - |P ∩ C| / |P ∪ C|`` of the two index sets (Jaccard distance).

    Args:
        previous, current: ``(units, k)`` integer indices (e.g. a channel's top-k pool images).

    Returns:
        ``(units,)`` float64 in ``[0, 1]``: 0 the same images (in any order), 1 none in common.

    Raises:
        ValueError: if the row counts differ.
    """
    if previous.shape[0] != current.shape[0]:
        raise ValueError(f"{previous.shape[0]} rows vs {current.shape[0]} rows")
    out = []
    for p, c in zip(previous.tolist(), current.tolist()):
        sp, sc = set(p), set(c)
        union = sp | sc
        out.append(1.0 - len(sp & sc) / len(union) if union else 0.0)
    return torch.tensor(out, dtype=torch.float64)
