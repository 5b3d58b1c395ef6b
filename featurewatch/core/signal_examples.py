"""The picture of a 1-D layer's dataset examples: per channel, the top signals as small waveform
plots with the receptive-field interval shaded.

Zeiler & Fergus (2014) show an image channel by its top images with the patch the unit can see;
for a net over signals (audio, sensor series) the input is a waveform and the patch an interval of
samples, so each example is a small plot: the signal (a line per input channel), the interval the
maximal unit can see shaded, the pool index and the activation value in the plot's title, and -
when given - the projection of the activation back to the samples as a second curve (scaled into
the plot, zero on the zero line). Rows are titled like :func:`~featurewatch.core.drawing.
examples_grid`'s (:func:`~featurewatch.core.drawing.titled_rows`), so a 1-D layer's picture reads
like a 2-D one.

Pure drawing on CPU copies (numpy + matplotlib's object API, no ``pyplot`` state, no display):
what to show comes from :func:`~featurewatch.core.examples.top_examples` and
:func:`~featurewatch.core.receptive_field.receptive_intervals`; each function returns ``(3, H, W)``
float images in ``[0, 1]``.

Example:
    >>> top = top_examples(net, pool, "features.6", range(4), k=6)      # pool: (N, 1, L)
    >>> found = receptive_intervals(net, "features.6", pool.shape[1:], top.positions.flatten(0, 1))
    >>> rows = [found[r * top.k : (r + 1) * top.k] for r in range(4)]
    >>> picture = signal_examples_grid(pool, top, intervals=rows)        # (3, H, W)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from featurewatch.core.drawing import titled_rows
from featurewatch.core.images import figure_to_array
from featurewatch.core.receptive_field import Interval

if TYPE_CHECKING:  # examples.py documents this module: no import cycle at run time
    from featurewatch.core.examples import TopExamples

__all__ = ["signal_examples_grid", "signal_tiles"]

_DPI = 100
_SHADE = "#d62728"  # the receptive-field interval: matplotlib's red, as the 2-D outline
_PROJECTION = "#ff7f0e"  # matplotlib's C1
_LINES = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")  # C0, C2, C4...
_TILE = (1.6, 1.05)  # inches per plot (160 x 105 px)
_LEFT, _RIGHT = 0.42, 0.08  # inches of margin: the y tick labels on the left
_BOTTOM, _TOP = 0.22, 0.2  # inches: x tick labels below, the plot title above
_GAP = 0.12  # inches between plots


def _check_signals(name: str, value: Any) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"`{name}` must be an (N, C, L) tensor, got {type(value).__name__}")
    if value.dim() != 3 or value.shape[0] == 0 or value.shape[2] == 0:
        raise ValueError(
            f"`{name}` must be a non-empty (N, C, L) batch of 1-D signals, got shape "
            f"{tuple(value.shape)}"
        )
    return value


def _limits(values: np.ndarray) -> tuple[float, float]:
    """One y-range for every plot (finite values only), with 8 % headroom."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return -1.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    if hi - lo < 1e-12:
        lo, hi = lo - 1.0, hi + 1.0
    pad = 0.08 * (hi - lo)
    return lo - pad, hi + pad


def _draw_signal(ax: Any, signal: np.ndarray, ylim: tuple[float, float], lw: float = 1.0) -> None:
    """A ``(C, L)`` signal: one line per channel (at most six told apart by colour)."""
    t = np.arange(signal.shape[1])
    for c, line in enumerate(signal[: len(_LINES)]):
        ax.plot(t, line, color=_LINES[c], lw=lw)
    ax.set_xlim(-0.5, signal.shape[1] - 0.5)
    ax.set_ylim(*ylim)
    if ylim[0] < 0 < ylim[1]:
        ax.axhline(0.0, color="0.75", lw=0.5, zorder=0)


def _row_figure(
    signals: np.ndarray,
    titles: list[str],
    intervals: Sequence[Interval] | None,
    projections: np.ndarray | None,
    ylim: tuple[float, float],
) -> torch.Tensor:
    """One row: ``k`` plots side by side at fixed margins (so every row's columns line up)."""
    from matplotlib.figure import Figure

    k = len(signals)
    width = _LEFT + _RIGHT + k * _TILE[0] + (k - 1) * _GAP
    height = _BOTTOM + _TOP + _TILE[1]
    fig = Figure(figsize=(width, height), dpi=_DPI)
    fig.subplots_adjust(
        left=_LEFT / width,
        right=1 - _RIGHT / width,
        bottom=_BOTTOM / height,
        top=1 - _TOP / height,
        wspace=_GAP / _TILE[0],
    )
    axes = fig.subplots(1, k, squeeze=False)[0]
    half = max(abs(ylim[0]), abs(ylim[1]))
    for j, ax in enumerate(axes):
        if intervals is not None:
            start, stop = intervals[j]
            ax.axvspan(start - 0.5, stop - 0.5, color=_SHADE, alpha=0.16, lw=0, zorder=0)
            for edge in (start - 0.5, stop - 0.5):
                ax.axvline(edge, color=_SHADE, lw=0.8, alpha=0.8, zorder=0)
        _draw_signal(ax, signals[j], ylim)
        if projections is not None:
            p = np.nan_to_num(projections[j].sum(0), nan=0.0, posinf=0.0, neginf=0.0)
            scale = float(np.abs(p).max())
            if scale > 0:
                ax.plot(np.arange(p.shape[0]), p * (0.9 * half / scale), color=_PROJECTION, lw=0.9)
        ax.set_title(titles[j], fontsize=7.5, pad=2)
        ax.tick_params(labelsize=6, length=2, pad=1)
        if j:
            ax.tick_params(labelleft=False)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    return torch.from_numpy(figure_to_array(fig)).permute(2, 0, 1).float() / 255.0


