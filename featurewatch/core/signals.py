"""Pictures of 1-D networks: ``Conv1d`` filters as curves, ``(N, C, L)`` activations as heatmaps.

An image filter is a small picture and a 2-D feature map a greyscale image; for a net over
signals (audio, sensor series, spectra) neither reads well as pixels. A ``Conv1d`` filter is a
short waveform per input channel, so it is drawn as curves (one small plot per filter, a line per
input channel, one y-scale for all so large and small filters compare, a zero line); a layer's
``(N, C, L)`` output is a channels x time heatmap per signal, with a colour bar in the layer's own
units (the view of audio nets in Choi et al., 2016, "Explaining Deep Convolutional Neural Networks
on Music Classification").

Pure drawing on CPU copies (numpy + matplotlib's object API, no ``pyplot`` state, no display):
each function returns a ``(3, H, W)`` float image in ``[0, 1]``, like
:func:`~featurewatch.core.inspect.filter_grid`.

Example:
    >>> curves = filter_curves(net[0].weight)  # (3, H, W)
    >>> heat = signal_heatmaps(activation_maps(net, x[:4], ["2"])["2"])  # (3, H', W')
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from featurewatch.core.images import figure_to_array
from featurewatch.core.validation import check_int

__all__ = ["filter_curves", "signal_curves", "signal_heatmaps"]

#: Colour of non-finite values (NaN, Inf) in heatmaps: the package's magenta.
_NONFINITE = (1.0, 0.0, 1.0)
_DPI = 100


def _to_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0


def _figure(width: float, height: float):  # type: ignore[no-untyped-def] # matplotlib Figure
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=_DPI, layout="constrained")


def filter_curves(
    weight: torch.Tensor,
    *,
    max_filters: int = 64,
    ncols: int | None = None,
    title: str | None = None,
) -> torch.Tensor:
    """``Conv1d`` filters as curves: one small plot per filter, one line per input channel.

    All plots share one y-scale (a filter that stays near zero looks flat next to grown ones) and
    carry a zero line; the x axis is the kernel tap. With several input channels the lines are
    told apart by colour and a legend (``in 0``, ``in 1``, ...; up to 10 named). A well-trained
    first layer over raw audio shows band-pass-like oscillations; filters that stay noise point
    to a too-low learning rate or dead units.

    Args:
        weight: ``(out, in, k)`` ``Conv1d`` weight.
        max_filters: draw at most the first this many filters (the title says how many there are).
        ncols: plots per row (default: near-square).
        title: text above the plots (e.g. the layer, epoch and step).

    Returns:
        ``(3, H, W)`` float image in ``[0, 1]``.

    Raises:
        TypeError: if ``weight`` is not a tensor.
        ValueError: if it is not ``(out, in, k)`` or holds nothing.

    Example:
        >>> filter_curves(nn.Conv1d(1, 8, 9).weight).shape[0]
        3
    """
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"`weight` must be an (out, in, k) tensor, got {type(weight).__name__}")
    if weight.dim() != 3 or weight.numel() == 0:
        raise ValueError(
            f"`weight` must be a non-empty Conv1d weight (out, in, k), got shape "
            f"{tuple(weight.shape)}"
        )
    check_int("max_filters", max_filters)
    check_int("ncols", ncols, allow_none=True)
    w = weight.detach().float().cpu().numpy()
    total, inputs, taps = w.shape
    shown = min(total, max_filters)
    cols = ncols if ncols is not None else math.ceil(math.sqrt(shown))
    cols = min(cols, shown)
    rows = math.ceil(shown / cols)
    fig = _figure(1.9 * cols + 0.6, 1.45 * rows + (0.9 if title else 0.5))
    axes = np.atleast_2d(fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False))
    finite = w[:shown][np.isfinite(w[:shown])]
    peak = float(np.abs(finite).max()) if finite.size else 1.0
    peak = peak if peak > 0 else 1.0
    colours = [f"C{i % 10}" for i in range(inputs)]
    width = 1.4 if inputs <= 4 else 0.8
    for k in range(rows * cols):
        ax = axes[k // cols, k % cols]
        if k >= shown:
            ax.set_axis_off()
            continue
        ax.axhline(0.0, color="0.55", linewidth=0.8, zorder=0)
        for c in range(inputs):
            ax.plot(np.arange(taps), w[k, c], color=colours[c], linewidth=width, marker=None)
        ax.set_title(f"filter {k}", fontsize=9, pad=2)
        ax.tick_params(labelsize=7, length=2, pad=1)
        ax.set_ylim(-1.08 * peak, 1.08 * peak)
        ax.set_xlim(0, max(taps - 1, 1))
    from matplotlib.ticker import MaxNLocator

    axes[0, 0].xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))  # shared by all
    fig.supxlabel("tap (kernel position)", fontsize=9)
    fig.supylabel("weight", fontsize=9)
    if 1 < inputs:
        from matplotlib.lines import Line2D

        named = min(inputs, 10)
        handles = [Line2D([], [], color=colours[c]) for c in range(named)]
        labels = [f"in {c}" for c in range(named)]
        if inputs > named:
            handles.append(Line2D([], [], color="none"))
            labels.append(f"... {inputs} in all")
        fig.legend(handles, labels, loc="outside right upper", fontsize=8, title="input channel")
    heading = f"{total} filters" + (f" ({shown} shown)" if shown < total else "")
    heading += f", {inputs} input channel{'s' if inputs != 1 else ''}, {taps} taps"
    fig.suptitle(f"{title}\n{heading}" if title else heading, fontsize=10)
    return _to_tensor(figure_to_array(fig, close=False))


def _channel_ticks(ax, channels: Sequence[int]) -> None:  # type: ignore[no-untyped-def]
    """Label the rows with their channel index (every row up to 16 rows, else ~8 of them)."""
    step = 1 if len(channels) <= 16 else math.ceil(len(channels) / 8)
    rows = list(range(0, len(channels), step))
    ax.set_yticks(rows, [str(channels[r]) for r in rows])


def signal_heatmaps(
    maps: torch.Tensor,
    *,
    channels: Sequence[int] | None = None,
    max_channels: int = 64,
    titles: Sequence[str] | None = None,
    title: str | None = None,
    cmap: str = "viridis",
    ncols: int = 4,
) -> torch.Tensor:
    """A 1-D layer's output as heatmaps: per signal, channels (rows) x time steps (columns).

    Each signal has its own colour scale, from ``min(0, lowest value)`` to its highest value (zero
    is the darkest colour after a ReLU, so silent channels are dark rows), with its own colour bar
    in the layer's units. Non-finite values (NaN, Inf) are magenta and do not enter the scale.

    Args:
        maps: ``(N, C, L)`` layer outputs for ``N`` signals.
        channels: the channels to show, in this order (default: the first ``max_channels``); the
            rows are labelled with these indices.
        max_channels: cap on the default channels.
        titles: one title per signal (default ``"signal 0"``, ``"signal 1"``, ...).
        title: text above all panels (e.g. the layer, epoch and step).
        cmap: matplotlib colormap name.
        ncols: panels per row.

    Returns:
        ``(3, H, W)`` float image in ``[0, 1]``.

    Raises:
        TypeError: if ``maps`` is not a tensor.
        ValueError: if it is not a non-empty ``(N, C, L)`` tensor, a channel does not exist, the
            titles do not match ``N`` or ``cmap`` is unknown.

    Example:
        >>> signal_heatmaps(torch.rand(2, 8, 100)).shape[0]
        3
    """
    import matplotlib
    from matplotlib.ticker import MaxNLocator

    if not isinstance(maps, torch.Tensor):
        raise TypeError(f"`maps` must be an (N, C, L) tensor, got {type(maps).__name__}")
    if maps.dim() != 3 or maps.numel() == 0:
        raise ValueError(
            f"`maps` must be non-empty (N, C, L) 1-D feature maps, got shape {tuple(maps.shape)}"
        )
    check_int("max_channels", max_channels)
    check_int("ncols", ncols)
    if cmap not in matplotlib.colormaps:
        raise ValueError(f"`cmap` must be a matplotlib colormap name, got {cmap!r}")
    n, count = maps.shape[:2]
    shown = list(channels) if channels is not None else list(range(min(max_channels, count)))
    bad = [c for c in shown if not 0 <= c < count]
    if bad or not shown:
        raise ValueError(
            f"`channels` must be indices of the {count} channels (valid: 0..{count - 1}), "
            f"got {shown!r}"
        )
    if titles is not None and len(titles) != n:
        raise ValueError(f"`titles` must give one title per signal ({n}), got {len(titles)}")
    names = list(titles) if titles is not None else [f"signal {i}" for i in range(n)]
    values = maps.detach()[:, shown].float().cpu().numpy()
    colours = matplotlib.colormaps[cmap].with_extremes(bad=_NONFINITE)
    cols = min(ncols, n)
    rows = math.ceil(n / cols)
    panel_h = min(4.0, max(1.8, 0.12 * len(shown) + 1.0))
    fig = _figure(3.6 * cols + 0.3, panel_h * rows + (0.8 if title else 0.2))
    axes = fig.subplots(rows, cols, squeeze=False)
    for i in range(rows * cols):
        ax = axes[i // cols, i % cols]
        if i >= n:
            ax.set_axis_off()
            continue
        one = values[i]
        finite = one[np.isfinite(one)]
        lo = min(float(finite.min()), 0.0) if finite.size else 0.0
        hi = float(finite.max()) if finite.size else 1.0
        hi = hi if hi > lo else lo + 1.0
        image = ax.imshow(
            np.ma.masked_invalid(one),
            aspect="auto",
            interpolation="nearest",
            cmap=colours,
            vmin=lo,
            vmax=hi,
            origin="upper",
        )
        bar = fig.colorbar(image, ax=ax, fraction=0.08, pad=0.02)
        bar.ax.tick_params(labelsize=7)
        bar.set_label("activation", fontsize=8)
        nonfinite = int((~np.isfinite(one)).sum())
        ax.set_title(names[i] + (f" ({nonfinite} NaN/Inf)" if nonfinite else ""), fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
        ax.set_xlabel("time step", fontsize=8)
        ax.set_ylabel("channel", fontsize=8)
        ax.tick_params(labelsize=7)
        _channel_ticks(ax, shown)
    if title:
        fig.suptitle(title, fontsize=10)
    return _to_tensor(figure_to_array(fig, close=False))


def signal_curves(
    x: torch.Tensor,
    *,
    titles: Sequence[str] | None = None,
    title: str | None = None,
    max_channels: int = 8,
    ncols: int = 4,
) -> torch.Tensor:
    """Input signals as waveforms: per signal one plot, one line per channel (the first
    ``max_channels``), x axis "time step", y axis "value" (the inputs' own units, e.g. normalized).

    Args:
        x: ``(N, C, L)`` signals.
        titles: one title per signal (default ``"signal i"``).
        title: text above all plots.
        max_channels: lines per plot at most (a legend names them when there are several).
        ncols: plots per row.

    Returns:
        ``(3, H, W)`` float image in ``[0, 1]``.

    Raises:
        TypeError, ValueError: as :func:`signal_heatmaps`.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`x` must be an (N, C, L) tensor, got {type(x).__name__}")
    if x.dim() != 3 or x.numel() == 0:
        raise ValueError(f"`x` must be non-empty (N, C, L) signals, got shape {tuple(x.shape)}")
    check_int("max_channels", max_channels)
    check_int("ncols", ncols)
    n, count, length = x.shape
    if titles is not None and len(titles) != n:
        raise ValueError(f"`titles` must give one title per signal ({n}), got {len(titles)}")
    names = list(titles) if titles is not None else [f"signal {i}" for i in range(n)]
    values = x.detach().float().cpu().numpy()
    lines = min(count, max_channels)
    cols = min(ncols, n)
    rows = math.ceil(n / cols)
    fig = _figure(3.6 * cols + 0.3, 2.0 * rows + (0.8 if title else 0.2))
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    for i in range(rows * cols):
        ax = axes[i // cols, i % cols]
        if i >= n:
            ax.set_axis_off()
            continue
        ax.axhline(0.0, color="0.55", linewidth=0.8, zorder=0)
        for c in range(lines):
            ax.plot(np.arange(length), values[i, c], color=f"C{c % 10}", linewidth=1.0)
        ax.set_title(names[i], fontsize=9)
        ax.set_xlabel("time step", fontsize=8)
        ax.set_ylabel("value", fontsize=8)
        ax.set_xlim(0, max(length - 1, 1))
        ax.tick_params(labelsize=7)
    if lines > 1:
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color=f"C{c % 10}") for c in range(lines)]
        labels = [f"channel {c}" for c in range(lines)]
        fig.legend(handles, labels, loc="outside right upper", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _to_tensor(figure_to_array(fig, close=False))
