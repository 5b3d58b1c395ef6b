"""Activation grids stay near MAX_PNG_PIXELS (about 2 MB of PNG) whatever the layer (issue 10)."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from featurewatch.core.images import to_uint8
from featurewatch.core.inspect import activation_grid, map_scale
from featurewatch.core.labels import MAX_PNG_PIXELS


def png_bytes(image: torch.Tensor) -> int:
    buf = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buf, "PNG")
    return buf.tell()


def test_large_layers_are_bounded_and_small_ones_untouched() -> None:
    gen = torch.Generator().manual_seed(0)
    for shape in [(4, 64, 56, 56), (4, 64, 112, 112), (4, 512, 7, 7), (4, 256, 14, 14)]:
        maps = torch.relu(torch.randn(shape, generator=gen))
        free = activation_grid(maps, max_channels=512, max_pixels=None, titles=False)
        bare = activation_grid(maps, max_channels=512, titles=False)
        assert free.shape[1] * free.shape[2] > 1.2 * MAX_PNG_PIXELS, shape  # the bound matters
        assert bare.shape[1] * bare.shape[2] <= 1.25 * MAX_PNG_PIXELS, shape  # + padding
        # the title strips above the tiles come on top: light grey and text, cheap in a PNG
        titled = activation_grid(maps, max_channels=512)
        assert titled.shape[1] * titled.shape[2] <= 2 * MAX_PNG_PIXELS, shape
        assert png_bytes(titled) <= 2_000_000, shape
    small = torch.relu(torch.randn(4, 16, 8, 8, generator=gen))
    assert torch.equal(activation_grid(small), activation_grid(small, max_pixels=None))


def test_the_enlargement_is_cut_to_a_whole_factor_before_any_averaging() -> None:
    assert map_scale((4, 16, 8, 8), 32) == 4.0  # 4 096 pixels x 16: far below the bound
    # 100 352 pixels: x 5 (towards 32 px) would be 2.5 MP; x 2 (0.4 MP) fits, x 3 does not
    assert map_scale((4, 512, 7, 7), 32) == 2.0
    assert map_scale((4, 128, 7, 7), 32) == 5.0  # 25 088 pixels x 25 = 0.63 MP: fits
    assert 0 < map_scale((4, 64, 112, 112), 32) < 1.0
    assert map_scale((4, 64, 112, 112), 32, max_pixels=None) == 1.0


def test_nan_survives_the_averaging_as_magenta() -> None:
    maps = torch.ones(4, 64, 112, 112)
    maps[0, 0, :8, :8] = float("nan")
    image = activation_grid(maps, max_channels=64)
    pixels = to_uint8(image).reshape(-1, 3)
    assert (np.all(pixels == [255, 0, 255], axis=1)).any()
