"""DatasetExamples on a 1-D signal net (issue 14) in a real Trainer: the logged waveform pictures
and their captions, read back from the files sink, equal brute force on the trained model."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from featurewatch.callbacks.dataset_examples import DatasetExamples
from tests._files import records
from tests._models import LitClassifier
from tests.callbacks.conftest import hooks_left, make_trainer
from tests.callbacks.test_breadth_runs import SignalNet, digit_signals

LAYERS = ["net.features.2", "net.features.6", "net.fc"]
#: the analytic receptive field of time position t, clipped to the 64 samples
INTERVALS = {
    "net.features.2": lambda t: (max(0, t - 2), min(64, t + 3)),  # conv k5 p2
    "net.features.6": lambda t: (max(0, 2 * t - 6), min(64, 2 * t + 8)),  # + pool 2, conv k5 p2
}
PAIR = re.compile(r"#(\d+) \(([^)]+)\)(?: t=(\d+))?(?: \[(\d+), (\d+)\))?")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def png(root: Path, record: dict[str, Any]) -> np.ndarray:
    with Image.open(root / "featurewatch_logs" / record["path"]) as im:
        return np.asarray(im.convert("RGB"))


def parse(caption: str) -> dict[int, list[tuple[int, float, int | None, tuple[int, int] | None]]]:
    """``channel c: #i (v) t=5 [a, b), ...`` lines -> {c: [(i, v, t, (a, b)), ...]}."""
    out = {}
    for line in caption.splitlines()[1:]:
        head, _, rest = line.partition(": ")
        entries = []
        for m in PAIR.finditer(rest):
            t = int(m[3]) if m[3] is not None else None
            box = (int(m[4]), int(m[5])) if m[4] is not None else None
            entries.append((int(m[1]), float(m[2]), t, box))
        out[int(head.split()[1])] = entries
    return out


def brute_force(net: SignalNet, pool: torch.Tensor, layer: str, channels: list[int], k: int):
    """Per signal and channel, a Python loop over time for the maximum and its first position;
    then per channel the k signals by (-value, index)."""
    prefix = {"net.features.2": net.features[:3], "net.features.6": net.features}.get(layer)
    best: list[list[tuple[float, int | None]]] = []
    with torch.no_grad():
        for signal in pool:
            if prefix is None:
                out = net(signal[None])[0]
                best.append([(float(out[c]), None) for c in channels])
                continue
            out = prefix(signal[None])[0]
            row = []
            for c in channels:
                value, where = float("-inf"), 0
                for t, v in enumerate(out[c].tolist()):
                    if v > value:
                        value, where = v, t
                row.append((value, where))
            best.append(row)
    result = {}
    for r, c in enumerate(channels):
        order = sorted(range(len(pool)), key=lambda i: (-best[i][r][0], i))[:k]
        result[c] = [(i, best[i][r][0], best[i][r][1]) for i in order]
    return result


def test_a_1d_run_logs_waveform_examples_equal_to_brute_force(tmp_path: Path) -> None:
    torch.manual_seed(0)
    lit = LitClassifier(SignalNet())
    loaders = digit_signals(n=128)  # 4 steps, 64 validation signals
    cb = DatasetExamples(LAYERS, max_channels=3, k=4, pool_size=32)
    trainer = make_trainer(tmp_path, [cb], max_epochs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(lit, *loaders)
    assert cb.calls >= 1 and cb.failures == 0
    recs = records(tmp_path)
    assert not [r["value"] for r in recs if r["kind"] == "text"], "no layer failed"
    images = {}
    for r in recs:
        if r["kind"] == "image":
            images[r["key"]] = r  # the last call's
    # the pool: the first 32 validation signals as Lightning fed them
    pool = torch.cat([x for x, _ in loaders[1]])[:32]
    net = lit.net.eval()
    assert hooks_left(lit) == []
    for layer in LAYERS:
        record = images[f"featurewatch/examples/{layer}"]
        caption = record["caption"]
        assert "top 4 of 32 pool signals per channel" in caption
        assert "no projections: featurewatch.core.projection takes (N, C, H, W)" in caption
        found = parse(caption)
        expected = brute_force(net, pool, layer, [0, 1, 2], 4)
        assert sorted(found) == [0, 1, 2]
        for c, entries in found.items():
            assert [i for i, _, _, _ in entries] == [i for i, _, _ in expected[c]], (layer, c)
            for (_, v, t, box), (_, ev, et) in zip(entries, expected[c]):
                assert v == pytest.approx(ev, rel=6e-3, abs=1e-3)  # 3 significant digits
                assert t == et
                if layer in INTERVALS:
                    assert box == INTERVALS[layer](et)
                else:
                    assert box is None  # fully connected: no time position
        # the picture: a header, three titled rows of four plots, red intervals, blue signals
        picture = png(tmp_path, record)
        assert picture.shape[1] > 600 and picture.shape[0] > 3 * 120, picture.shape
        red = np.abs(picture.astype(int) - [247, 223, 223]).sum(-1) < 24  # the shaded interval
        blue = np.abs(picture.astype(int) - [31, 119, 180]).sum(-1) < 40
        assert blue.sum() > 1000
        if layer in INTERVALS:
            assert red.sum() > 500
        else:
            assert red.sum() < 50
    film = images["featurewatch/examples/net.features.6/filmstrip"]
    assert png(tmp_path, film).std() > 10


def test_a_given_pool_of_signals_without_crops_has_positions_but_no_intervals(
    tmp_path: Path,
) -> None:
    pool = torch.randn(8, 1, 64, generator=torch.Generator().manual_seed(0))
    cb = DatasetExamples(["net.features.0"], k=2, pool=pool, crops=False, projection=None)
    trainer = make_trainer(tmp_path, [cb], max_epochs=1, limit_train_batches=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(LitClassifier(SignalNet()), *digit_signals(n=32))
    assert cb.failures == 0 and cb.calls >= 1
    record = [r for r in records(tmp_path) if r["key"] == "featurewatch/examples/net.features.0"]
    caption = record[-1]["caption"]
    assert "no projections" not in caption and "shaded" not in caption
    assert "top 2 of 8 pool signals per channel" in caption
    entries = parse(caption)
    assert sorted(entries) == list(range(8))
    assert all(t is not None and box is None for row in entries.values() for _, _, t, box in row)
