"""Pictures of attribution maps on inputs that are not images: 1-D signals and feature vectors.

An image's map is a heatmap laid over the image; a signal's map is drawn *below* its waveform
(:func:`signal_attribution`): per signal, the waveform (a line per input channel) and, on the same
time axis, the map as a curve over a coloured band, both in "fraction of map's max" (each map
clipped at zero and divided by its own maximum, as :func:`~featurewatch.core.attribution.overlay`
does for images), with a colour bar. A feature vector's map is one value per feature
(:func:`feature_attribution_bars`): per row, horizontal bars of the features with the largest
``|value|``, in the method's own unit (signed: occlusion can be negative where covering a feature
*raises* the score), labelled with the feature's name or index and its input value.

Pure drawing on CPU copies (numpy + matplotlib's object API, no ``pyplot`` state, no display):
each function returns a ``(3, H, W)`` float image in ``[0, 1]``, like
:mod:`featurewatch.core.signals`.

Example:
    >>> maps = saliency(net, x, target=3)  # (N, L) for (N, C, L) signals
    >>> picture = signal_attribution(x, maps, titles=["signal 0", "signal 1"])  # (3, H, W)
    >>> bars = feature_attribution_bars(rows, saliency(mlp, rows, 3), unit="logit per unit")
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from featurewatch.core.images import figure_to_array
from featurewatch.core.validation import check_int

__all__ = ["BAR_UNIT", "feature_attribution_bars", "signal_attribution"]

#: The unit of a signal's map curve and colour bar: each map divided by its own maximum.
BAR_UNIT = "fraction of map's max"
#: Colour of non-finite map values (NaN, Inf): the package's magenta.
_NONFINITE = (1.0, 0.0, 1.0)
_DPI = 100


def _figure(width: float, height: float):  # type: ignore[no-untyped-def] # matplotlib Figure
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=_DPI, layout="constrained")


def _to_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0


def _check_names(name: str, values: Sequence[str] | None, count: int, what: str) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str) or len(values) != count:
        got = "a string" if isinstance(values, str) else f"{len(values)}"
        raise ValueError(f"`{name}` must give one string per {what} ({count}), got {got}")
    return [str(v) for v in values]


def _check_cmap(cmap: str) -> None:
    import matplotlib

    if not isinstance(cmap, str) or cmap not in matplotlib.colormaps:
        raise ValueError(f"`cmap` must be a matplotlib colormap name, got {cmap!r}")


def relative_maps(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maps clipped at zero and divided by their own finite maximum (NaN where not finite), and
    the mask of the non-finite values: the scale of :func:`signal_attribution`."""
    bad = ~np.isfinite(maps)
    heat = np.where(bad, 0.0, np.clip(maps, 0.0, None))
    peak = heat.reshape(heat.shape[0], -1).max(1) if heat.size else np.zeros(0)
    heat = heat / np.maximum(peak, 1e-12)[:, None]
    return np.where(bad, np.nan, heat), bad


