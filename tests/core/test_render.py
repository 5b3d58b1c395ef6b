"""The render loop: objective rises, batched == per-channel, hygiene, truncation, budget, errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from featurewatch.core.deepdream import deep_dream
from featurewatch.core.inspect import activation_maps
from featurewatch.core.objectives import Objective, channel, class_logit, diverse, neuron
from featurewatch.core.param import ImageSpec
from featurewatch.core.render import (
    class_model_images,
    render,
    unit_objective,
    visualize_channels,
)
from tests._hygiene import assert_untouched, snapshot
from tests._models import SmallCNN, TinyResNet


def small_cnn() -> SmallCNN:
    torch.manual_seed(0)
    m = SmallCNN()
    # non-trivial BN statistics, so "unchanged" means something
    with torch.no_grad():
        m.train()
        m(torch.randn(8, 1, 16, 16))
    return m


# ---------------------------------------------------------------------- hygiene
def prepare_messy_state(model: nn.Module) -> None:
    """Mixed train flags, a frozen parameter, a parameter with an existing .grad."""
    model.train()
    mods = list(model.modules())
    mods[1].eval()
    params = list(model.parameters())
    params[0].requires_grad_(False)
    params[1].grad = torch.full_like(params[1], 0.25)


ENTRY_POINTS: dict[str, Callable[[nn.Module], object]] = {
    "render": lambda m: render(
        m,
        channel("features.6", range(4)),
        ImageSpec(1, 16),
        steps=3,
        redirect_steps=2,
        l2=0.1,
        tv=0.1,
        blur_every=2,
        polish_steps=1,
    ),
    "visualize_channels": lambda m: visualize_channels(
        m, "features.2", [0, 3], size=16, steps=2, batch_size=1
    ),
    "class_model_images": lambda m: class_model_images(
        m, [1, 2], size=16, steps=2, normalize=((0.3,), (0.4,))
    ),
    "neuron_negative": lambda m: visualize_channels(
        m, "features.6", [1], size=16, steps=2, unit="neuron", negative=True
    ),
    "deep_dream": lambda m: deep_dream(
        m,
        torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0)),
        "features.6",
        octaves=2,
        steps=2,
    ),
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_entry_points_leave_the_model_untouched(entry: str) -> None:
    model = small_cnn()
    prepare_messy_state(model)
    before = snapshot(model)
    ENTRY_POINTS[entry](model)
    assert_untouched(model, before)


def test_failing_objective_leaves_the_model_untouched_too() -> None:
    model = TinyResNet(in_channels=3)
    prepare_messy_state(model)
    before = snapshot(model)
    calls = {"n": 0}

    def explode(acts: Any, index: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] > 2:
            raise RuntimeError("boom")
        return acts["layer1.relu@0"].flatten(1).mean(1)

    with pytest.raises(RuntimeError, match="boom"):
        render(
            model,
            Objective(explode, ["layer1.relu@0"]),
            ImageSpec(3, 16),
            steps=4,
            redirect_steps=4,
        )
    assert_untouched(model, before)
    with pytest.raises(ValueError, match="out of range"):
        render(model, channel("layer1", 99), ImageSpec(3, 16), steps=1)
    assert_untouched(model, before)


def test_works_from_inside_inference_mode() -> None:
    model = small_cnn()
    with torch.inference_mode():
        result = render(model, channel("features.6", 0), ImageSpec(1, 16), steps=3)
    assert result.values.shape == (1,)
    assert not result.images.is_inference()


# ---------------------------------------------------------------------- behaviour
def test_objective_rises_and_negative_objective_falls() -> None:
    model = small_cnn()
    up = render(
        model, channel("features.2", range(8)), ImageSpec(1, 16), steps=20, lr=0.1, redirect_steps=5
    )
    assert (up.values > up.initial_values).float().mean() >= 0.75
    assert up.values.mean() > up.initial_values.mean() + 0.05
    down = render(model, -channel("features.2", range(8)), ImageSpec(1, 16), steps=20, lr=0.1)
    # the maximized value is -activation: it rises, i.e. the activation falls
    assert (down.values >= down.initial_values).all()
    assert (-down.values).mean() < (-down.initial_values).mean()


def test_batched_equals_per_channel_and_chunking_changes_nothing() -> None:
    model = small_cnn()
    opts = {"size": 16, "steps": 6, "lr": 0.1, "seed": 3}
    together = visualize_channels(model, "features.6", [5, 0, 9], **opts)
    chunked = visualize_channels(model, "features.6", [5, 0, 9], batch_size=2, **opts)
    alone = torch.cat([visualize_channels(model, "features.6", [c], **opts) for c in (5, 0, 9)])
    assert together.shape == (3, 1, 16, 16)
    assert torch.allclose(together, alone, atol=1e-4)
    assert torch.allclose(together, chunked, atol=1e-4)
    # and repeated calls (epochs) start from the same noise and transforms
    assert torch.equal(together, visualize_channels(model, "features.6", [5, 0, 9], **opts))
    other_seed = visualize_channels(model, "features.6", [5, 0, 9], **{**opts, "seed": 4})
    assert not torch.allclose(together, other_seed, atol=1e-3)


class Recorder(nn.Module):
    """Identity that counts its calls and records input shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.shapes.append(tuple(x.shape))
        return x


