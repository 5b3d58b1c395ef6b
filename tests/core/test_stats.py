"""Per-channel activation statistics: closed-form values, hooks, call sites, reduction."""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from featurewatch.core.dead_rule import ChannelSummary, judge_channels
from featurewatch.core.hygiene import isolated
from featurewatch.core.layers import capture
from featurewatch.core.stats import ChannelStats, ChannelStatsRecorder, default_dead_layers
from tests._models import SmallCNN, TinyResNet


def _summary(stats: ChannelStats) -> ChannelSummary:
    return ChannelSummary.from_totals(
        stats.count_on, stats.sum_mag, stats.max_mag, stats.last_on, stats.positions, stats.updates
    )


def _hooks_left(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


# ---------------------------------------------------------------- ChannelStats, closed form
def test_closed_form_relu_output() -> None:
    # (N=2, C=3, 2x2): channel 0 fires 3 of 8 values, channel 1 never, channel 2 everywhere.
    a = torch.zeros(2, 3, 2, 2)
    a[0, 0, 0, 0], a[0, 0, 1, 1], a[1, 0, 0, 1] = 1.0, 2.0, 5.0
    a[:, 2] = 0.5
    s = ChannelStats(3, "cpu")
    s.update(a)
    summary = _summary(s)
    assert s.positions == 8 and s.updates == 1
    assert summary.on_rate.tolist() == [3 / 8, 0.0, 1.0]
    assert summary.max_abs.tolist() == [5.0, 0.0, 0.5]
    assert summary.mean_abs.tolist() == [8 / 8, 0.0, 0.5]
    assert summary.dead == [1]
    assert summary.fired.tolist() == [True, False, True]
    assert summary.dying(0.5) == [0]
    # ReDo: mean |a| / layer mean = [1, 0, 0.5] / 0.5
    assert torch.allclose(summary.dormancy, torch.tensor([2.0, 0.0, 1.0], dtype=torch.float64))
    assert summary.dormant(0.025) == [1]


def test_preactivation_magnitude_is_the_relu_output() -> None:
    # A conv output feeding F.relu: a channel far below zero is dead and has magnitude 0.
    a = torch.tensor([[[-100.0, -50.0]], [[3.0, -1.0]]]).reshape(1, 2, 2)  # (N=1, C=2, L=2)
    s = ChannelStats(2, "cpu", mode="preactivation")
    s.update(a)
    summary = _summary(s)
    assert summary.dead == [0]
    assert summary.max_abs.tolist() == [0.0, 3.0]
    assert summary.mean_abs.tolist() == [0.0, 1.5]
    assert summary.on_rate.tolist() == [0.0, 0.5]


def test_threshold_and_abs_mode() -> None:
    a = torch.tensor([[-2.0, 0.05, 0.5, -0.01]]).reshape(1, 4)  # (N=1, C=4): a linear layer output
    s = ChannelStats(4, "cpu", threshold=0.1, mode="activation")
    s.update(a)
    summary = _summary(s)
    assert summary.on_rate.tolist() == [0.0, 0.0, 1.0, 0.0]
    assert summary.max_abs.tolist() == pytest.approx([2.0, 0.05, 0.5, 0.01])


def test_batched_equals_per_sample_and_reset() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.relu(torch.randn(6, 5, 4, 4, generator=g) - 0.5)
    batched, single = ChannelStats(5, "cpu"), ChannelStats(5, "cpu")
    batched.update(a)
    for i in range(6):
        single.update(a[i : i + 1])
    assert torch.equal(batched.count_on, single.count_on)
    assert torch.equal(batched.max_mag, single.max_mag)
    assert torch.allclose(batched.sum_mag, single.sum_mag)
    assert batched.positions == single.positions == 6 * 16
    reference = (a > 0).sum((0, 2, 3)).double()
    assert torch.equal(batched.count_on, reference)
    batched.reset()
    assert batched.positions == 0 and float(batched.count_on.abs().sum()) == 0.0
    assert batched.last_on.tolist() == [-1] * 5


def test_silent_steps_catch_a_channel_that_died_mid_window() -> None:
    s = ChannelStats(2, "cpu")
    alive = torch.ones(4, 2, 3, 3)
    died = alive.clone()
    died[:, 1] = 0.0
    for _ in range(3):
        s.update(alive)
    for _ in range(5):
        s.update(died)
    summary = _summary(s)
    assert summary.dead == []  # channel 1 fired in the first three forwards
    assert summary.silent_steps.tolist() == [0, 5]
    assert summary.silent(5) == [1] and summary.silent(6) == [] and summary.silent(None) == []


def test_half_precision_counts_stay_exact() -> None:
    a = torch.ones(8, 2, 128, 128, dtype=torch.bfloat16)  # 131072 values per channel > fp16 max
    s = ChannelStats(2, "cpu")
    s.update(a)
    assert s.count_on.tolist() == [131072.0, 131072.0]


def test_no_host_sync_in_the_update() -> None:
    # Meta tensors have no data: any .item(), .cpu(), bool(tensor) or data-dependent branch raises.
    s = ChannelStats(4, "meta")
    s.update(torch.empty(2, 4, 3, 3, device="meta"))
    s.update(torch.empty(2, 4, 3, 3, device="meta"))
    assert s.positions == 36 and s.count_on.device.type == "meta"


def test_shape_errors() -> None:
    s = ChannelStats(3, "cpu")
    with pytest.raises(ValueError, match=r"expected an \(N, 3, \.\.\.\) tensor"):
        s.update(torch.ones(2, 4, 2, 2))
    with pytest.raises(ValueError, match="mode"):
        ChannelStats(3, "cpu", mode="bogus")


def test_summary_state_loads_with_weights_only() -> None:
    s = ChannelStats(3, "cpu")
    s.update(torch.relu(torch.randn(2, 3, 4, 4)))
    state = _summary(s).to_state()
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    back = ChannelSummary.from_state(torch.load(buf, weights_only=True))
    assert torch.equal(back.on_rate, _summary(s).on_rate) and back.positions == 32


# ---------------------------------------------------------------- the death rule
def _window(
    on_rate: list[float], silent: list[int], updates: int, mean: list[float]
) -> ChannelSummary:
    """A hand-made window: per channel its on-rate, forwards since it last fired, mean magnitude."""
    return ChannelSummary(
        on_rate=torch.tensor(on_rate, dtype=torch.float64),
        max_abs=torch.tensor(mean, dtype=torch.float32),
        mean_abs=torch.tensor(mean, dtype=torch.float64),
        silent_steps=torch.tensor(silent, dtype=torch.int64),
        positions=100 * updates,
        updates=updates,
    )


def test_dead_dying_and_dormant_channels_of_a_window() -> None:
    # 5 channels over 30 forwards: 0 healthy; 1 never fired; 2 fired early, silent for the last 25;
    # 3 fires on 0.5% of its values (dying); 4 fires often but weakly (dormant)
    s = _window(
        on_rate=[0.4, 0.0, 0.3, 0.005, 0.5],
        silent=[0, 30, 25, 1, 0],
        updates=30,
        mean=[1.0, 0.0, 0.5, 1.0, 0.01],
    )
    v = judge_channels(s, patience=20, dying_rate=0.01, dormancy_threshold=0.025)
    assert (v.channels, v.dead, v.dying) == (5, [1, 2], [3])
    # ReDo: mean / layer mean (0.502): channel 1 (0) and channel 4 (0.02) are dormant
    assert v.dormant == [1, 4]
    assert (v.dead_fraction, v.dying_fraction, v.dormant_fraction) == (0.4, 0.2, 0.4)
    # without patience only the never-firing channel is dead; 26 silent forwards are not enough
    assert judge_channels(s, patience=None, dying_rate=0.01, dormancy_threshold=0.0).dead == [1]
    assert judge_channels(s, patience=26, dying_rate=0.01, dormancy_threshold=0.0).dead == [1]
    # a dead channel is never also dying, even with a dying rate above its on-rate
    assert judge_channels(s, patience=20, dying_rate=0.35, dormancy_threshold=0.0).dying == [3]


def test_a_short_final_window_is_no_evidence_of_death() -> None:
    # the end-of-training leftover: 5 forwards after a 30-forward window. Channels 0 and 1 are
    # silent all through it; only 1 was dead at the previous evaluation.
    short = _window(on_rate=[0.0, 0.0, 0.2], silent=[5, 5, 0], updates=5, mean=[0.0, 0.0, 1.0])

    def judge(**kw: Any) -> list[int]:
        return judge_channels(
            short, patience=20, dying_rate=0.01, dormancy_threshold=0.025, **kw
        ).dead

    assert judge(final=True, previous_updates=30, previously_dead=[1]) == [1]
    # a regular window, a final window as long as the previous one, or no previous one: the rule
    assert judge(final=False, previous_updates=30, previously_dead=[1]) == [0, 1]
    assert judge(final=True, previous_updates=5, previously_dead=[1]) == [0, 1]
    assert judge(final=True, previous_updates=None, previously_dead=()) == [0, 1]
    # a final window of at least `patience` forwards still shows a channel silent for that long
    longer = _window(on_rate=[0.0, 0.1, 0.2], silent=[25, 3, 0], updates=25, mean=[0, 1.0, 1.0])
    verdict = judge_channels(
        longer,
        patience=20,
        dying_rate=0.01,
        dormancy_threshold=0.025,
        previous_updates=30,
        previously_dead=(),
        final=True,
    )
    assert verdict.dead == [0]


# ---------------------------------------------------------------- recorder: hooks and call sites
def _reference(
    model: nn.Module, xs: list[torch.Tensor], layers: list[str]
) -> dict[str, torch.Tensor]:
    """On-counts per channel from captured (cloned) outputs: the oracle."""
    counts: dict[str, torch.Tensor] = {}
    for x in xs:
        with capture(model, layers, clone=True) as got:
            model(x)
        for layer in layers:
            counts[layer] = counts.get(layer, 0) + (got[layer] > 0).sum((0, 2, 3)).double()
    return counts


def test_recorder_matches_captured_outputs_per_call_site() -> None:
    torch.manual_seed(0)
    model = TinyResNet(in_channels=1).eval()  # eval: the oracle pass sees the same BatchNorm output
    xs = [torch.randn(4, 1, 8, 8) for _ in range(3)]
    assert default_dead_layers(model) == ["relu", "layer1.relu"]
    with torch.no_grad(), ChannelStatsRecorder(model) as recorder:
        for x in xs:
            model(x)
    got = recorder.summaries()
    # The block's ReLU module runs twice per forward: two call sites, never mixed.
    assert list(got) == ["layer1.relu@0", "layer1.relu@1", "relu"]
    with torch.no_grad():
        ref = _reference(model, xs, ["layer1.relu@0", "layer1.relu@1", "relu@0"])
    for key, ref_key in [
        ("layer1.relu@0", "layer1.relu@0"),
        ("layer1.relu@1", "layer1.relu@1"),
        ("relu", "relu@0"),
    ]:
        assert torch.equal((got[key].on_rate * got[key].positions).round(), ref[ref_key]), key
        assert got[key].positions == 3 * 4 * 64 and got[key].updates == 3
    assert not torch.equal(got["layer1.relu@0"].on_rate, got["layer1.relu@1"].on_rate)


def test_explicit_call_site_and_inplace_relu() -> None:
    torch.manual_seed(0)
    model = TinyResNet(in_channels=1).eval()
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad(), ChannelStatsRecorder(model, ["layer1.relu@1"]) as rec:
        model(x)
        model.layer1(torch.relu(torch.randn(4, 8, 8, 8)))  # the block alone: still numbered 0, 1
    assert list(rec.summaries()) == ["layer1.relu@1"]
    assert rec.summaries()["layer1.relu@1"].updates == 2

    # In-place ReLU in a Sequential: statistics are those of the ReLU output.
    cnn = SmallCNN().eval()
    with torch.no_grad(), ChannelStatsRecorder(cnn, ["features.2"]) as rec:
        cnn(x)
    with torch.no_grad(), capture(cnn, ["features.2"]) as got:
        cnn(x)
    ref = got["features.2"]
    s = rec.summaries()["features.2"]
    assert torch.equal((s.on_rate * s.positions).round(), (ref > 0).sum((0, 2, 3)).double())
    assert torch.equal(s.max_abs, ref.amax((0, 2, 3)))


def test_only_enabled_forwards_outside_isolation_count() -> None:
    model = SmallCNN().eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad(), ChannelStatsRecorder(model) as rec:
        model(x)
        with isolated(model):
            model(x)  # featurewatch's own forward
        with rec.paused():
            model(x)
        rec.enabled = False
        model(x)
    assert {k: s.updates for k, s in rec.summaries().items()} == {"features.2": 1, "features.6": 1}


def test_hooks_removed_on_exit_and_on_error() -> None:
    model = TinyResNet(in_channels=1)
    rec = ChannelStatsRecorder(model)
    with rec:
        assert _hooks_left(model) > 0
    assert _hooks_left(model) == 0
    with pytest.raises(RuntimeError, match="boom"), rec:
        raise RuntimeError("boom")
    assert _hooks_left(model) == 0 and not rec.attached


def test_forward_that_raises_does_not_shift_call_sites() -> None:
    torch.manual_seed(0)
    model = TinyResNet(in_channels=1).eval()
    x = torch.randn(2, 1, 8, 8)

    def explode(_m: nn.Module, _i: object, _o: object) -> None:
        raise RuntimeError("half way")

    with torch.no_grad(), ChannelStatsRecorder(model) as rec:
        handle = model.layer1.bn2.register_forward_hook(explode)
        with pytest.raises(RuntimeError):
            model(x)  # layer1.relu ran once, then the forward died
        handle.remove()
        model(x)
    assert sorted(rec.summaries()) == ["layer1.relu@0", "layer1.relu@1", "relu"]
    assert rec.summaries()["layer1.relu@1"].updates == 1


class _FunctionalNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return self.fc(x.mean((2, 3)))


def test_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="F.relu"):
        ChannelStatsRecorder(_FunctionalNet())
    with pytest.raises(ValueError, match="did you mean 'bn1'"):
        ChannelStatsRecorder(_FunctionalNet(), ["bn11"])
    # A layer whose output is not (N, C, ...) is reported, not counted, and training is not broken.
    model = nn.Sequential(nn.Flatten(0), nn.ReLU())
    with ChannelStatsRecorder(model, ["1"]) as rec:
        model(torch.ones(3))
    assert rec.summaries() == {} and "expected a floating (N, C, ...)" in rec.problems["1"]
    # A call site whose channel count changes is reported and frozen, not raised inside forward.
    relu = nn.Sequential(nn.ReLU())
    with ChannelStatsRecorder(relu) as rec:
        relu(torch.ones(2, 3, 4))
        relu(torch.ones(2, 5, 4))
    assert rec.summaries()["0"].positions == 8 and "changed from 3 channels" in rec.problems["0"]


