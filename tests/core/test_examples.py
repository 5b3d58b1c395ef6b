"""Dataset examples: planted top images, analytic receptive fields, projection rules, hygiene."""

from __future__ import annotations

import dataclasses
import itertools
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from featurewatch.core.calls import layer_call_counts
from featurewatch.core.drawing import examples_grid
from featurewatch.core.examples import merge_top_examples, top_examples, top_examples_multi
from featurewatch.core.projection import _relu_rule, project, project_detailed
from featurewatch.core.receptive_field import receptive_field, receptive_fields
from tests._hygiene import assert_untouched, snapshot
from tests._models import SmallCNN


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny nets run as fast on one thread, and a busy neighbour on 2 cores cannot stall them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Recorder(nn.Module):
    """Identity that records the batch size of every call."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(int(x.shape[0]))
        return x


def small_cnn() -> SmallCNN:
    torch.manual_seed(0)
    model = SmallCNN()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        model.train()
        model(torch.randn(8, 1, 16, 16, generator=gen(1)))
    return model.eval()


# ---------------------------------------------------------------------- top examples
def spot_detector() -> nn.Sequential:
    """Channel c fires only on an isolated bright pixel of colour c: centre 1, 8 neighbours -1/8."""
    conv = nn.Conv2d(3, 3, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        for c in range(3):
            conv.weight[c, c] = -1.0 / 8
            conv.weight[c, c, 1, 1] = 1.0
    return nn.Sequential(conv, nn.ReLU(inplace=True), Recorder(), nn.Flatten(), nn.LazyLinear(2))


# image index -> (colour, amplitude, (y, x)); everything else in the pool is black
PLANTED = {
    3: (0, 2.0, (2, 5)),
    11: (0, 3.0, (7, 1)),
    5: (0, 1.0, (11, 11)),  # corner of a 12x12 image: the zero padding must not matter
    0: (1, 1.5, (0, 0)),
    17: (1, 2.5, (11, 6)),
    8: (2, 4.0, (6, 6)),
}


def planted_pool(n: int = 20) -> torch.Tensor:
    pool = torch.zeros(n, 3, 12, 12)
    for i, (c, a, (y, x)) in PLANTED.items():
        pool[i, c, y, x] = a
    return pool


def test_planted_spots_are_found_in_order_of_value_at_their_positions() -> None:
    model = spot_detector()
    model(torch.zeros(1, 3, 12, 12))  # materialize the lazy head
    recorder: Recorder = model[2]  # type: ignore[assignment]
    recorder.batches.clear()
    top = top_examples(model, planted_pool(), "1@0", [0, 1, 2], k=4, batch_size=6)
    # '@0' names the call: no counting forward, and every forward stopped at the layer
    assert recorder.batches == []
    assert (
        top.layer == "1@0"
        and top.channels == [0, 1, 2]
        and top.map_size == (12, 12)
        and top.pool_size == 20
    )
    # planted images first by value, then ties at zero by lowest pool index (position: first in
    # row-major order)
    assert top.indices.tolist() == [[11, 3, 5, 0], [17, 0, 1, 2], [8, 0, 1, 2]]
    assert torch.allclose(
        top.values, torch.tensor([[3.0, 2.0, 1.0, 0.0], [2.5, 1.5, 0.0, 0.0], [4.0, 0.0, 0.0, 0.0]])
    )
    assert top.positions is not None
    assert top.positions.tolist() == [
        [[7, 1], [2, 5], [11, 11], [0, 0]],
        [[11, 6], [0, 0], [0, 0], [0, 0]],
        [[6, 6], [0, 0], [0, 0], [0, 0]],
    ]
    # without '@k' one single-image forward counts the calls; the pool's batches still stop at the
    # layer
    top2 = top_examples(model, planted_pool(), "1", [0, 1, 2], k=4, batch_size=6)
    assert recorder.batches == [1]
    assert torch.equal(top2.indices, top.indices) and torch.equal(top2.positions, top.positions)  # type: ignore[arg-type]


def brute_force(
    model: nn.Module, pool: torch.Tensor, prefix: nn.Module, channels: list[int], k: int
) -> tuple[list[list[int]], torch.Tensor]:
    """Per image, per channel: the spatial max; sorted by (-value, index). The reference oracle."""
    with torch.no_grad():
        # (N, C)
        maxima = torch.stack([prefix(img[None])[0, channels].flatten(1).amax(1) for img in pool])
    indices = [
        sorted(range(len(pool)), key=lambda i: (-float(maxima[i, c]), i))[:k]
        for c in range(len(channels))
    ]
    values = torch.stack([maxima[idx, c] for c, idx in enumerate(indices)])
    return indices, values


def test_batched_search_equals_a_per_image_loop() -> None:
    model = small_cnn()
    pool = torch.randn(37, 1, 16, 16, generator=gen(2))
    channels = [0, 5, 3, 15]
    top = top_examples(model, pool, "features.6", channels, k=7, batch_size=8)
    indices, values = brute_force(model, pool, model.features, channels, 7)
    assert top.indices.tolist() == indices
    assert torch.allclose(top.values, values, atol=1e-5)
    # the reported position holds the reported value
    with torch.no_grad():
        maps = model.features(pool)
    for r, c in enumerate(channels):
        for j in range(7):
            y, x = top.positions[r, j].tolist()  # type: ignore[index]
            assert torch.isclose(maps[top.indices[r, j], c, y, x], top.values[r, j], atol=1e-5)
    # k larger than the pool is capped; a fully-connected layer has no positions
    fc = top_examples(model, pool[:5], "fc", [2, 7], k=9)
    assert fc.k == 5 and fc.positions is None and fc.map_size is None
    with torch.no_grad():
        logits = model(pool[:5])
    assert fc.indices[0].tolist() == sorted(range(5), key=lambda i: (-float(logits[i, 2]), i))
    assert torch.allclose(fc.values[1], logits[fc.indices[1], 7], atol=1e-5)


def test_top_examples_errors_list_what_is_valid() -> None:
    model = small_cnn()
    pool = torch.zeros(4, 1, 16, 16)
    with pytest.raises(
        ValueError,
        match=r"channel 16 out of range for layer 'features.6' with 16 channels \(valid: 0\.\.15\)",
    ):
        top_examples(model, pool, "features.6", [0, 16])
    with pytest.raises(ValueError, match=r"not found in SmallCNN.*features\.6"):
        top_examples(model, pool, "features.60", [0])
    with pytest.raises(ValueError, match="`k`"):
        top_examples(model, pool, "features.6", [0], k=0)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        top_examples(model, pool[0], "features.6", [0])


def counting_model() -> tuple[nn.Sequential, list[Recorder]]:
    """conv | rec0 | in-place ReLU | conv (watched) | rec1 | in-place ReLU (watched, deepest) |
    rec2 | head."""
    torch.manual_seed(1)
    rec = [Recorder() for _ in range(3)]
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3),  # 0
        rec[0],  # 1
        nn.ReLU(inplace=True),  # 2
        nn.Conv2d(3, 4, 3),  # 3
        rec[1],  # 4
        nn.ReLU(inplace=True),  # 5
        rec[2],  # 6
        nn.Flatten(),
        nn.LazyLinear(2),
    )
    with torch.no_grad():
        model[3].bias[0] = -10.0  # channel 0 of layer '3' is negative everywhere
    model(torch.zeros(1, 1, 12, 12))  # materialize the lazy head
    for r in rec:
        r.batches.clear()
    return model, rec


def test_several_layers_share_one_truncated_pass_over_the_pool() -> None:
    model, rec = counting_model()
    pool = torch.randn(10, 1, 12, 12, generator=gen(12))
    tops = top_examples_multi(model, pool, {"3": [0, 3], "5": [1, 2], "0": 2}, k=3, batch_size=4)
    # one single-image counting forward, then each module up to the deepest layer ('5') once per
    # pool batch; nothing after it
    assert rec[0].batches == rec[1].batches == [1, 4, 4, 2]
    assert rec[2].batches == [1]
    assert list(tops) == ["3", "5", "0"]
    for layer, chans in (("3", [0, 3]), ("5", [1, 2]), ("0", [2])):
        alone = top_examples(model, pool, layer, chans, k=3, batch_size=4)
        got = tops[layer]
        # '3' is followed by an in-place ReLU: its capture must still be the pre-ReLU conv output
        assert got.layer == alone.layer and got.channels == alone.channels
        assert torch.equal(got.indices, alone.indices) and torch.equal(got.values, alone.values)
        assert torch.equal(got.positions, alone.positions)  # type: ignore[arg-type]
    assert (tops["3"].values[0] < 0).all()  # (so the ReLU would have changed it)
    # counts computed once (per input shape) are reused: no counting forward at all
    counts = layer_call_counts(model, pool, ["3", "5", "0"])
    assert counts == {"0": 1, "3": 1, "5": 1}
    for r in rec:
        r.batches.clear()
    again = top_examples_multi(
        model, pool, {"3": [0, 3], "5": [1, 2]}, k=3, batch_size=4, call_counts=counts
    )
    assert rec[0].batches == [4, 4, 2] and rec[2].batches == []
    assert torch.equal(again["5"].indices, tops["5"].indices)
    with pytest.raises(ValueError, match="`channels` must name at least one layer"):
        top_examples_multi(model, pool, {}, k=3)
    with pytest.raises(TypeError, match=r"`channels` must be a mapping \{layer: channel"):
        top_examples_multi(model, pool, [0, 1], k=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="channel 4 out of range for layer '3'"):
        top_examples_multi(model, pool, {"0": [0], "3": [4]})


# ---------------------------------------------------------------------- receptive fields
# (kernel, stride, padding, dilation) of each spatial layer, in order
STACK = [(3, 1, 1, 1), (3, 1, 1, 1), (2, 2, 0, 1), (3, 2, 1, 1), (3, 1, 2, 2)]


def rf_stack() -> nn.Sequential:
    """3x3 conv, 3x3 conv, 2x2 max-pool, strided 3x3 conv, dilated 3x3 conv; in-place ReLUs and a
    BatchNorm whose statistics make most pre-activations negative."""
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.running_mean.fill_(50.0)  # type: ignore[union-attr]
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),  # 0
        bn,  # 1
        nn.ReLU(inplace=True),  # 2
        nn.Conv2d(4, 4, 3, padding=1),  # 3
        nn.ReLU(inplace=True),  # 4
        nn.MaxPool2d(2),  # 5
        nn.Conv2d(4, 4, 3, stride=2, padding=1),  # 6
        nn.ReLU(),  # 7
        nn.Conv2d(4, 3, 3, padding=2, dilation=2),  # 8
    )


def analytic_box(
    specs: list[tuple[int, int, int, int]], y: int, x: int, size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """Walk the unit's index sets back through each layer: index i reads i*s - p + d*t for t < k,
    keeping only indices inside that layer's input (the rest is zero padding)."""
    sizes = [size]
    for k, s, p, d in specs:
        sizes.append(tuple((n + 2 * p - d * (k - 1) - 1) // s + 1 for n in sizes[-1]))  # type: ignore[arg-type]
    rows, cols = {y}, {x}
    for (k, s, p, d), (h, w) in zip(reversed(specs), reversed(sizes[:-1])):
        rows = {i * s - p + d * t for i in rows for t in range(k)} & set(range(h))
        cols = {i * s - p + d * t for i in cols for t in range(k)} & set(range(w))
    return min(rows), min(cols), max(rows) + 1, max(cols) + 1


@pytest.mark.parametrize(("layer", "specs"), [("8", STACK), ("5", STACK[:3]), ("2", STACK[:1])])
def test_receptive_fields_equal_the_analytic_ones_including_border_clipping(
    layer: str, specs: list
) -> None:
    model = rf_stack()
    size = (20, 28)  # not square: rows and columns cannot be swapped unnoticed
    with torch.no_grad():
        out = model[: int(layer) + 1](torch.zeros(1, 2, *size))
    h, w = out.shape[-2:]
    positions = [(y, x) for y in range(h) for x in range(w)]
    boxes = receptive_fields(model, layer, (2, *size), positions, batch_size=17)
    assert boxes == [analytic_box(specs, y, x, size) for y, x in positions]
    if layer == "8":
        # worked by hand: 1 + 2 + 2 -> 6 -> + 2*2 -> 10 -> + 2*2*2*2 = 26 px wide at full size;
        # at the right border the dilated taps of the last conv land on padding: 18 px, not 20
        assert boxes[positions.index((2, 3))] == (0, 0, 20, 26)
        assert boxes[positions.index((0, 5))] == (0, 8, 14, 26)


class SaturatingResidual(nn.Module):
    """A MobileNet-like net: conv-BN-ReLU6 stem, three residual blocks ``act(x + conv(x))`` sharing
    one in-place ReLU6, a 2x2 max-pool, a strided conv + Hardswish, a dilated conv + Hardtanh(0, 1).

    Under any positive stand-in the residual sums double block after block, so a clamping ReLU6 or
    Hardtanh saturates (zero gradient) unless activations are bypassed. The spatial layers on the
    longest path are those of ``rf_stack`` with two more 3x3 convolutions; the skips add nothing.
    """

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU6(inplace=True)
        )
        self.blocks = nn.ModuleList(nn.Conv2d(4, 4, 3, padding=1) for _ in range(3))
        self.act = nn.ReLU6(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.down = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.hswish = nn.Hardswish()
        self.last = nn.Conv2d(4, 3, 3, padding=2, dilation=2)
        self.cap = nn.Hardtanh(0.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for conv in self.blocks:
            x = self.act(x + conv(x))
        x = self.hswish(self.down(self.pool(x)))
        return self.cap(self.last(x))


RESIDUAL_STACK = [(3, 1, 1, 1)] * 2 + STACK


@pytest.mark.parametrize(
    ("layer", "specs"),
    [("cap", RESIDUAL_STACK), ("hswish", RESIDUAL_STACK[:6]), ("act", RESIDUAL_STACK[:4])],
)
def test_saturating_activations_after_residual_sums_keep_the_analytic_boxes(
    layer: str, specs: list
) -> None:
    model = SaturatingResidual().eval()
    size = (20, 28)
    out: dict[str, torch.Tensor] = {}
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: out.update(o=o))
    with torch.no_grad():
        model(torch.zeros(1, 2, *size))
    handle.remove()
    h, w = out["o"].shape[-2:]
    positions = [(y, x) for y in range(h) for x in range(w)]
    before = snapshot(model)
    boxes = receptive_fields(model, layer, (2, *size), positions, batch_size=64)
    assert boxes == [analytic_box(specs, y, x, size) for y, x in positions]
    assert_untouched(model, before)  # the pass-through hooks are gone, in-place flags unchanged


def test_receptive_field_is_architectural_and_contains_every_real_gradient() -> None:
    model = rf_stack()
    shape = (2, 20, 28)
    box = receptive_field(model, "8", shape, (1, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()  # a dead network: its gradients vanish, its receptive field does not
    assert receptive_field(model, "8", shape, (1, 2)) == box
    live = rf_stack()
    live[1].reset_running_stats()  # type: ignore[operator]  # so that the real ReLUs let some gradient through
    live.eval()  # (in train mode, BatchNorm's batch statistics make every pixel count)
    for seed in range(3):
        x = torch.randn(1, *shape, generator=gen(seed), requires_grad=True)
        (g,) = torch.autograd.grad(live(x)[0, :, 1, 2].sum(), x)
        ys, xs = torch.nonzero(g[0].abs().sum(0), as_tuple=True)
        assert ys.numel() > 0
        top, left, bottom, right = box
        assert top <= ys.min() and ys.max() < bottom and left <= xs.min() and xs.max() < right


def test_fully_connected_unit_sees_the_whole_image_and_bad_positions_fail() -> None:
    model = small_cnn()
    assert receptive_field(model, "fc", (1, 16, 16)) == (0, 0, 16, 16)
    assert receptive_field(model, "features.6", (1, 16, 16), (3, 3)) == (3, 3, 11, 11)
    with pytest.raises(ValueError, match=r"outside the 8x8 feature map.*valid: y 0\.\.7, x 0\.\.7"):
        receptive_field(model, "features.6", (1, 16, 16), (8, 0))
    with pytest.raises(ValueError, match="give a \\(y, x\\) position"):
        receptive_field(model, "features.6", (1, 16, 16), None)
    with pytest.raises(ValueError, match="`input_shape`"):
        receptive_field(model, "features.6", (16, 16), (0, 0))


# ---------------------------------------------------------------------- projections
class OneReLU(nn.Module):
    """unit = w * relu(x[y, x]): every rule has a closed form."""

    def __init__(self, w: float) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.scale = nn.Conv2d(1, 1, 1, bias=False)
        with torch.no_grad():
            self.scale.weight.fill_(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale(self.relu(x))


def test_rules_in_closed_form_on_one_relu() -> None:
    # the unit at (0, 0) is on, at (0, 1) off
    x = torch.tensor([[[[1.0, -1.0]]]]).repeat(2, 1, 1, 1)
    pos = [(0, 0), (0, 1)]

    def run(w: float, rule: str) -> list[float]:
        g = project(OneReLU(w), x, "scale", 0, pos, rule=rule)  # type: ignore[arg-type]
        return [float(g[0, 0, 0, 0]), float(g[1, 0, 0, 1])]

    assert run(2.0, "gradient") == [2.0, 0.0]
    assert run(-2.0, "gradient") == [-2.0, 0.0]
    assert run(2.0, "guided") == [2.0, 0.0]  # forward mask
    assert run(-2.0, "guided") == [0.0, 0.0]  # negative gradient removed
    assert run(2.0, "deconvnet") == [2.0, 2.0]  # the forward mask is ignored...
    assert run(-2.0, "deconvnet") == [0.0, 0.0]  # ...but negative gradient is still removed


class OneActivation(nn.Module):
    """unit = w * act(x[y, x]) for any rectifier module ``act``."""

    def __init__(self, act: nn.Module, w: float) -> None:
        super().__init__()
        self.act = act
        self.scale = nn.Conv2d(1, 1, 1, bias=False)
        with torch.no_grad():
            self.scale.weight.fill_(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale(self.act(x))


# inputs -1 (off), 3 (on), 7 (above ReLU6's cap); per activation and rule: the projection at each
# input
# for w = 2 and w = -2. Guided: relu(grad) * f'(x); deconvnet: relu(grad); gradient: grad * f'(x).
CAPPED_AND_LEAKY = {
    "relu6": (
        lambda: nn.ReLU6(inplace=True),
        {
            "gradient": ([0, 2, 0], [0, -2, 0]),
            "guided": ([0, 2, 0], [0, 0, 0]),
            "deconvnet": ([2, 2, 2], [0, 0, 0]),
        },
    ),
    "leaky": (
        lambda: nn.LeakyReLU(0.1),
        {
            "gradient": ([0.2, 2, 2], [-0.2, -2, -2]),
            "guided": ([0.2, 2, 2], [0, 0, 0]),
            "deconvnet": ([2, 2, 2], [0, 0, 0]),
        },
    ),
    "hardtanh_0_1": (
        lambda: nn.Hardtanh(0.0, 1.0),
        {
            "gradient": ([0, 0, 0], [0, 0, 0]),
            "guided": ([0, 0, 0], [0, 0, 0]),
            "deconvnet": ([2, 2, 2], [0, 0, 0]),
        },
    ),
}


@pytest.mark.parametrize("act", sorted(CAPPED_AND_LEAKY))
@pytest.mark.parametrize("rule", ["gradient", "guided", "deconvnet"])
def test_rules_in_closed_form_on_relu6_leaky_relu_and_capped_hardtanh(act: str, rule: str) -> None:
    make, table = CAPPED_AND_LEAKY[act]
    x = torch.tensor([[[[-1.0, 3.0, 7.0]]]]).repeat(3, 1, 1, 1)
    pos = [(0, 0), (0, 1), (0, 2)]
    for w, want in zip((2.0, -2.0), table[rule]):
        model = OneActivation(make(), w)
        result = project_detailed(model, x, "scale", 0, pos, rule=rule)  # type: ignore[arg-type]
        got = [float(result.gradients[i, 0, 0, i]) for i in range(3)]
        assert got == pytest.approx(want, abs=1e-6), (w, got)
        assert result.rule_calls == (0 if rule == "gradient" else 1)
        # the rewritten module computes the same forward values
        with torch.no_grad(), _relu_rule(model, rule) as calls:
            assert torch.equal(model(x), OneActivation(make(), w)(x))
        assert calls[0] == (0 if rule == "gradient" else 1)


class FunctionalReLU(nn.Module):
    """Rectifies with F.relu: no module a rule could rewrite."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.c2(F.relu(self.c1(x))))


def test_a_rule_with_no_rectifier_module_to_rewrite_says_it_is_the_plain_gradient() -> None:
    x = torch.randn(3, 1, 8, 8, generator=gen(13))
    model = FunctionalReLU()
    plain = project(model, x, "c2", 0, rule="gradient")
    assert (plain < 0).any()
    for rule in ("guided", "deconvnet"):
        result = project_detailed(model, x, "c2", 0, rule=rule)  # type: ignore[arg-type]
        assert result.rule_calls == 0 and result.plain and torch.equal(result.gradients, plain)
        with pytest.warns(
            UserWarning,
            match=r"no nn\.ReLU/ReLU6/LeakyReLU module runs before layer 'c2'.*plain gradient",
        ):
            assert torch.equal(project(model, x, "c2", 0, rule=rule), plain)  # type: ignore[arg-type]
    # a layer before the first nn.ReLU of a network that has them: the same
    two = TwoLayer()
    assert project_detailed(two, x.repeat(1, 2, 1, 1), "conv1", 0, rule="guided").plain
    # rectifier modules up to the layer are counted (a reused module once per call); no warning then
    reused = TwoLayer(inplace=True, shared=True)
    assert (
        project_detailed(reused, x.repeat(1, 2, 1, 1), "relu1@1", 0, rule="guided").rule_calls == 2
    )
    assert (
        project_detailed(reused, x.repeat(1, 2, 1, 1), "relu1@0", 0, rule="deconvnet").rule_calls
        == 1
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        project(reused, x.repeat(1, 2, 1, 1), "relu1", 0, rule="guided")
        project(model, x, "c2", 0, rule="gradient")  # the plain gradient asked for: nothing to say


class EditsReLUInputInPlace(nn.Module):
    """Scales the ReLU's input in place after the ReLU ran: legal, since PyTorch's ReLU saves its
    output."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c1(x)
        a = self.relu(h)
        h.mul_(0.5)
        return self.c2(a + h)


@pytest.mark.parametrize("rule", ["guided", "deconvnet"])
def test_rules_work_when_the_model_edits_the_relu_input_in_place(rule: str) -> None:
    model = EditsReLUInputInPlace().eval()
    x = torch.randn(2, 1, 8, 8, generator=gen(14))
    got = project(model, x, "c2", [0, 3], (3, 3), rule=rule)  # type: ignore[arg-type]
    # by hand: unit = c2(relu(h) + h / 2); the rule at the ReLU, the plain gradient on the h / 2
    # path
    xr = x.clone().requires_grad_(True)
    h = model.c1(xr)
    s = (h.detach().clamp_min(0) + h.detach() / 2).requires_grad_(True)
    out = model.c2(s)
    (g_s,) = torch.autograd.grad(out[0, 0, 3, 3] + out[1, 3, 3, 3], s)
    through = g_s.clamp_min(0) * (h.detach() > 0) if rule == "guided" else g_s.clamp_min(0)
    (want,) = torch.autograd.grad(h, xr, through + g_s / 2)
    assert torch.allclose(got, want, atol=1e-6) and got.abs().sum() > 0


class TwoLayer(nn.Module):
    def __init__(self, inplace: bool = False, shared: bool = False) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 3, 3, padding=1)
        self.relu1 = nn.ReLU(inplace=inplace)
        self.relu2 = self.relu1 if shared else nn.ReLU(inplace=inplace)
        self.head = nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.relu2(self.conv2(self.relu1(self.conv1(x)))))


def reference(
    model: TwoLayer,
    x: torch.Tensor,
    channels: list[int],
    rule: str,
    positions: list[tuple[int, int]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step-by-step backward through conv2/conv1 (plain autograd on the convolutions only), with the
    rule applied by hand at each ReLU. Returns the projection and the first ReLU's forward input."""
    x = x.clone().requires_grad_(True)
    a1 = model.conv1(x)
    h1 = a1.detach().clamp_min(0).requires_grad_(True)
    a2 = model.conv2(h1)
    target = a2.detach().clamp_min(0)
    n = x.shape[0]
    onehot = torch.zeros_like(target)
    for i, c in enumerate(channels):
        if positions is None:
            onehot[i, c].view(-1)[int(target[i, c].flatten().argmax())] = 1.0
        else:
            onehot[i, c, positions[i][0], positions[i][1]] = 1.0

    def through(grad: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        if rule == "gradient":
            return grad * (pre > 0)
        if rule == "guided":
            return grad.clamp_min(0) * (pre > 0)
        return grad.clamp_min(0)  # deconvnet

    g_a2 = through(onehot, a2.detach())
    (g_h1,) = torch.autograd.grad(a2, h1, g_a2)
    g_a1 = through(g_h1, a1.detach())
    (g_x,) = torch.autograd.grad(a1, x, g_a1)
    assert n == len(channels)
    return g_x, a1.detach()


@pytest.mark.parametrize("rule", ["gradient", "guided", "deconvnet"])
def test_rules_match_a_hand_written_backward(rule: str) -> None:
    model = TwoLayer()
    x = torch.randn(4, 2, 9, 9, generator=gen(4))
    channels = [0, 1, 2, 1]
    got = project(model, x, "relu2", channels, rule=rule, batch_size=3)  # type: ignore[arg-type]
    want, _ = reference(model, x, channels, rule)
    assert torch.allclose(got, want, atol=1e-6)
    assert got.abs().sum() > 0


def test_gradient_rule_is_torch_autograd_and_deconvnet_ignores_the_mask() -> None:
    model = TwoLayer()
    x = torch.randn(3, 2, 9, 9, generator=gen(5))
    plain = project(model, x, "conv2", [0, 2, 1], [(4, 4), (0, 8), (2, 3)], rule="gradient")
    xr = x.clone().requires_grad_(True)
    out = model.conv2(model.relu1(model.conv1(xr)))
    (g,) = torch.autograd.grad(out[0, 0, 4, 4] + out[1, 2, 0, 8] + out[2, 1, 2, 3], xr)
    assert torch.allclose(plain, g, atol=1e-6)

    guided = project(model, x, "relu2", [0, 2, 1], rule="guided")
    deconv = project(model, x, "relu2", [0, 2, 1], rule="deconvnet")
    # the difference comes from ReLU inputs that were <= 0 in the forward pass but get positive
    # gradient
    _, a1 = reference(model, x, [0, 2, 1], "deconvnet")
    assert (a1 <= 0).any()
    assert not torch.allclose(guided, deconv)
    masked_deconv, _ = reference(model, x, [0, 2, 1], "guided")
    assert torch.allclose(guided, masked_deconv, atol=1e-6)

    # a unit that is off (its ReLU input <= 0) at the target ReLU itself: guided gives nothing, the
    # deconvnet still projects it (the rule applies at the captured ReLU too)
    with torch.no_grad():
        pre = model.conv2(model.relu1(model.conv1(x)))
    off = [tuple(int(v) for v in torch.nonzero(pre[i, c] <= 0)[0]) for i, c in enumerate([0, 2, 1])]
    guided_off = project(model, x, "relu2", [0, 2, 1], off, rule="guided")
    deconv_off = project(model, x, "relu2", [0, 2, 1], off, rule="deconvnet")
    assert guided_off.abs().sum() == 0
    want, _ = reference(model, x, [0, 2, 1], "deconvnet", off)  # type: ignore[arg-type]
    assert want.abs().sum() > 0 and torch.allclose(deconv_off, want, atol=1e-6)


@pytest.mark.parametrize("rule", ["gradient", "guided", "deconvnet"])
def test_inplace_and_reused_relu_give_the_twin_models_result(rule: str) -> None:
    twin = TwoLayer(inplace=False, shared=False)
    reused = TwoLayer(inplace=True, shared=True)
    reused.load_state_dict(twin.state_dict())
    x = torch.randn(3, 2, 9, 9, generator=gen(6))
    a = project(twin, x, "relu2", [0, 1, 2], rule=rule)  # type: ignore[arg-type]
    b = project(reused, x, "relu1", [0, 1, 2], rule=rule)  # type: ignore[arg-type]  # last call = relu2
    c = project(reused, x, "relu1@1", [0, 1, 2], rule=rule)  # type: ignore[arg-type]
    assert torch.allclose(a, b, atol=1e-6) and torch.equal(b, c)
    first = project(twin, x, "relu1", [3, 0, 1], rule=rule)  # type: ignore[arg-type]
    first_reused = project(reused, x, "relu1@0", [3, 0, 1], rule=rule)  # type: ignore[arg-type]
    assert torch.allclose(first, first_reused, atol=1e-6)


def test_position_none_is_the_channels_maximum_and_batching_changes_nothing() -> None:
    model = small_cnn()
    x = torch.randn(6, 1, 16, 16, generator=gen(7))
    top = top_examples(model, x, "features.6", [4], k=6)
    order = top.indices[0]
    auto = project(model, x[order], "features.6", 4, batch_size=4)
    explicit = project(model, x[order], "features.6", 4, top.positions[0], batch_size=1)  # type: ignore[index]
    assert torch.allclose(auto, explicit, atol=1e-6)
    # positions given for some images and found for others, in one batch
    mixed = [None, tuple(top.positions[0, 1].tolist()), None, (0, 0), None, (7, 7)]  # type: ignore[index]
    got = project(model, x[order], "features.6", 4, mixed, batch_size=6)
    for i, p in enumerate(mixed):
        one = project(model, x[order][i : i + 1], "features.6", 4, None if p is None else [p])
        assert torch.allclose(got[i : i + 1], one, atol=1e-6)
    with pytest.raises(ValueError, match="`rule`"):
        project(model, x, "features.6", 0, rule="lrp")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one per image"):
        project(model, x, "features.6", [0, 1])


# ---------------------------------------------------------------------- hygiene
def messy_cnn() -> SmallCNN:
    """Mixed train flags, a frozen parameter and a parameter with an existing .grad."""
    model = small_cnn()
    model.train()
    model.features[1].eval()
    params = list(model.parameters())
    params[0].requires_grad_(False)
    params[2].grad = torch.full_like(params[2], 0.25)
    return model


POOL = torch.randn(10, 1, 16, 16, generator=gen(8))
ENTRY_POINTS: dict[str, Callable[[nn.Module], object]] = {
    "top_examples": lambda m: top_examples(m, POOL, "features.6", [0, 1], k=3, batch_size=4),
    "receptive_fields": lambda m: receptive_fields(
        m, "features.6", (1, 16, 16), [(0, 0), (5, 2)], trials=2
    ),
    "project_guided": lambda m: project(m, POOL[:3], "features.6", [0, 1, 2], rule="guided"),
    "project_deconvnet": lambda m: project(m, POOL[:3], "features.2", 1, rule="deconvnet"),
    "project_gradient": lambda m: project(m, POOL[:3], "fc", 3, rule="gradient"),
    "project_detailed": lambda m: project_detailed(m, POOL[:3], "features.6", [0, 1, 2]),
    "top_examples_multi": lambda m: top_examples_multi(
        m, POOL, {"features.2": [0], "features.6": [1, 2], "fc": 3}, k=3, batch_size=4
    ),
    "layer_call_counts": lambda m: layer_call_counts(m, POOL, ["features.2", "fc"]),
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_entry_points_leave_the_model_untouched(entry: str) -> None:
    model = messy_cnn()
    before = snapshot(model)
    ENTRY_POINTS[entry](model)
    assert_untouched(model, before)


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_work_from_inside_inference_mode_with_frozen_parameters(entry: str) -> None:
    model = small_cnn()
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.inference_mode():
        result = ENTRY_POINTS[entry](model)
    assert all(not p.requires_grad for p in model.parameters())
    assert_same(result, ENTRY_POINTS[entry](model))  # as outside inference mode


def assert_same(a: Any, b: Any) -> None:
    """Equal results, field by field; tensors exactly equal and not all zero."""
    assert type(a) is type(b)
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b) and a.abs().sum() > 0
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            assert_same(a[key], b[key])
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            value = getattr(a, f.name)
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, getattr(b, f.name)), f.name
            else:
                assert value == getattr(b, f.name), f.name
    else:
        assert a == b and a


class Exploding(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom inside the model")


@pytest.mark.parametrize("rule", ["guided", "deconvnet"])
def test_an_exception_inside_the_model_leaves_no_hook(rule: str) -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2), Exploding(), nn.Conv2d(2, 2, 3)
    )
    before = snapshot(model)
    x = torch.randn(2, 1, 12, 12, generator=gen(9))
    with pytest.raises(RuntimeError, match="boom"):
        project(model, x, "4", 0, rule=rule)  # type: ignore[arg-type]
    assert_untouched(model, before)
    with pytest.raises(RuntimeError, match="boom"):
        receptive_field(model, "4", (1, 12, 12), (0, 0))  # max-pool hooks and stand-in parameters
    assert_untouched(model, before)
    with pytest.raises(RuntimeError, match="boom"):
        top_examples(model, x, "4", [0])
    assert_untouched(model, before)
    with pytest.raises(RuntimeError, match="boom"):
        top_examples_multi(model, x, {"0": [0], "4": [0]}, call_counts={"0": 1, "4": 1})
    assert_untouched(model, before)
    with pytest.raises(RuntimeError, match="boom"):
        layer_call_counts(model, x, ["0", "4"])  # the model fails before '4' is reached
    assert layer_call_counts(model, x, ["0", "1"]) == {"0": 1, "1": 1}  # ... but after these
    assert_untouched(model, before)


def test_layers_after_the_target_are_never_called() -> None:
    after = Recorder()
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3),
        nn.ReLU(),
        nn.Conv2d(3, 3, 3),
        nn.ReLU(),
        after,
        nn.Flatten(),
        nn.LazyLinear(2),
    )
    model(torch.zeros(1, 1, 12, 12))
    after.batches.clear()
    x = torch.randn(9, 1, 12, 12, generator=gen(10))
    top_examples(model, x, "3@0", [0, 1], k=2, batch_size=4)
    project(model, x, "3@0", 1, rule="guided", batch_size=4)
    receptive_fields(model, "3@0", (1, 12, 12), [(0, 0), (7, 7)])
    assert after.batches == []
    # without '@k': one single-image counting forward only
    project(model, x, "3", 1, rule="deconvnet")
    assert after.batches == [1]


# ---------------------------------------------------------------------- the picture
def test_grid_layout_and_zero_projection_is_grey() -> None:
    model = small_cnn()
    pool = torch.randn(12, 1, 16, 16, generator=gen(11))
    top = top_examples(model, pool, "features.6", [0, 1], k=3)
    assert top.positions is not None
    flat = [tuple(p) for p in top.positions.flatten(0, 1).tolist()]
    boxes = receptive_fields(model, "features.6", (1, 16, 16), flat)
    rows = [boxes[:3], boxes[3:]]
    proj = torch.zeros(2, 3, 1, 16, 16)
    image = examples_grid(pool, top, boxes=rows, projections=proj, min_size=32)
    tile, k = 32, 3  # 16 px enlarged twice; groups: k tiles, padding 1; 6 px gaps; rows padded by 4
    group = k * (tile + 1) + 1
    assert tuple(image.shape) == (3, 2 * (tile + 2 + 4) + 4, 3 * group + 2 * 6 + 8)
    assert image.min() >= 0 and image.max() <= 1
    # the projection group of row 0: zero gradient is mid-grey, inside the fitted crop
    x0 = 4 + 2 * group + 2 * 6 + 1
    centre = image[:, 4 + 1 + tile // 2, x0 + tile // 2]
    assert torch.allclose(centre, torch.full((3,), 0.5))
    # without boxes and projections only the images remain; a 2-D layer works the same way
    fc = top_examples(model, pool, "fc", [0, 1], k=3)
    plain = examples_grid(pool, fc, min_size=16)
    assert tuple(plain.shape) == (3, 2 * (16 + 2 + 4) + 4, k * 17 + 1 + 8)
    with pytest.raises(ValueError, match="`boxes`"):
        examples_grid(pool, top, boxes=rows[:1])


def test_row_titles_sit_in_a_strip_above_each_row_and_the_tiles_keep_their_place() -> None:
    from featurewatch.core.labels import label_font, text_band

    model = small_cnn()
    pool = torch.randn(12, 1, 16, 16, generator=gen(12))
    fc = top_examples(model, pool, "fc", [0, 1], k=3)
    plain = examples_grid(pool, fc, min_size=16)
    titles = ["ch 0 · top 3", "ch 1 · top 3"]
    labelled = examples_grid(pool, fc, min_size=16, row_titles=titles, header="fc · epoch 0")
    strip = sum(label_font(11).getmetrics()) + 6
    header = sum(label_font(12).getmetrics()) + 6 + 4
    row_w, row_h = 3 * 17 + 1, 16 + 2
    assert labelled.shape[1] == plain.shape[1] + header + 2 * strip
    for r, title in enumerate(titles):
        y = header + 4 + r * (strip + row_h + 4)
        band = labelled[:, y : y + strip, 4 : 4 + row_w]
        assert torch.equal(band, text_band(row_w, title, size=11, background=0.94))
        assert (band.min(dim=0).values < 0.5).sum() > 20  # dark text on it
        tiles = labelled[:, y + strip : y + strip + row_h, 4 : 4 + row_w]
        assert torch.equal(
            tiles, plain[:, 4 + r * (row_h + 4) : 4 + r * (row_h + 4) + row_h, 4 : 4 + row_w]
        )
    assert (labelled[:, 4 : header - 1].min(dim=0).values < 0.5).any()  # the header's text
    with pytest.raises(ValueError, match="one title per row"):
        examples_grid(pool, fc, row_titles=["ch 0"])


def test_top_examples_of_consecutive_parts_merge_into_those_of_the_whole_pool() -> None:
    # what a DatasetExamples call split across DDP ranks does: each rank searches one part
    model = small_cnn()
    pool = torch.randn(23, 1, 16, 16, generator=gen(5))
    pool[[2, 9, 17]] = pool[4].clone()  # exact ties across the parts: the lower index first
    pool[12, :, 3:6, 3:6] = float("nan")  # NaN ranks last
    wanted = {"features.2": [0, 3, 5], "features.6": list(range(6))}
    whole = top_examples_multi(model, pool, wanted, k=7)
    for cuts in ([0, 12, 23], [0, 3, 10, 23], [0, 5, 6, 23]):  # a part may be smaller than k
        parts = [
            (lo, top_examples_multi(model, pool[lo:hi], wanted, k=7))
            for lo, hi in itertools.pairwise(cuts)
        ]
        for layer in wanted:
            merged = merge_top_examples([(o, t[layer]) for o, t in parts], k=7)
            assert torch.equal(merged.indices, whole[layer].indices)
            assert torch.equal(merged.values, whole[layer].values)
            assert torch.equal(merged.positions, whole[layer].positions)
            assert merged.pool_size == 23 and merged.channels == whole[layer].channels
    with pytest.raises(ValueError, match="same layer"):
        merge_top_examples([(0, whole["features.2"]), (23, whole["features.6"])], k=7)
