"""Colour maps and overlays show non-finite values as such: magenta, and only where they are."""

from __future__ import annotations

import matplotlib
import numpy as np
import torch

from featurewatch.core.attribution import overlay
from featurewatch.core.images import NONFINITE_RGB, colorize, nonfinite_counts, nonfinite_note

MAGENTA = torch.tensor(NONFINITE_RGB)


def test_colorize_paints_nan_and_inf_magenta_and_the_rest_with_the_colormap() -> None:
    values = torch.rand(2, 5, 6, generator=torch.Generator().manual_seed(0))
    sick = values.clone()
    sick[1, 2, 3] = float("nan")
    sick[1, 0, 0] = float("inf")
    sick[0, 4, 5] = -float("inf")
    bad = ~torch.isfinite(sick)
    out = colorize(sick, "viridis")
    assert out.shape == (2, 3, 5, 6)
    assert torch.equal(out.permute(0, 2, 3, 1)[bad], MAGENTA.expand(3, 3))
    # the finite pixels are exactly what they are without the bad ones, and viridis's colours
    healthy = colorize(values, "viridis")
    assert torch.equal(out.permute(0, 2, 3, 1)[~bad], healthy.permute(0, 2, 3, 1)[~bad])
    lut = torch.tensor(matplotlib.colormaps["viridis"](np.linspace(0, 1, 256))[:, :3]).float()
    assert torch.equal(healthy[0, :, 0, 0], lut[int((values[0, 0, 0] * 255).round())])
    for cmap in ("viridis", "jet", "inferno", "magma"):  # magenta is no colour of these maps
        table = matplotlib.colormaps[cmap](np.linspace(0, 1, 256))[:, :3]
        assert np.abs(table - np.array(NONFINITE_RGB)).sum(1).min() > 0.3, cmap


def test_nonfinite_counts_and_caption_note() -> None:
    x = torch.zeros(3, 2, 4)
    x[1, 0, 0] = float("nan")
    x[1, 1, 3] = float("inf")
    x[2, 0, 1] = -float("inf")
    assert nonfinite_counts(x) == [0, 2, 1]
    assert nonfinite_note(nonfinite_counts(x), 8, "map") == (
        "; non-finite values (NaN/Inf, shown magenta): map #1 2 of 8, map #2 1 of 8"
    )
    assert nonfinite_note([0, 0], 8) == ""


def test_overlay_marks_nan_pixels_and_scales_the_finite_part_as_without_them() -> None:
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(2, 1, 8, 8, generator=gen)
    maps = torch.rand(2, 8, 8, generator=gen)
    sick = maps.clone()
    sick[0, 2:4, 5] = float("nan")
    sick[1, 7, 7] = -float("inf")  # also marked: clamping at zero must not hide it
    bad = ~torch.isfinite(sick)
    out = overlay(images, sick)
    assert torch.equal(out.permute(0, 2, 3, 1)[bad], MAGENTA.expand(int(bad.sum()), 3))
    # the map's finite part is scaled by its own finite maximum, as if the bad pixels were zero
    reference = overlay(images, torch.where(bad, 0.0, sick))
    assert torch.equal(out.permute(0, 2, 3, 1)[~bad], reference.permute(0, 2, 3, 1)[~bad])
    # an all-NaN map costs its own tile only
    all_nan = maps.clone()
    all_nan[1] = float("nan")
    out = overlay(images, all_nan)
    assert torch.equal(out[1], MAGENTA.reshape(3, 1, 1).expand(3, 8, 8))
    assert torch.equal(out[0], overlay(images, maps)[0])