def test_preactivation_layers_in_a_functional_network() -> None:
    net = _FunctionalNet().eval()
    with torch.no_grad():
        net.bn1.bias[2] = -50.0
    with torch.no_grad(), ChannelStatsRecorder(net, ["bn1"]) as rec:
        net(torch.randn(4, 1, 6, 6))
    assert rec.summaries()["bn1"].dead == [2]


def test_reduction_over_two_ranks_equals_one_process() -> None:
    """Run the packing/reduction with an all_reduce that adds what a second rank sent."""
    torch.manual_seed(0)
    model = TinyResNet(in_channels=1).eval()
    xs = torch.randn(8, 1, 8, 8)
    whole = ChannelStatsRecorder(model)
    halves = [ChannelStatsRecorder(model), ChannelStatsRecorder(model)]
    with torch.no_grad():
        with whole:
            model(xs[:4])
            model(xs[4:])
        for rank, rec in enumerate(halves):
            with rec:
                model(xs[rank::2][:2])
                model(xs[rank::2][2:])
    sent: dict[str, torch.Tensor] = {}

    def record(t: torch.Tensor, op: str) -> torch.Tensor:
        sent[op] = t.clone()
        return t

    halves[1].summaries(all_reduce=record, gather=lambda obj: [obj])

    def add_rank1(t: torch.Tensor, op: str) -> torch.Tensor:
        return t + sent[op] if op == "sum" else torch.maximum(t, sent[op])

    rank1 = (halves[1].layout(), dict(halves[1].calls_per_forward))
    reduced = halves[0].summaries(all_reduce=add_rank1, gather=lambda obj: [obj, rank1])
    expected = whole.summaries()
    assert list(reduced) == list(expected)
    for key in expected:
        assert torch.equal(reduced[key].on_rate, expected[key].on_rate), key
        assert torch.equal(reduced[key].max_abs, expected[key].max_abs), key
        assert torch.allclose(reduced[key].mean_abs, expected[key].mean_abs, rtol=1e-6), key
        assert reduced[key].positions == expected[key].positions
        assert torch.equal(reduced[key].silent_steps, expected[key].silent_steps)


