"""Direct views of a network: its first-layer filters and the feature maps of given inputs.

These need no optimization; they are the cheapest way to watch training: first-layer filters turn
from noise into oriented edge and colour detectors, and activation maps show which channels respond
to a fixed probe image, and which stay dark (Yosinski et al., 2015, "Understanding Neural Networks
Through Deep Visualization").
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress

import torch
import torch.nn.functional as F
from torch import nn

from featurewatch.core.hygiene import model_device_dtype
from featurewatch.core.images import colorize, grid, scale_each
from featurewatch.core.labels import MAX_PNG_PIXELS, labelled_grid
from featurewatch.core.layers import StopForward, capture, module_calls, parse_layer, resolve_layer

__all__ = ["activation_grid", "activation_maps", "filter_grid", "filter_images", "map_scale"]


def _upscale(tiles: torch.Tensor, min_size: int) -> torch.Tensor:
    h, w = tiles.shape[-2:]
    factor = max(1, -(-min_size // max(h, w)))
    return F.interpolate(tiles, scale_factor=factor, mode="nearest") if factor > 1 else tiles


def map_scale(
    shape: Sequence[int],
    min_size: int = 32,
    max_pixels: int | None = MAX_PNG_PIXELS,
    *,
    titles: bool = False,
) -> float:
    """How :func:`activation_grid` scales ``(N, C, H, W)`` maps for display.

    An integer ``>= 1``: enlarged by that factor (nearest neighbour) towards ``min_size``, as far
    as ``max_pixels`` allows; a fraction ``< 1``: averaged down by it because the maps alone
    exceed ``max_pixels``. With ``titles``, the title strip above each tile (about 20 px) counts
    towards ``max_pixels`` too.
    """
    scale = _map_scale(shape, min_size, max_pixels)
    if titles and max_pixels is not None:
        side = max(1.0, int(shape[-2]) * scale)
        scale = _map_scale(shape, min_size, int(max_pixels * side / (side + _STRIP)))
    return scale


#: the height of a tile's title strip and its padding (10 px text), for :func:`map_scale`
_STRIP = 20


def _map_scale(shape: Sequence[int], min_size: int, max_pixels: int | None) -> float:
    n, c, h, w = (int(v) for v in shape)
    pixels = n * c * h * w
    factor = max(1, -(-min_size // max(h, w, 1)))
    if max_pixels is None:
        return float(factor)
    while factor > 1 and pixels * factor * factor > max_pixels:
        factor -= 1
    if pixels * factor * factor <= max_pixels:
        return float(factor)
    return (max_pixels / pixels) ** 0.5


def filter_images(weight: torch.Tensor, *, min_size: int = 32) -> torch.Tensor:
    """Display tiles for convolution filters that look at image channels.

    Args:
        weight: ``(out, in, kh, kw)`` conv weight. ``in`` of 1 or 3 gives one grey or RGB tile per
            filter; any other ``in`` gives one grey tile per (filter, input channel).
        min_size: tiles are enlarged (nearest neighbour, so pixels stay visible) to at least this.

    Returns:
        ``(N, 1 or 3, H, W)`` in ``[0, 1]``, each filter scaled symmetrically (zero is mid-grey) so
        its shape shows whatever its norm.
    """
    if weight.dim() != 4:
        raise ValueError(
            f"expected a 2-d convolution weight (out, in, kh, kw), got shape {tuple(weight.shape)}"
        )
    w = weight.detach().float().cpu()
    if w.shape[1] not in (1, 3):
        w = w.reshape(-1, 1, *w.shape[2:])
    return _upscale(scale_each(w, symmetric=True), min_size)


def filter_grid(conv: nn.Module, *, min_size: int = 32) -> torch.Tensor:
    """One ``(3, H, W)`` grid of a conv layer's filters (see :func:`filter_images`)."""
    weight = getattr(conv, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{type(conv).__name__} has no weight tensor to show")
    tiles = filter_images(weight, min_size=min_size)
    nrow = weight.shape[1] if weight.shape[1] not in (1, 3) else None
    return grid(tiles, nrow=nrow, padding=2, pad_value=1.0)


@torch.no_grad()
def activation_maps(
    model: nn.Module, x: torch.Tensor, layers: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Outputs of ``layers`` for input ``x``; the forward pass stops after the deepest one.

    Call it inside :func:`featurewatch.core.hygiene.isolated` when ``model`` is being trained.

    Returns:
        ``{layer: tensor}`` with the tensors detached, on the model's device.
    """
    device, dtype = model_device_dtype(model)
    x = x.to(device=device, dtype=dtype)
    names = sorted({parse_layer(layer).name for layer in layers})
    for layer in layers:
        resolve_layer(model, layer)
    counts = (
        module_calls(model, lambda: model(x[:1]), names)
        if any(parse_layer(la).call is None for la in layers)
        else None
    )
    # Clone when several layers are captured: a later in-place op (ReLU(inplace=True) after a conv,
    # ``out += identity`` after a BatchNorm) would otherwise overwrite an earlier capture.
    with (
        capture(model, layers, call_counts=counts, stop=True, clone=len(layers) > 1) as got,
        suppress(StopForward),
    ):
        model(x)
    return {str(parse_layer(layer)): got[layer].detach() for layer in layers}


def activation_grid(
    maps: torch.Tensor,
    *,
    channels: Sequence[int] | None = None,
    max_channels: int = 64,
    min_size: int = 32,
    cmap: str = "viridis",
    max_pixels: int | None = MAX_PNG_PIXELS,
    titles: bool = True,
    input_titles: Sequence[str] | None = None,
) -> torch.Tensor:
    """Deep-Visualization-Toolbox view of one layer: per input image, a grid of its channel maps.

    Each input image's maps share one colour scale (zero = the darkest colour), so a silent channel
    is dark next to active ones. The per-image grids are tiled in reading order (near-square).
    With ``titles``, each map is under its channel index (``"ch 12"``, or ``"12"`` on a narrow
    tile) and each input's grid under ``"input i"`` (or its ``input_titles`` entry), so a dark
    tile names its channel without counting (:func:`~featurewatch.core.labels.labelled_grid`).

    Args:
        maps: ``(N, C, H, W)`` feature maps.
        channels: which channels to show (default: the first ``max_channels``).
        min_size: small maps are enlarged (nearest neighbour, by a whole factor) towards this.
        max_pixels: the enlargement stops where the maps would exceed this many pixels, and maps
            that exceed it as they are get averaged down (area) by one factor, so that one
            picture stays near this size (about 2 MB of PNG at the default,
            :data:`~featurewatch.core.labels.MAX_PNG_PIXELS`; see :func:`map_scale`). ``None``:
            no bound. The title strips come on top of it.
        titles: draw the channel and input titles (``False``: bare maps, as in a filmstrip).
        input_titles: one title per input (default ``"input 0"``, ``"input 1"``, ...).

    Returns:
        ``(3, H', W')`` image in ``[0, 1]``.
    """
    if maps.dim() != 4:
        raise ValueError(f"expected (N, C, H, W) feature maps, got shape {tuple(maps.shape)}")
    sel = list(channels) if channels is not None else list(range(min(max_channels, maps.shape[1])))
    m = maps[:, sel].detach().float().cpu()
    scale = map_scale(m.shape, min_size, max_pixels, titles=titles)
    if scale < 1.0:  # area averaging keeps a NaN a NaN: still drawn magenta
        size = (max(1, int(m.shape[-2] * scale)), max(1, int(m.shape[-1] * scale)))
        m = F.interpolate(m, size=size, mode="area")
    per_image = []
    names = [(f"ch {c}", str(c)) for c in sel]
    heads = (
        list(input_titles) if input_titles is not None else [f"input {i}" for i in range(len(m))]
    )
    if len(heads) != len(m):
        raise ValueError(f"{len(heads)} input_titles for {len(m)} inputs; give one per input")
    for i, one in enumerate(m):
        # scaled over the finite values: a NaN or Inf stays non-finite (drawn magenta by
        # colorize) instead of turning the whole image's scale into NaN
        finite = one[torch.isfinite(one)]
        lo = finite.amin().clamp(max=0.0) if finite.numel() else one.new_zeros(())
        hi = finite.amax() if finite.numel() else one.new_ones(())
        scaled = (one - lo) / (hi - lo).clamp_min(1e-8)
        tiles = colorize(scaled)
        if scale > 1.0:
            tiles = F.interpolate(tiles, scale_factor=int(scale), mode="nearest")
        if titles:
            block = labelled_grid(tiles, names, min_tile=1, header=heads[i], pad=1)
        else:
            block = grid(tiles, padding=1, pad_value=0.5)
        per_image.append(block)
    return grid(torch.stack(per_image), padding=4, pad_value=1.0)
