"""core/filmstrip.py: even column choice, bounded thumbnails, labelled drawing, GIFs, drift."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from featurewatch.core.filmstrip import (
    COLUMNS,
    Frame,
    ThumbnailStore,
    animation_frames,
    draw_filmstrip,
    encode_gif,
    even_indices,
    render_drift,
    shrink,
    topk_drift,
)


@pytest.mark.parametrize("n", [1, 2, 5, 12, 13, 25, 100, 1001])
@pytest.mark.parametrize("m", [1, 2, 3, 12])
def test_even_indices_are_evenly_spread_and_include_first_and_last(n: int, m: int) -> None:
    idx = even_indices(n, m)
    assert len(idx) == min(n, m) and idx == sorted(set(idx))
    assert all(0 <= i < n for i in idx)
    assert idx[-1] == n - 1
    if len(idx) > 1:
        assert idx[0] == 0
        gaps = np.diff(idx)
        assert gaps.max() - gaps.min() <= 1, (n, m, idx)  # as even as integers allow
    assert even_indices(0, m) == [] and even_indices(n, 0) == []


def labels(n: int) -> list[str]:
    return [str(i) for i in range(n)]


def test_the_store_stays_bounded_and_evenly_spread_over_a_long_run() -> None:
    store = ThumbnailStore(capacity=24, size=64)
    sizes = []
    for call in range(1000):
        store.add(torch.rand(3, 1, 200, 100), epoch=call // 10, step=call * 5, labels=labels(3))
        sizes.append(len(store))
    assert max(sizes) <= 24
    assert store.calls == 1000
    calls = [f.call for f in store.frames]
    assert calls[0] == 0 and calls[-1] == 999  # the first and the latest call
    gaps = np.diff(calls[:-1])
    assert len(set(gaps.tolist())) == 1  # the others: every stride-th call
    assert len(calls) >= 24 // 2  # thinning halves, never drops to a handful
    # 200 x 100 pictures are stored as 64 x 32 uint8 RGB: the documented bound
    assert store.frames[0].tiles.shape == (3, 3, 64, 32)
    assert store.frames[0].tiles.dtype == torch.uint8
    assert store.nbytes == len(store) * 3 * 3 * 64 * 32 <= 24 * 3 * 3 * 64 * 64
    cols = store.columns()
    assert len(cols) == COLUMNS and cols[0].call == 0 and cols[-1].call == 999


def test_the_store_round_trips_through_a_weights_only_checkpoint(tmp_path) -> None:
    store = ThumbnailStore(capacity=4, size=8)
    for call in range(9):
        store.add(torch.rand(2, 3, 8, 8), epoch=call, step=10 * call, labels=["a", "b"])
    torch.save(store.state_dict(), tmp_path / "s.pt")
    again = ThumbnailStore(capacity=4, size=8)
    again.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    assert [f.call for f in again.frames] == [f.call for f in store.frames]
    assert all(torch.equal(a.tiles, b.tiles) for a, b in zip(again.frames, store.frames))
    again.add(torch.rand(2, 3, 8, 8), epoch=9, step=90, labels=["a", "b"])
    assert again.calls == 10 and len(again) <= 4 and again.frames[-1].step == 90
    # other units: the earlier calls no longer line up with the rows and are dropped
    again.add(torch.rand(3, 3, 8, 8), epoch=10, step=100, labels=["a", "b", "c"])
    assert len(again) == 1 and again.labels == ["a", "b", "c"]
    with pytest.raises(ValueError, match="labels"):
        again.add(torch.rand(3, 3, 8, 8), epoch=0, step=0, labels=["a"])


def frames_of(values: list[float], epochs: list[int], units: int = 2) -> list[Frame]:
    return [
        Frame(i, e, 100 * i, torch.full((units, 3, 8, 8), int(v * 255), dtype=torch.uint8))
        for i, (v, e) in enumerate(zip(values, epochs))
    ]


def test_filmstrip_layout_tiles_and_labels() -> None:
    values = [0.0, 0.25, 0.5, 0.75, 1.0]
    frames = frames_of(values, list(range(5)))
    pic = draw_filmstrip(frames, ["0", "1"], min_size=32)
    assert pic.dtype == np.uint8 and pic.ndim == 3 and pic.shape[2] == 3
    # each column's tiles are there, enlarged 4x (8 -> 32 px): a 32 x 32 block of its grey level
    for v in values:
        grey = int(v * 255)
        mask = (pic == grey).all(2)
        assert mask.sum() >= 2 * 32 * 32, v  # two units of that call

    # the column titles are drawn: other epochs change the pixels above the tiles only
    other = draw_filmstrip(frames_of(values, [5, 6, 7, 8, 9]), ["0", "1"], min_size=32)
    assert other.shape == pic.shape
    rows = np.nonzero((pic != other).any(axis=(1, 2)))[0]
    first_tile_row = np.nonzero((pic == 0).all(2).any(1))[0][0]  # the black tiles of call 0
    assert rows.size and rows.max() < first_tile_row

    # the row labels are drawn: another label changes pixels left of the tiles only, in its row
    relabelled = draw_filmstrip(frames, ["8", "1"], min_size=32)
    assert relabelled.shape == pic.shape
    diff = (pic != relabelled).any(2)
    ys, xs = np.nonzero(diff)
    first_tile_col = np.nonzero((pic == 0).all(2).any(0))[0][0]
    assert xs.size and xs.max() < first_tile_col
    assert ys.min() >= first_tile_row and ys.max() < first_tile_row + 32 + 4  # the first row
    wider = draw_filmstrip(frames, ["channel 0", "channel 1"], min_size=32)
    assert wider.shape[1] > pic.shape[1]  # the label column fits the labels
    titled = draw_filmstrip(frames, ["0", "1"], min_size=32, title="conv1")
    assert titled.shape[0] > pic.shape[0]


def test_filmstrip_shows_at_most_twelve_evenly_spread_columns() -> None:
    values = [i / 29 for i in range(30)]
    frames = frames_of(values, list(range(30)), units=1)
    pic = draw_filmstrip(frames, ["u"], min_size=8, columns=12)
    shown = [i for i, v in enumerate(values) if ((pic == int(v * 255)).all(2)).sum() >= 64]
    assert shown == even_indices(30, 12) and shown[0] == 0 and shown[-1] == 29


def test_gif_has_one_frame_per_call_and_loops() -> None:
    frames = frames_of([0.0, 0.5, 1.0], [0, 1, 2], units=4)
    pictures = animation_frames(frames, labels(4), title="conv1", min_size=16)
    assert len({p.shape for p in pictures}) == 1
    gif = encode_gif(pictures, frame_ms=200, last_ms=900)
    with Image.open(io.BytesIO(gif)) as im:
        assert im.format == "GIF" and im.n_frames == 3 and im.info.get("loop") == 0
        for i, v in enumerate([0, 127, 255]):
            im.seek(i)
            rgb = np.asarray(im.convert("RGB"))
            assert ((rgb == v).all(2)).sum() >= 4 * 16 * 16  # the 4 tiles of that call
    with pytest.raises(ValueError, match="differ in size"):
        encode_gif([np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4, 3), np.uint8)])


def test_render_drift_is_one_minus_pearson() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.rand(5, 3, 16, 16, generator=g)
    b = torch.rand(5, 3, 16, 16, generator=g)
    d = render_drift(a, b)
    for u in range(5):
        r = np.corrcoef(a[u].flatten().numpy(), b[u].flatten().numpy())[0, 1]
        assert d[u].item() == pytest.approx(1 - r, abs=1e-9)
    assert torch.allclose(render_drift(a, a), torch.zeros(5, dtype=torch.float64), atol=1e-12)
    # brightness and contrast do not count; an inverted picture is the farthest
    assert torch.allclose(render_drift(a, 0.5 * a + 0.2), torch.zeros(5, dtype=torch.float64))
    assert torch.allclose(render_drift(a, 1 - a), torch.full((5,), 2.0, dtype=torch.float64))
    flat = torch.full((1, 1, 4, 4), 0.5)
    assert (
        render_drift(flat, flat).item() == 0 and render_drift(flat, a[:1, :1, :4, :4]).item() == 1
    )
    with pytest.raises(ValueError, match="shape"):
        render_drift(a, b[:, :1])


def test_topk_drift_is_the_jaccard_distance_of_the_index_sets() -> None:
    g = torch.Generator().manual_seed(1)
    p = torch.stack([torch.randperm(20, generator=g)[:6] for _ in range(50)])
    c = torch.stack([torch.randperm(20, generator=g)[:6] for _ in range(50)])
    d = topk_drift(p, c)
    for u in range(50):
        sp, sc = set(p[u].tolist()), set(c[u].tolist())
        assert d[u].item() == pytest.approx(1 - len(sp & sc) / len(sp | sc))
    assert topk_drift(p, p.flip(1)).abs().max().item() == 0  # order does not matter
    assert topk_drift(torch.tensor([[1, 2]]), torch.tensor([[3, 4]])).item() == 1


def test_shrink_keeps_aspect_and_small_images() -> None:
    x = torch.rand(2, 1, 30, 20)
    assert torch.equal(shrink(x, 64), x)
    assert shrink(torch.rand(2, 3, 256, 128), 64).shape == (2, 3, 64, 32)
