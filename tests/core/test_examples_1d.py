"""Dataset examples on 1-D signals (issue 14): top-k over time equals brute force, receptive
intervals equal the analytic ones, the model is left as it was, wrong shapes fail with a message."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from featurewatch.core.examples import top_examples, top_examples_multi
from featurewatch.core.receptive_field import receptive_fields, receptive_intervals
from tests._hygiene import assert_untouched, snapshot
from tests.callbacks.test_breadth_runs import SignalNet, digit_signals


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------- top examples
PATTERNS = torch.tensor([[1.0, -1.0, 1.0], [1.0, 1.0, 1.0]])  # channel c detects pattern c


def pattern_detector() -> nn.Sequential:
    """Channel c = ReLU(correlation with pattern c, minus 2 * |signal| nearby): 0 on silence, the
    pattern's amplitude * 3 where it is planted alone."""
    conv = nn.Conv1d(1, 2, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(PATTERNS[:, None] / 3)
    return nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))


# signal index -> (pattern, amplitude, centre); all other samples are 0
PLANTED = {
    4: (0, 2.0, 10),
    9: (0, 3.0, 1),
    2: (0, 1.0, 39),  # the last sample's neighbour: the zero padding must not matter
    0: (1, 1.5, 0),  # half of it lies in the padding
    13: (1, 2.5, 25),
}


def planted_pool(n: int = 16, length: int = 40) -> torch.Tensor:
    pool = torch.zeros(n, 1, length)
    for i, (c, a, t) in PLANTED.items():
        for j, w in enumerate(PATTERNS[c].tolist()):
            if 0 <= t - 1 + j < length:
                pool[i, 0, t - 1 + j] = a * w
    return pool


def test_planted_patterns_are_found_in_order_of_value_at_their_times() -> None:
    model = pattern_detector()
    pool = planted_pool()
    model(pool[:1])  # materialize the lazy head
    top = top_examples(model, pool, "1", [0, 1], k=4, batch_size=5)
    assert top.map_size == (40,) and top.pool_size == 16 and top.channels == [0, 1]
    with torch.no_grad():
        maps = model[:2](pool)
    expected_values = [
        [float(maps[i, 0].max()) for i in (9, 4)],
        [float(maps[i, 1].max()) for i in (13, 0)],
    ]
    # planted first by value (the detector is exact: amplitude x (3 or 2)/3 at the border)
    assert top.indices[:, :2].tolist() == [[9, 4], [13, 0]]
    assert torch.allclose(top.values[:, :2], torch.tensor(expected_values))
    assert top.positions is not None and top.positions.shape == (2, 4, 1)
    assert top.positions[:, :2, 0].tolist() == [[1, 10], [25, 0]]
    # the rest equals the brute-force order (value, then lower pool index; earliest time)
    indices, values, positions = brute_force(pool, model[:2], [0, 1], 4)
    assert top.indices.tolist() == indices
    assert torch.allclose(top.values, values)
    assert top.positions.tolist() == positions


def brute_force(
    pool: torch.Tensor, prefix: nn.Module, channels: list[int], k: int
) -> tuple[list[list[int]], torch.Tensor, list[list[list[int]]]]:
    """The oracle: one signal at a time, a Python loop over time for the maximum and its first
    position, then a sort by (-value, index)."""
    maxima: list[list[tuple[float, int]]] = []
    with torch.no_grad():
        for signal in pool:
            out = prefix(signal[None])[0]
            row = []
            for c in channels:
                best, where = float("-inf"), 0
                for t, v in enumerate(out[c].tolist()):
                    if v > best:
                        best, where = v, t
                row.append((best, where))
            maxima.append(row)
    indices = [
        sorted(range(len(pool)), key=lambda i: (-maxima[i][r][0], i))[:k]
        for r in range(len(channels))
    ]
    values = torch.tensor([[maxima[i][r][0] for i in idx] for r, idx in enumerate(indices)])
    positions = [[[maxima[i][r][1]] for i in idx] for r, idx in enumerate(indices)]
    return indices, values, positions