def test_forward_stops_after_the_deepest_needed_layer_and_size_is_kept() -> None:
    torch.manual_seed(0)
    first, after = Recorder(), Recorder()
    model = nn.Sequential(
        first,
        nn.Conv2d(1, 4, 3),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3),
        nn.ReLU(),
        after,
        nn.Flatten(),
        nn.LazyLinear(3),
    )
    with torch.no_grad():
        model(torch.zeros(1, 1, 20, 20))  # materialize the lazy layer
    after.calls = 0
    first.calls, first.shapes = 0, []
    obj = channel("2", 1) + 0.5 * channel("4", 2)
    render(model, obj, ImageSpec(1, (20, 24)), steps=3)
    # the probe forward that counts calls runs the whole model once; the 3 steps + final
    # evaluation do not
    assert after.calls == 1
    assert first.calls == 1 + 3 + 1
    assert set(first.shapes) == {(1, 1, 20, 24)}  # never upsampled, the size asked for


def test_a_share_of_the_elements_is_that_slice_of_the_whole_render() -> None:
    # what each DDP rank renders of a split call (callbacks/_ranks.py)
    model = small_cnn()
    objective, seeds = unit_objective("features.6", [5, 0, 9, 2, 7], variants=2)
    opts = {"seeds": seeds, "steps": 6, "lr": 0.1}
    whole = render(model, objective, ImageSpec(1, 16), **opts)
    part = render(model, objective, ImageSpec(1, 16), elements=(4, 10), **opts)
    assert part.images.shape[0] == 6 and part.values.shape == (6,)
    assert torch.equal(part.images, whole.images[4:10])
    assert torch.equal(part.values, whole.values[4:10])
    with pytest.raises(ValueError, match="whole groups of 2"):  # variants are a diversity group
        render(model, objective, ImageSpec(1, 16), elements=(3, 10), **opts)
    with pytest.raises(ValueError, match=r"0 <= lo < hi <= 10"):
        render(model, objective, ImageSpec(1, 16), elements=(4, 12), **opts)


def test_time_budget_cuts_steps_short() -> None:
    model = small_cnn()
    result = render(
        model,
        channel("features.6", range(4)),
        ImageSpec(1, 16),
        steps=100_000,
        time_budget=0.5,
        batch_size=2,
    )
    assert result.budget_exceeded
    assert (result.steps < 100_000).all() and (result.steps > 0).all()
    assert result.seconds < 5


def test_redirect_lets_a_unit_dead_on_noise_come_alive() -> None:
    conv = nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.fill_(-0.9)  # sigmoid noise ~0.5 -> pre-activation ~-0.4 -> ReLU silent
    model = nn.Sequential(conv, nn.ReLU(inplace=True))
    plain = render(
        model, channel("1", 0), ImageSpec(1, 8, fft=False), steps=30, lr=0.2, transforms=None
    )
    assert plain.weak.all() and plain.values.max() == 0
    redirected = render(
        model,
        channel("1", 0),
        ImageSpec(1, 8, fft=False),
        steps=30,
        lr=0.2,
        transforms=None,
        redirect_steps=10,
    )
    assert not redirected.weak.any() and redirected.values.min() > 0.01


def test_errors_list_what_is_valid() -> None:
    model = small_cnn()
    with pytest.raises(ValueError, match=r"not found in SmallCNN.*features\.6"):
        visualize_channels(model, "features.60", [0], size=16, steps=1)
    with pytest.raises(ValueError, match=r"channel 16 out of range.*valid: 0\.\.15"):
        visualize_channels(model, "features.6", [0, 16], size=16, steps=1)
    with pytest.raises(ValueError, match=r"class 10 out of range.*valid: 0\.\.9"):
        class_model_images(model, [10], size=16, steps=1)
    with pytest.raises(ValueError, match="`steps`"):
        render(model, channel("features.6", 0), ImageSpec(1, 16), steps=-1)
    with pytest.raises(ValueError, match="normalize"):
        render(model, channel("features.6", 0), ImageSpec(1, 16), normalize=((0.1, 0.2), (1, 1)))
    tiny = TinyResNet()
    with pytest.raises(
        ValueError,
        match=r"runs 2 times per forward, so 'layer1.relu@5' does not exist; valid: "
        r"'layer1.relu@0' .. 'layer1.relu@1'",
    ):
        render(tiny, neuron("layer1.relu@5", 0), ImageSpec(3, 16), steps=1)


def test_reused_module_calls_are_addressed_separately() -> None:
    torch.manual_seed(0)
    model = TinyResNet(in_channels=3)
    a = render(model, channel("layer1.relu@0", 1), ImageSpec(3, 16), steps=2)
    b = render(model, channel("layer1.relu", 1), ImageSpec(3, 16), steps=2)  # last call = @1
    c = render(model, channel("layer1.relu@1", 1), ImageSpec(3, 16), steps=2)
    assert torch.equal(b.images, c.images)
    assert not torch.equal(a.images, b.images)


def test_class_logit_is_read_from_the_model_output() -> None:
    model = small_cnn()
    res = render(model, class_logit([0, 1]), ImageSpec(1, 16), steps=15, lr=0.1, transforms=None)
    with torch.no_grad():
        logits = model.eval()(res.images)
    assert torch.allclose(res.values, logits[[0, 1], [0, 1]], atol=1e-4)


def test_a_scaled_diverse_objective_reports_the_scaled_unit_not_the_reward() -> None:
    """``2 * diverse(unit)`` lost its ``reported`` part, so render reported (and judged "weak")
    the unit plus the diversity reward instead of the unit."""
    model = small_cnn().eval()
    unit = channel("features.6", [0, 0, 3, 3])
    objective = 2 * diverse(unit, "features.6", 2)
    result = render(model, objective, ImageSpec(1, 16), steps=2, transforms="none")
    with torch.no_grad():
        a = activation_maps(model, result.images, ["features.6"])
    torch.testing.assert_close(result.values, 2 * unit(a), rtol=1e-4, atol=1e-5)
    # ... which is not what the whole objective (unit plus reward) is worth here
    assert not torch.allclose(result.values, objective(a), rtol=1e-3, atol=1e-4)