@pytest.mark.parametrize("mode", ["nonnegative", "activation", "preactivation"])
def test_rates_every_n_measures_rates_on_every_nth_forward_and_firing_on_all(mode: str) -> None:
    """rates_every=4 over 8 forwards: on-rates and magnitude sums from forwards 0 and 4 only;
    firing, last firing and the maximum magnitude from all 8."""
    stats = ChannelStats(3, "cpu", mode=mode, rates_every=4)
    for k in range(8):
        a = torch.zeros(2, 3, 4)
        a[:, 0] = 1.0  # always on
        if k == 2:
            a[0, 1, 0] = 5.0  # channel 1 fires once, on a forward whose rates are not measured
        a[:, 2] = -3.0 if mode != "nonnegative" else 0.0  # never on; |a| = 3 in activation mode
        stats.update(a)
    s = ChannelSummary.from_totals(
        stats.count_on, stats.sum_mag, stats.max_mag, stats.last_on, stats.positions, stats.updates
    )
    assert stats.updates == 8 and s.positions == 2 * 2 * 4
    assert s.on_rate.tolist() == [1.0, 0.0, 0.0]
    assert s.fired.tolist() == [True, True, False] and s.dead == [2]
    assert s.silent_steps.tolist() == [0, 5, 8]
    assert s.max_abs.tolist() == [1.0, 5.0, 3.0 if mode == "activation" else 0.0]
    assert s.mean_abs.tolist() == [1.0, 0.0, 3.0 if mode == "activation" else 0.0]
    assert s.dying(0.01) == [1]