def signal_attribution(
    x: torch.Tensor,
    maps: torch.Tensor,
    *,
    titles: Sequence[str] | None = None,
    title: str | None = None,
    cmap: str = "jet",
    max_channels: int = 8,
    ncols: int = 4,
) -> torch.Tensor:
    """Signals with their attribution maps: per signal the waveform above the map.

    Each panel has two rows on one time axis: the signal (a line per input channel, the first
    ``max_channels``; a legend names them when there are several), y axis "value" in the inputs'
    units; below it the map as a black curve over a band coloured by ``cmap``, both in
    :data:`BAR_UNIT` (the map clipped at zero - only evidence *for* the target - and divided by its
    own maximum, so the band compares time steps within a signal, not across signals), with a
    colour bar at the right. Non-finite map values are marked magenta on the band and counted in
    the panel's title; they do not enter the maximum.

    Args:
        x: ``(N, C, L)`` signals (normalized like the model's inputs).
        maps: ``(N, L)`` maps (:func:`~featurewatch.core.attribution.saliency`,
            :func:`~featurewatch.core.attribution.occlusion`,
            :func:`~featurewatch.core.attribution.grad_cam` on signals).
        titles: one title per signal (default ``"signal i"``).
        title: text above all panels (the method, layer, epoch and step).
        cmap: matplotlib colormap of the band.
        max_channels: waveform lines per panel at most.
        ncols: panels per row.

    Returns:
        ``(3, H, W)`` float image in ``[0, 1]``.

    Raises:
        TypeError: if ``x`` or ``maps`` is not a tensor.
        ValueError: if the shapes do not match ``(N, C, L)`` and ``(N, L)``, the titles are not
            one per signal, or ``cmap`` is unknown.

    Example:
        >>> signal_attribution(torch.randn(2, 1, 64), torch.rand(2, 64)).shape[0]
        3
    """
    if not isinstance(x, torch.Tensor) or not isinstance(maps, torch.Tensor):
        bad = x if not isinstance(x, torch.Tensor) else maps
        raise TypeError(f"`x` and `maps` must be tensors, got {type(bad).__name__}")
    if x.dim() != 3 or x.numel() == 0:
        raise ValueError(f"`x` must be non-empty (N, C, L) signals, got shape {tuple(x.shape)}")
    if maps.shape != (x.shape[0], x.shape[2]):
        raise ValueError(
            f"`maps` must be (N, L) = {(x.shape[0], x.shape[2])} for signals of shape "
            f"{tuple(x.shape)}, got shape {tuple(maps.shape)}"
        )
    check_int("max_channels", max_channels)
    check_int("ncols", ncols)
    _check_cmap(cmap)
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    n, count, length = x.shape
    names = _check_names("titles", titles, n, "signal") or [f"signal {i}" for i in range(n)]
    values = x.detach().float().cpu().numpy()
    heat, bad = relative_maps(maps.detach().float().cpu().numpy())
    colours = matplotlib.colormaps[cmap].with_extremes(bad=_NONFINITE)
    lines = min(count, max_channels)
    cols = min(ncols, n)
    rows = math.ceil(n / cols)
    fig = _figure(3.9 * cols + 0.9, 3.3 * rows + (0.6 if title else 0.2))
    axes = fig.subplots(2 * rows, cols, squeeze=False, height_ratios=[3, 2] * rows)
    steps = np.arange(length)
    band_axes = []
    for i in range(rows * cols):
        wave, band = axes[2 * (i // cols), i % cols], axes[2 * (i // cols) + 1, i % cols]
        if i >= n:
            wave.set_axis_off()
            band.set_axis_off()
            continue
        wave.set_xlim(-0.5, length - 0.5)
        wave.tick_params(labelbottom=False)
        wave.axhline(0.0, color="0.6", linewidth=0.7, zorder=0)
        for c in range(lines):
            wave.plot(steps, values[i, c], color=f"C{c % 10}", linewidth=1.1)
        nonfinite = int(bad[i].sum())
        wave.set_title(names[i] + (f" ({nonfinite} NaN/Inf)" if nonfinite else ""), fontsize=9)
        wave.set_ylabel("value", fontsize=8)
        wave.tick_params(labelsize=7)
        band.imshow(
            np.ma.masked_invalid(heat[i][None]),
            aspect="auto",
            cmap=colours,
            vmin=0.0,
            vmax=1.0,
            extent=(-0.5, length - 0.5, 0.0, 1.0),
            interpolation="nearest",
            alpha=0.85,
        )
        band.plot(steps, np.nan_to_num(heat[i], nan=0.0), color="black", linewidth=1.2)
        band.set_ylim(0.0, 1.05)
        band.set_xlim(-0.5, length - 0.5)
        band.set_yticks([0.0, 0.5, 1.0])
        band.set_ylabel("attribution\n(fraction of max)", fontsize=8)
        band.set_xlabel("time step", fontsize=8)
        band.tick_params(labelsize=7)
        band_axes.append(band)
    bar = fig.colorbar(
        ScalarMappable(Normalize(0.0, 1.0), cmap), ax=band_axes, fraction=0.04, pad=0.01
    )
    bar.set_label(BAR_UNIT, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    if lines > 1:
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color=f"C{c % 10}") for c in range(lines)]
        labels = [f"channel {c}" for c in range(lines)] + (
            [f"... {count} in all"] if count > lines else []
        )
        handles += [Line2D([], [], color="none")] * (count > lines)
        fig.legend(handles, labels, loc="outside upper right", fontsize=8, title="input")
    if title:
        fig.suptitle(title, fontsize=10)
    return _to_tensor(figure_to_array(fig, close=False))


def feature_attribution_bars(
    x: torch.Tensor,
    maps: torch.Tensor,
    *,
    unit: str,
    feature_names: Sequence[str] | None = None,
    max_features: int = 16,
    titles: Sequence[str] | None = None,
    title: str | None = None,
    ncols: int = 4,
) -> torch.Tensor:
    """Feature vectors with their attribution maps: per row, horizontal bars per feature.

    Per row the ``max_features`` features with the largest ``|value|`` are drawn, the largest at
    the top, in the map's own unit (the x axis says which): orange bars for evidence *for* the
    target, blue for against (occlusion: covering the feature raised the score). Each bar is
    labelled with the feature's name (or ``"feature k"``) and the row's input value of it; the
    panel's title says how many features there are when not all are drawn. Non-finite values
    are drawn as magenta bars of full length and listed first.

    Args:
        x: ``(N, F)`` feature vectors (normalized like the model's inputs).
        maps: ``(N, F)`` maps (:func:`~featurewatch.core.attribution.saliency`,
            :func:`~featurewatch.core.attribution.occlusion` on feature vectors).
        unit: the maps' unit, for the x axis (e.g. ``"logit per input unit"``).
        feature_names: one name per feature (default ``"feature k"``).
        max_features: bars per row at most.
        titles: one title per row (default ``"row i"``).
        title: text above all panels.
        ncols: panels per row.

    Returns:
        ``(3, H, W)`` float image in ``[0, 1]``.

    Raises:
        TypeError: if ``x`` or ``maps`` is not a tensor.
        ValueError: if the shapes are not both ``(N, F)``, or names or titles do not match.

    Example:
        >>> feature_attribution_bars(torch.rand(2, 5), torch.rand(2, 5), unit="logit").shape[0]
        3
    """
    if not isinstance(x, torch.Tensor) or not isinstance(maps, torch.Tensor):
        bad = x if not isinstance(x, torch.Tensor) else maps
        raise TypeError(f"`x` and `maps` must be tensors, got {type(bad).__name__}")
    if x.dim() != 2 or x.numel() == 0 or maps.shape != x.shape:
        raise ValueError(
            f"`x` and `maps` must be non-empty (N, F) tensors of one shape, got {tuple(x.shape)} "
            f"and {tuple(maps.shape)}"
        )
    check_int("max_features", max_features)
    check_int("ncols", ncols)
    n, features = x.shape
    labels = _check_names("feature_names", feature_names, features, "feature") or [
        f"feature {k}" for k in range(features)
    ]
    names = _check_names("titles", titles, n, "row") or [f"row {i}" for i in range(n)]
    inputs = x.detach().float().cpu().numpy()
    values = maps.detach().float().cpu().numpy()
    shown = min(features, max_features)
    cols = min(ncols, n)
    rows = math.ceil(n / cols)
    fig = _figure(3.9 * cols + 0.4, (0.22 * shown + 1.1) * rows + (0.6 if title else 0.2))
    axes = fig.subplots(rows, cols, squeeze=False)
    for i in range(rows * cols):
        ax = axes[i // cols, i % cols]
        if i >= n:
            ax.set_axis_off()
            continue
        v = values[i]
        finite = np.isfinite(v)
        order = np.argsort(np.where(finite, -np.abs(v), -np.inf), kind="stable")[:shown]
        peak = float(np.abs(v[finite]).max()) if finite.any() else 1.0
        peak = peak if peak > 0 else 1.0
        lengths = np.where(finite[order], v[order], peak)
        colour = [
            _NONFINITE if not finite[k] else ("tab:orange" if v[k] >= 0 else "tab:blue")
            for k in order
        ]
        ypos = np.arange(shown)[::-1]  # the largest at the top
        ax.barh(ypos, lengths, color=colour, height=0.75)
        ax.axvline(0.0, color="0.3", linewidth=0.8)
        ax.set_yticks(ypos, [f"{labels[k]} (x={inputs[i, k]:.3g})" for k in order])
        ax.set_ylim(-0.6, shown - 0.4)
        lo = min(0.0, float(lengths.min()))
        hi = max(0.0, float(lengths.max()))
        pad = 0.05 * max(hi - lo, 1e-12)
        ax.set_xlim(lo - pad if lo < 0 else 0.0, hi + pad)
        ax.set_xlabel(f"attribution ({unit})", fontsize=8)
        ax.tick_params(labelsize=7)
        what = f"top {shown} of {features} features by |value|" if shown < features else ""
        nonfinite = int((~finite).sum())
        ax.set_title(
            names[i]
            + (f"\n{what}" if what else "")
            + (f" ({nonfinite} NaN/Inf)" if nonfinite else ""),
            fontsize=9,
        )
    from matplotlib.patches import Patch

    signs = [Patch(color="tab:orange"), Patch(color="tab:blue")]
    fig.legend(signs, ["for the target", "against it"], loc="outside lower center", ncols=2)
    if title:
        fig.suptitle(title, fontsize=10)
    return _to_tensor(figure_to_array(fig, close=False))