def signal_examples_grid(
    signals: torch.Tensor,
    top: TopExamples,
    *,
    intervals: Sequence[Sequence[Interval]] | None = None,
    projections: torch.Tensor | None = None,
    row_titles: Sequence[str] | None = None,
    header: str | None = None,
) -> torch.Tensor:
    """One picture of a 1-D layer's dataset examples: a row of waveform plots per channel.

    Each row shows the ``k`` top signals of its channel, highest activation first, each plotted
    over its samples (a line per input channel; all plots of the picture share one y-range, so
    amplitudes compare) with its pool index and activation value as the plot's title (``#12 ·
    4.1``, and the interval ``[40, 54)`` when given); when ``intervals`` are given the receptive
    field of the maximal unit is shaded red, and when ``projections`` are given the projection
    (summed over input channels) is drawn in orange, scaled so that its largest magnitude reaches
    90 % of the plot's half-height.

    Args:
        signals: ``(N, C, L)`` pool the examples index into.
        top: from :func:`~featurewatch.core.examples.top_examples` on a 1-D layer.
        intervals: ``intervals[r][j]`` the receptive field ``(start, stop)`` of example ``j`` of
            row ``r``, from :func:`~featurewatch.core.receptive_field.receptive_intervals`.
        projections: ``(rows, k, C, L)`` from :func:`~featurewatch.core.projection.project`.
        row_titles: one line per row, above its plots (e.g. ``"ch 5 · top 6: #12 (4.1), ..."``);
            ``None``: no strips.
        header: a line across the top, e.g. ``"features.6 · epoch 3 · step 240"``.

    Returns:
        ``(3, H, W)`` image in ``[0, 1]``.

    Raises:
        TypeError, ValueError: ``signals`` not an ``(N, C, L)`` tensor, or ``intervals``,
            ``projections`` or ``row_titles`` not one per row and example.
    """
    _check_signals("signals", signals)
    rows, k = top.indices.shape
    if row_titles is not None and (isinstance(row_titles, str) or len(row_titles) != rows):
        raise ValueError(f"`row_titles` must hold one title per row ({rows}), got {row_titles!r}")
    if intervals is not None and (len(intervals) != rows or any(len(r) != k for r in intervals)):
        raise ValueError(f"`intervals` must hold {rows} rows of {k} (start, stop) intervals")
    length = int(signals.shape[2])
    if projections is not None and (
        tuple(projections.shape[:2]) != (rows, k) or projections.shape[-1] != length
    ):
        raise ValueError(
            f"`projections` must be ({rows}, {k}, C, {length}), got {tuple(projections.shape)}"
        )
    picked = signals[top.indices.flatten()].detach().double().cpu().numpy()
    picked = picked.reshape(rows, k, *signals.shape[1:])
    proj = None
    if projections is not None:
        proj = projections.detach().double().cpu().numpy()
    ylim = _limits(picked)
    values = top.values.tolist()
    row_images = []
    for r in range(rows):
        titles = [f"#{int(i)} · {v:.3g}" for i, v in zip(top.indices[r].tolist(), values[r])]
        if intervals is not None:
            titles = [f"{t} · [{a}, {b})" for t, (a, b) in zip(titles, intervals[r])]
        row_images.append(
            _row_figure(
                picked[r],
                titles,
                intervals[r] if intervals is not None else None,
                proj[r] if proj is not None else None,
                ylim,
            )
        )
    return titled_rows(row_images, row_titles=row_titles, header=header)


def signal_tiles(
    signals: torch.Tensor,
    intervals: Sequence[Interval] | None = None,
    *,
    size: tuple[int, int] = (64, 96),
) -> torch.Tensor:
    """Small, unlabelled waveform thumbnails, one per signal (e.g. for a filmstrip of the top
    signal of each channel over training).

    Args:
        signals: ``(N, C, L)`` signals; each tile has its own y-range.
        intervals: one ``(start, stop)`` per signal to shade, or ``None``.
        size: ``(height, width)`` of a tile in pixels.

    Returns:
        ``(N, 3, height, width)`` tiles in ``[0, 1]``.
    """
    from matplotlib.figure import Figure

    _check_signals("signals", signals)
    if intervals is not None and len(intervals) != signals.shape[0]:
        raise ValueError(f"`intervals` must hold one per signal ({signals.shape[0]})")
    data = signals.detach().double().cpu().numpy()
    tiles = []
    for n, signal in enumerate(data):
        fig = Figure(figsize=(size[1] / _DPI, size[0] / _DPI), dpi=_DPI)
        ax = fig.add_axes((0.02, 0.04, 0.96, 0.92))
        if intervals is not None:
            start, stop = intervals[n]
            ax.axvspan(start - 0.5, stop - 0.5, color=_SHADE, alpha=0.2, lw=0, zorder=0)
        _draw_signal(ax, signal, _limits(signal), lw=0.8)
        ax.set_axis_off()
        tiles.append(torch.from_numpy(figure_to_array(fig)).permute(2, 0, 1).float() / 255.0)
    return torch.stack(tiles)