# ---------------------------------------------------------------- defaults, layouts, edge cases
class _Mixed(nn.Module):
    """SiLU, GELU and LeakyReLU (units keep a gradient below zero) next to one ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.silu, self.gelu, self.leaky, self.relu = (
            nn.SiLU(),
            nn.GELU(),
            nn.LeakyReLU(),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.leaky(self.gelu(self.silu(self.bn(self.conv(x))))))


def test_default_layers_are_the_units_that_can_die() -> None:
    assert default_dead_layers(_Mixed()) == ["relu"]
    assert default_dead_layers(nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU6())) == ["1"]
    only_smooth = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.SiLU(), nn.Conv2d(4, 4, 3), nn.GELU()
    )
    with pytest.raises(ValueError) as err:
        ChannelStatsRecorder(only_smooth)
    message = str(err.value)
    assert "1 SiLU, 1 GELU" in message and "cannot die" in message and "layers=['2']" in message
    assert (
        "F.relu" in message and "layers=['1']" in message
    )  # the BatchNorm that could feed an F.relu
    # named explicitly, a SiLU is monitored ("never above the threshold")
    with torch.no_grad(), ChannelStatsRecorder(only_smooth, ["2"]) as rec:
        only_smooth(torch.randn(2, 1, 8, 8))
    assert list(rec.summaries()) == ["2"]


class _ChannelsLastBlock(nn.Module):
    """A ConvNeXt-style MLP: (N, C, H, W) -> (N, H, W, C) -> Linear -> GELU/ReLU -> Linear."""

    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.fc1, self.act, self.fc2 = nn.Linear(4, 16), act, nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.dw(x).permute(0, 2, 3, 1)))).permute(0, 3, 1, 2)


def test_channels_last_outputs_and_linear_features_use_the_last_dim() -> None:
    block = _ChannelsLastBlock(nn.ReLU()).eval()
    with torch.no_grad():
        block.fc1.bias.fill_(3.0)  # every hidden unit fires ...
        block.fc1.weight[[3, 11]] = 0.0
        block.fc1.bias[[3, 11]] = -1.0  # ... but 3 and 11, which never do
    x = torch.randn(2, 4, 8, 8)
    # the ReLU's output is (2, 8, 8, 16): dim 1 would be the rows; a warning says so
    with (
        pytest.warns(
            UserWarning,
            match=r"looks channels-last \(16 channels, not 8\); if so, pass channel_dim=-1",
        ),
        torch.no_grad(),
        ChannelStatsRecorder(block, ["act"]) as rec,
    ):
        block(x)
    assert rec.summaries()["act"].channels == 8
    with torch.no_grad(), ChannelStatsRecorder(block, ["act"], channel_dim=-1) as rec:
        block(x)
    assert rec.summaries()["act"].channels == 16 and rec.summaries()["act"].dead == [3, 11]
    # an nn.Linear pre-activation on (N, L, C) sequences: its features (last dim) are the channels
    with torch.no_grad(), ChannelStatsRecorder(block, ["fc1"]) as rec:
        block(x)
    assert rec.summaries()["fc1"].dead == [3, 11]
    # the same counts as the transposed (N, C, ...) layout
    a = torch.randn(3, 5, 6, 7)
    last, first = (
        ChannelStats(7, "cpu", mode="activation", channel_dim=-1),
        ChannelStats(7, "cpu", mode="activation"),
    )
    last.update(a)
    first.update(a.movedim(-1, 1).contiguous())
    for name in ("count_on", "sum_mag", "max_mag", "last_on"):
        assert torch.allclose(getattr(last, name), getattr(first, name)), name
    with pytest.raises(ValueError, match=r"channels last"):
        last.update(torch.randn(2, 7, 3))


def test_a_missing_call_site_is_told_apart_from_a_module_that_never_runs() -> None:
    model = SmallCNN()
    with (
        torch.no_grad(),
        ChannelStatsRecorder(model, ["features.2@0", "features.2@3", "features.6"]) as rec,
    ):
        model(torch.randn(2, 1, 16, 16))
    assert list(rec.summaries()) == ["features.2@0", "features.6"]
    missing = rec.unreached()
    assert list(missing) == ["features.2@3"]
    assert (
        "runs 1 time per forward, so 'features.2@3' does not exist; valid: 'features.2@0', or "
        "'features.2'" in missing["features.2@3"]
    )
    spare = nn.Sequential(nn.ReLU(), nn.ReLU())
    with torch.no_grad(), ChannelStatsRecorder(spare) as rec:
        spare[0](torch.randn(2, 3))
    assert (
        list(rec.unreached()) == ["1"]
        and "is not run by any counted forward" in rec.unreached()["1"]
    )


def test_a_nan_counts_as_firing_whatever_rates_every_is() -> None:
    a = torch.rand(4, 2, 5) + 0.1
    a[:, 0] = -1.0
    a[0, 0, 0] = float("nan")  # channel 0: negative but for a NaN
    results = []
    for every in (1, 4):
        stats = ChannelStats(2, "cpu", rates_every=every)
        for _ in range(7):
            stats.update(a)
        results.append(_summary(stats).silent_steps.tolist())
    assert results[0] == results[1] == [0, 0]


def test_ranks_agree_on_unreached_layers_when_a_branch_runs_on_one_rank_only() -> None:
    """Rank 0's data go through branch ``a`` only, rank 1's through ``b`` only: after the reduction
    neither rank calls either branch unreached (a rank that did would warn, or raise alone)."""

    class TwoBranches(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.ReLU(), nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.a(x) if x.sum() > 0 else self.b(x)

    model = TwoBranches()
    ranks = [ChannelStatsRecorder(model), ChannelStatsRecorder(model)]
    for rec, sign in zip(ranks, (1.0, -1.0)):
        with rec:
            model(sign * torch.ones(2, 3))
    assert list(ranks[0].unreached()) == ["b"] and list(ranks[1].unreached()) == ["a"]  # before
    sent = [(r.layout(), dict(r.calls_per_forward)) for r in ranks]
    for rec in ranks:
        rec.summaries(all_reduce=lambda t, op: t, gather=lambda obj: sent)
        assert rec.unreached() == {}