def trained_signal_net() -> SignalNet:
    """SignalNet after 24 SGD steps on the digits read as 64-sample signals (non-trivial filters
    and BatchNorm statistics), in eval mode."""
    torch.manual_seed(0)
    net = SignalNet()
    train, _ = digit_signals(n=192)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for _ in range(4):
        for x, y in train:
            loss = nn.functional.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def signal_net() -> SignalNet:
    return trained_signal_net()


@pytest.fixture(scope="module")
def signal_pool() -> torch.Tensor:
    _, val = digit_signals(n=192)
    return torch.cat([x for x, _ in val])[:45]


@pytest.mark.parametrize(("layer", "end"), [("features.2", 3), ("features.6", 7)])
def test_batched_search_on_the_trained_net_equals_brute_force(
    signal_net: SignalNet, signal_pool: torch.Tensor, layer: str, end: int
) -> None:
    channels = [0, 5, 3, 7]
    before = snapshot(signal_net)
    top = top_examples(signal_net, signal_pool, layer, channels, k=6, batch_size=8)
    assert_untouched(signal_net, before)
    indices, values, positions = brute_force(signal_pool, signal_net.features[:end], channels, 6)
    assert top.indices.tolist() == indices
    assert torch.allclose(top.values, values, atol=1e-5)
    assert top.positions is not None and top.positions.tolist() == positions
    assert top.map_size == ((64,) if end == 3 else (32,))


def test_one_pass_for_several_layers_equals_one_layer_at_a_time(
    signal_net: SignalNet, signal_pool: torch.Tensor
) -> None:
    wanted = {"features.2": [1, 2], "features.6": [0, 15], "fc": [3]}
    tops = top_examples_multi(signal_net, signal_pool, wanted, k=5, batch_size=13)
    for layer, chans in wanted.items():
        alone = top_examples(signal_net, signal_pool, layer, chans, k=5, batch_size=64)
        assert torch.equal(tops[layer].indices, alone.indices)
        assert torch.equal(tops[layer].values, alone.values)
        if layer == "fc":
            assert alone.positions is None and alone.map_size is None
        else:
            assert torch.equal(tops[layer].positions, alone.positions)  # type: ignore[arg-type]


def test_token_layers_of_images_and_out_of_range_channels_are_refused() -> None:
    class Tokens(nn.Module):  # (N, 1, 8, 8) images -> (N, 4, 16) tokens
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Conv2d(1, 16, 4, stride=4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.embed(x).flatten(2).transpose(1, 2)

    model = Tokens()
    with pytest.raises(ValueError, match=r"outputs shape \(3, 4, 16\) on \(N, C, H, W\) images"):
        top_examples(model, torch.randn(3, 1, 8, 8), "", [0], k=2)
    with pytest.raises(ValueError, match=r"channel 16 out of range .* \(valid: 0\.\.15\)"):
        top_examples(SignalNet(), torch.randn(3, 1, 64), "features.6", [16], k=2)


# ---------------------------------------------------------------------- receptive intervals
# (kernel, stride, padding, dilation) of every layer that moves along time, in order
STACK = [(3, 1, 1, 1), (2, 2, 0, 1), (5, 2, 2, 1), (3, 1, 1, 1), (3, 1, 2, 2)]


def rf_stack() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv1d(2, 3, 3, padding=1),  # 0
        nn.BatchNorm1d(3),  # 1
        nn.ReLU(),  # 2
        nn.MaxPool1d(2),  # 3
        nn.Conv1d(3, 4, 5, stride=2, padding=2),  # 4
        nn.ReLU6(),  # 5
        nn.AvgPool1d(3, stride=1, padding=1),  # 6
        nn.Conv1d(4, 2, 3, padding=2, dilation=2),  # 7
        nn.Tanh(),  # 8
    )


