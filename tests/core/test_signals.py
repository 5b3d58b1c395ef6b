"""core/signals.py: Conv1d filters as curves, (N, C, L) maps as heatmaps, signals as waveforms.

Pictures are checked by property: the colour of a line or cell is where the values put it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featurewatch.core.signals import filter_curves, signal_curves, signal_heatmaps

C0 = np.array([31, 119, 180])  # matplotlib's first line colour


def pixels(image: torch.Tensor) -> np.ndarray:
    assert image.dim() == 3 and image.shape[0] == 3
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    return (image.permute(1, 2, 0).numpy() * 255).round().astype(int)


def near(px: np.ndarray, colour: np.ndarray, tol: int = 40) -> np.ndarray:
    return np.abs(px - colour).sum(-1) < tol


def test_filter_curves_draw_each_filter_on_its_side_of_the_zero_line() -> None:
    """Filter 0 is positive, filter 1 negative: with one shared y-scale and a 1 x 2 layout, the
    blue curve sits in the upper half of the left plot and the lower half of the right one."""
    weight = torch.stack([torch.full((1, 7), 0.8), torch.full((1, 7), -0.8)])  # (2, 1, 7)
    px = pixels(filter_curves(weight, ncols=2))
    ys, xs = np.nonzero(near(px, C0))
    left, right = xs < px.shape[1] / 2, xs >= px.shape[1] / 2
    assert left.sum() > 50 and right.sum() > 50
    assert ys[left].mean() < ys[right].mean() - 50  # rows grow downwards


def test_filter_curves_one_line_per_input_channel_and_a_cap_on_filters() -> None:
    torch.manual_seed(0)
    one = pixels(filter_curves(torch.randn(4, 1, 9)))
    three = pixels(filter_curves(torch.randn(4, 3, 9)))
    orange, green = np.array([255, 127, 14]), np.array([44, 160, 44])
    assert not near(one, orange).any()
    assert near(three, orange).sum() > 50 and near(three, green).sum() > 50
    capped = filter_curves(torch.randn(100, 1, 5), max_filters=4)
    full = filter_curves(torch.randn(9, 1, 5))
    assert capped.shape[1] < full.shape[1]  # 2 x 2 plots, not 3 x 3


def test_filter_curves_refuse_what_is_not_a_conv1d_weight() -> None:
    with pytest.raises(ValueError, match=r"\(out, in, k\).*\(8, 1, 3, 3\)"):
        filter_curves(torch.zeros(8, 1, 3, 3))
    with pytest.raises(TypeError, match="tensor"):
        filter_curves([[0.0]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_filters"):
        filter_curves(torch.zeros(2, 1, 3), max_filters=0)


def test_heatmap_cells_follow_the_values_and_nan_is_magenta() -> None:
    """One signal, 2 channels x 4 steps: channel 1 is hot (yellow end of viridis) where it is
    largest, channel 0 is zero (dark purple); one NaN cell is magenta."""
    maps = torch.zeros(1, 2, 4)
    maps[0, 1] = torch.tensor([0.0, 0.0, 5.0, 5.0])
    px = pixels(signal_heatmaps(maps))
    yellow, purple = np.array([253, 231, 37]), np.array([68, 1, 84])
    assert near(px, yellow).sum() > 200 and near(px, purple).sum() > 200
    ys, _ = np.nonzero(near(px, yellow))
    yp, _ = np.nonzero(near(px, purple))
    assert ys.mean() > np.median(yp) - 5  # channel 1 is the lower row (origin upper)
    assert not near(px, np.array([255, 0, 255]), 10).any()
    maps[0, 0, 1] = float("nan")
    with_nan = pixels(signal_heatmaps(maps))
    assert near(with_nan, np.array([255, 0, 255]), 10).sum() > 100
    assert near(with_nan, yellow).sum() > 200  # the NaN does not spoil the finite scale


def test_heatmaps_one_panel_per_signal_and_checked_arguments() -> None:
    one = signal_heatmaps(torch.rand(1, 4, 20))
    three = signal_heatmaps(torch.rand(3, 4, 20))
    assert three.shape[2] > 2.5 * one.shape[2]
    with pytest.raises(ValueError, match=r"\(N, C, L\).*\(2, 4, 5, 5\)"):
        signal_heatmaps(torch.rand(2, 4, 5, 5))
    with pytest.raises(ValueError, match=r"valid: 0\.\.3"):
        signal_heatmaps(torch.rand(2, 4, 5), channels=[1, 4])
    with pytest.raises(ValueError, match="one title per signal"):
        signal_heatmaps(torch.rand(2, 4, 5), titles=["a"])
    with pytest.raises(ValueError, match="colormap"):
        signal_heatmaps(torch.rand(2, 4, 5), cmap="nope")


def test_signal_curves_draw_the_waveform() -> None:
    x = torch.zeros(1, 1, 50)
    x[0, 0, 25:] = 1.0  # a step: the right half of the curve is higher
    px = pixels(signal_curves(x))
    ys, xs = np.nonzero(near(px, C0))
    mid = np.median(xs)
    assert ys[xs > mid + 20].mean() < ys[xs < mid - 20].mean() - 30
    with pytest.raises(ValueError, match=r"\(N, C, L\)"):
        signal_curves(torch.zeros(2, 5))
