"""Labels drawn into images: titles above tiles, nearest upscaling, colour bars, size bounds."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from featurewatch.core.images import NONFINITE_RGB, colorize, columns_for, to_uint8
from featurewatch.core.labels import (
    ELLIPSIS,
    MAX_PNG_BYTES,
    MAX_PNG_PIXELS,
    bound_size,
    colour_bar,
    label_font,
    labelled_grid,
    shorten,
    text_band,
    with_colour_bar,
)

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
DARK = 0.5  # text is near black; tiles here are random, strips light grey


def _digits(n: int = 10, size: int = 8, channels: int = 1) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(n + size))


def _cells(picture: torch.Tensor, n: int, tile: tuple[int, int], pad: int = 2, top: int = 0):
    """(strip, tile) regions of each cell, from the documented layout."""
    cols = columns_for(n)
    rows = -(-n // cols)
    th, tw = tile
    cell_h = (picture.shape[1] - top - pad) // rows - pad
    strip = cell_h - th
    assert strip > 0
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = top + pad + r * (cell_h + pad), pad + c * (tw + pad)
        yield picture[:, y : y + strip, x : x + tw], picture[:, y + strip : y + cell_h, x : x + tw]


def _nearest(image: torch.Tensor, k: int) -> torch.Tensor:
    """Oracle: output pixel (i, j) is source pixel (i // k, j // k)."""
    h, w = image.shape[-2:]
    rows = torch.arange(h * k) // k
    cols = torch.arange(w * k) // k
    return image[..., rows[:, None], cols[None, :]]


def test_every_tile_has_its_title_drawn_above_it_and_its_pixels_exactly_upscaled() -> None:
    x = _digits()
    picture = labelled_grid(x, [f"{d} · {NAMES[d]}" for d in range(10)])
    assert picture.shape[0] == 3
    cells = list(_cells(picture, 10, (64, 64)))
    assert len(cells) == 10
    for i, (strip, tile) in enumerate(cells):
        assert (strip.min(dim=0).values < DARK).sum() > 20, f"no text in the strip of tile {i}"
        assert torch.equal(tile, _nearest(x[i], 8).expand(3, -1, -1)), f"tile {i} was altered"
    # different titles draw different strips; the same title the same strip
    assert not torch.equal(cells[0][0], cells[1][0])
    again = labelled_grid(x[:2], ["0 · zero", "0 · zero"], ncol=2)
    assert torch.equal(*[s for s, _ in _cells(again, 2, (64, 64))]) and torch.equal(
        next(_cells(again, 2, (64, 64)))[0], cells[0][0]
    )


def test_nearest_upscaling_is_by_an_integer_factor_and_only_below_min_tile() -> None:
    x = torch.rand(3, 3, 5, 7, generator=torch.Generator().manual_seed(1))
    picture = labelled_grid(x, ["a", "b", "c"], min_tile=20, pad=0)
    k = 3  # ceil(20 / 7)
    cols = columns_for(3)
    assert picture.shape[2] == cols * 7 * k
    sources = set(x.flatten().tolist())
    for i, (_, tile) in enumerate(_cells(picture, 3, (5 * k, 7 * k), pad=0)):
        assert set(tile.flatten().tolist()) <= sources  # every shown pixel is a source pixel
        assert torch.equal(tile, _nearest(x[i], k))
    big = torch.rand(2, 3, 70, 70, generator=torch.Generator().manual_seed(2))
    kept = labelled_grid(big, ["a", "b"], min_tile=64, pad=0)
    assert kept.shape[2] == 2 * 70
    assert all(torch.equal(t, big[i]) for i, (_, t) in enumerate(_cells(kept, 2, (70, 70), 0)))


def test_shorten_drops_whole_words_for_an_ellipsis() -> None:
    font = label_font(10)
    assert shorten("ch 12", font, 200) == "ch 12"
    full = font.getlength("7 · seven")
    assert shorten("7 · seven", font, int(full) - 1) == "7 " + ELLIPSIS  # the dangling "·" goes
    title = "9 · ostrich, Struthio camelus and a very long tail of words"
    words = title.split()
    for width in range(30, 400, 7):
        short = shorten(title, font, width)
        assert font.getlength(short) <= width
        if short != title:
            kept = short.removesuffix(" " + ELLIPSIS).split()
            assert short.endswith(ELLIPSIS) and kept == words[: len(kept)], short
    assert shorten("supercalifragilistic", font, 40).endswith(ELLIPSIS)  # last resort only


def test_a_long_title_is_shortened_at_a_word_and_stays_inside_its_strip() -> None:
    x = _digits(1)
    title = "9 · ostrich, Struthio camelus and a very long tail of words"
    ((strip, _),) = _cells(labelled_grid(x, [title]), 1, (64, 64))
    dark = strip.min(dim=0).values < DARK
    assert dark.any()
    assert not dark[:, :2].any() and not dark[:, -2:].any()  # no glyph touches the strip's edge
    assert not dark[0].any() and not dark[-1].any()
    # the long title is drawn as its shortened form: whole words and a visible ellipsis
    expected = shorten(title, label_font(10), 64 - 2 * 3)  # 64 px tiles: 10 px font, 3 px margins
    assert expected != title and expected.endswith(" " + ELLIPSIS)

    def strip_of(text: str) -> torch.Tensor:
        return next(_cells(labelled_grid(x, [text]), 1, (64, 64)))[0]

    assert torch.equal(strip, strip_of(expected))
    assert not torch.equal(strip, strip_of(expected.removesuffix(ELLIPSIS).strip()))


def test_the_header_spans_the_top_and_widens_a_narrow_grid() -> None:
    x = _digits(4)
    plain = labelled_grid(x, list("abcd"))
    headed = labelled_grid(x, list("abcd"), header="features.5 · epoch 3 · step 240")
    top = headed.shape[1] - plain.shape[1]
    assert top > 10
    assert (headed[:, :top].min(dim=0).values < DARK).any()
    assert torch.equal(headed[:, top:, : plain.shape[2]], plain)  # the grid below is unchanged
    one = labelled_grid(x[:1], ["ch 0"], header="features.layer4.1.conv2 · epoch 3 · step 240")
    assert one.shape[2] > 64 + 4 + 150  # the header is not cut to one tile's width


def test_nonfinite_pixels_do_not_raise_and_are_painted_magenta() -> None:
    x = _digits(3, channels=3)
    x[0, :, 2, 3] = float("nan")
    x[1, 1, 0, 0] = float("inf")
    picture = labelled_grid(x, ["a", "b", "c"], header="nan")
    assert torch.isfinite(picture).all()
    top = picture.shape[1] - labelled_grid(x, ["a", "b", "c"]).shape[1]
    (_, t0), (_, t1), (_, t2) = _cells(picture, 3, (64, 64), top=top)
    magenta = torch.tensor(NONFINITE_RGB)
    assert torch.equal(t0[:, 2 * 8 + 3, 3 * 8 + 4], magenta)
    assert torch.equal(t1[:, 0, 0], magenta)
    assert torch.equal(t2, _nearest(x[2], 8))
    to_uint8(picture)  # and it converts without garbage


def _gradient(bar: torch.Tensor) -> tuple[int, int, int]:
    """(first row, last row, column) of the gradient: the leftmost non-white column."""
    coloured = (bar < 1.0).any(dim=0)
    col = int(coloured.any(dim=0).nonzero()[0])
    rows = coloured[:, col].nonzero().flatten()
    assert torch.equal(rows, torch.arange(int(rows[0]), int(rows[-1]) + 1))  # one run
    return int(rows[0]), int(rows[-1]), col


@pytest.mark.parametrize("cmap", ["inferno", "viridis", "jet"])
def test_the_colour_bar_gradient_is_colorize_of_a_linspace(cmap: str) -> None:
    bar = colour_bar(cmap, -0.5, 2.0, height=160, unit="|grad| (normalized)")
    assert bar.shape[:2] == (3, 160)
    first, last, col = _gradient(bar)
    n = last - first + 1
    assert n > 120
    expected = colorize(torch.linspace(1.0, 0.0, n).reshape(1, n, 1), cmap)[0, :, :, 0]
    assert torch.equal(bar[:, first : last + 1, col], expected)  # vmax on top, exactly colorize's
    assert torch.equal(bar[:, first : last + 1, col + 13], expected)  # the band is 14 px wide
    right = bar[:, :, col + 14 :]
    assert (right.min(dim=0).values < DARK).sum() > 100  # ticks, values and the unit are drawn
    other = colour_bar(cmap, -0.5, 2.0, height=160, unit="activation")
    assert not torch.equal(other, bar)  # the unit is really drawn


def test_colour_bar_rejects_bad_limits_and_unknown_colormaps() -> None:
    with pytest.raises(ValueError, match="vmin <= vmax"):
        colour_bar("viridis", 1.0, 0.0, height=64, unit="x")
    with pytest.raises(ValueError, match="vmin <= vmax"):
        colour_bar("viridis", 0.0, float("nan"), height=64, unit="x")
    with pytest.raises(ValueError, match="unknown colormap 'viridiss'"):
        colour_bar("viridiss", 0.0, 1.0, height=64, unit="x")
    flat = colour_bar("magma", 2.0, 2.0, height=64, unit="constant")  # one value: no failure
    assert flat.shape[:2] == (3, 64)


def test_with_colour_bar_appends_the_bar_at_the_same_height() -> None:
    heat = colorize(torch.rand(1, 96, 80, generator=torch.Generator().manual_seed(3)), "inferno")[0]
    out = with_colour_bar(heat, "inferno", 0.0, 1.0, "|grad| (normalized)")
    bar = colour_bar("inferno", 0.0, 1.0, height=96, unit="|grad| (normalized)")
    assert out.shape == (3, 96, 80 + bar.shape[2])
    assert torch.equal(out[:, :, :80], heat) and torch.equal(out[:, :, 80:], bar)
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        with_colour_bar(heat[None], "inferno", 0.0, 1.0, "x")


def test_bound_size_meets_the_budget_keeps_the_aspect_ratio_and_never_upscales() -> None:
    small = torch.rand(3, 100, 50)
    same, factor = bound_size(small)
    assert same is small and factor == 1.0
    for h, w, budget in [(1822, 1822, MAX_PNG_PIXELS), (300, 3000, 90_000), (999, 401, 10_007)]:
        out, factor = bound_size(torch.rand(3, h, w), budget)
        oh, ow = out.shape[-2:]
        assert oh * ow <= budget and 0 < factor < 1
        assert oh * ow > 0.97 * budget  # the budget is used, not wasted
        assert abs(ow / oh - w / h) <= (w / h) * (1 / oh + 1 / ow)  # within a pixel of rounding
        assert (oh, ow) == (int(h * factor + 1e-9), int(w * factor + 1e-9))
    pattern = torch.rand(1, 6, 6, generator=torch.Generator().manual_seed(6))
    out, factor = bound_size(pattern, 4)  # area averaging: each pixel the mean of a 3 x 3 block
    blocks = pattern.reshape(1, 2, 3, 2, 3).mean(dim=(2, 4))
    assert factor == pytest.approx(1 / 3) and torch.allclose(out, blocks, atol=1e-6)
    batch, _ = bound_size(torch.rand(2, 3, 40, 40), 400)
    assert batch.shape == (2, 3, 20, 20)
    with pytest.raises(ValueError, match="max_pixels"):
        bound_size(small, 0)


def test_the_pixel_budget_holds_pure_noise_under_the_png_byte_budget() -> None:
    noise = torch.rand(3, 2000, 2000, generator=torch.Generator().manual_seed(4))
    bounded, _ = bound_size(noise)
    noisy = torch.rand(bounded.shape, generator=torch.Generator().manual_seed(5))  # worst case
    buf = io.BytesIO()
    Image.fromarray(to_uint8(noisy)).save(buf, format="PNG")
    assert buf.tell() <= MAX_PNG_BYTES


def test_bad_arguments_fail_with_what_was_expected() -> None:
    x = _digits(3)
    with pytest.raises(ValueError, match=r"one title per image \(3\), got 2"):
        labelled_grid(x, ["a", "b"])
    with pytest.raises(TypeError, match="wrap one title in a list"):
        labelled_grid(x[:1], "a")
    with pytest.raises(ValueError, match="min_tile"):
        labelled_grid(x, ["a", "b", "c"], min_tile=0)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        labelled_grid(x[0], ["a"])
    assert np.asarray(to_uint8(labelled_grid(x, ["a", "b", "c"]))).dtype == np.uint8


def test_a_title_with_alternatives_draws_the_first_that_fits() -> None:
    x = _digits(2)
    long, short = "ch 5 (weak)", "5 (weak)"  # at 64 px the first is too wide (10 px font)
    assert label_font(10).getlength(long) > 64 - 6 >= label_font(10).getlength(short)
    (a, _), (b, _) = _cells(labelled_grid(x, [(long, short), ("ch 1", "1")], ncol=2), 2, (64, 64))
    (sa, _), (sb, _) = _cells(labelled_grid(x, [short, "ch 1"], ncol=2), 2, (64, 64))
    assert torch.equal(a, sa) and torch.equal(b, sb)


def test_text_band_is_one_line_of_dark_text_on_its_background() -> None:
    band = text_band(200, "ch 3 · top 6: #12 (4.1)", size=11, background=0.94)
    assert band.shape[:2] == (3, sum(label_font(11).getmetrics()) + 6) and band.shape[2] == 200
    assert (band.min(dim=0).values < DARK).sum() > 40 and band.max() == pytest.approx(0.94, 0.01)
    with pytest.raises(ValueError, match="`align`"):
        text_band(10, "x", align="right")


def test_with_header_puts_a_line_of_text_above_and_keeps_the_image() -> None:
    from featurewatch.core.labels import with_header

    image = torch.rand(3, 40, 200, generator=torch.Generator().manual_seed(0))
    out = with_header(image, "features.5 · epoch 3 · step 240")
    band = out.shape[1] - 40
    assert band > 8 and out.shape[2] == 200
    assert torch.equal(out[:, band:], image)
    assert (out[:, :band] < 0.5).any()  # dark text on the white strip
    with pytest.raises(ValueError, match=r"`image` must be \(3, H, W\)"):
        with_header(torch.rand(40, 200), "x")