def analytic_interval(specs: list[tuple[int, int, int, int]], t: int, sizes: list[int]) -> tuple:
    """Back through every layer: position i of its output sees ``i*s - p + d*j`` (j < k) of its
    input, minus the padding (which does not exist)."""
    seen = {t}
    for (k, s, p, d), size in zip(reversed(specs), reversed(sizes)):
        seen = {i * s - p + d * j for i in seen for j in range(k)} & set(range(size))
    return min(seen), max(seen) + 1


@pytest.mark.parametrize(("layer", "specs"), [("8", STACK), ("5", STACK[:3]), ("2", STACK[:1])])
def test_receptive_intervals_equal_the_analytic_ones_clipped_at_the_borders(
    layer: str, specs: list
) -> None:
    model = rf_stack().eval()
    length = 50
    # the input length of every layer in specs (the stride-1 ones keep it)
    moving = [0, 3, 4, 6, 7][: len(specs)]
    sizes = []
    with torch.no_grad():
        for i in moving:
            sizes.append(int(model[:i](torch.zeros(1, 2, length)).shape[-1]))
        out_length = int(model[: int(layer) + 1](torch.zeros(1, 2, length)).shape[-1])
    positions = list(range(out_length))
    before = snapshot(model)
    found = receptive_intervals(model, layer, (2, length), positions, batch_size=5)
    assert_untouched(model, before)
    assert found == [analytic_interval(specs, t, sizes) for t in positions]
    if layer == "8":
        # by hand, 50 samples -> 13 positions: t = 6 sees 4..8 of the avg-pool output, 3..9 of
        # its input, 4..20 of the max-pool output, samples 8..41 of its input, 7..42 of the
        # signal: 36 samples; at both ends the taps that land on padding are gone
        assert found[6] == (7, 43)
        assert found[0] == (0, 19)
        assert found[-1] == (31, 50)


def test_receptive_intervals_of_the_signal_net_positions_and_fully_connected_units() -> None:
    net = SignalNet().eval()
    # conv k5 p2 -> pool 2 -> conv k5 p2: 14 samples, clipped at both ends of the 64
    assert receptive_intervals(net, "features.6", (1, 64), [0, 10, (31,)]) == [
        (0, 8),
        (14, 28),
        (56, 64),
    ]
    assert receptive_intervals(net, "features.2", (1, 64), torch.tensor([[0], [63]])) == [
        (0, 3),
        (61, 64),
    ]
    assert receptive_intervals(net, "fc", (1, 64), [None]) == [(0, 64)]
    with pytest.raises(ValueError, match=r"position 32 outside the 32 time positions.*0\.\.31"):
        receptive_intervals(net, "features.6", (1, 64), [32])
    with pytest.raises(ValueError, match="give a position t"):
        receptive_intervals(net, "features.6", (1, 64), [None])
    with pytest.raises(ValueError, match=r"`input_shape` must be \(C, L\)"):
        receptive_intervals(net, "features.6", (1, 1, 64), [0])
    with pytest.raises(ValueError, match="for 1-D signals \\(C, L\\) use receptive_intervals"):
        receptive_fields(net, "features.6", (1, 64), [(0, 0)])
    with pytest.raises(ValueError, match="an int t or \\(t,\\)"):
        receptive_intervals(net, "features.6", (1, 64), [(0, 3)])  # type: ignore[list-item]


def test_top_example_positions_feed_receptive_intervals(
    signal_net: SignalNet, signal_pool: torch.Tensor
) -> None:
    top = top_examples(signal_net, signal_pool, "features.6", [0, 1], k=3)
    assert top.positions is not None
    found = receptive_intervals(signal_net, "features.6", (1, 64), top.positions.flatten(0, 1))
    for (start, stop), t in zip(found, top.positions.flatten().tolist()):
        assert (start, stop) == (max(0, 2 * t - 6), min(64, 2 * t + 8))
