"""Objectives: closed-form values on hand-set activations, algebra, batching, validation."""

from __future__ import annotations

import pytest
import torch

from featurewatch.core.objectives import (
    OUTPUT,
    Objective,
    channel,
    class_logit,
    direction,
    interpolate,
    layer_l2,
    neuron,
)


def acts() -> dict[str, torch.Tensor]:
    a = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    return {"conv": a, "relu": a - 10, OUTPUT: torch.tensor([[1.0, 5.0, -2.0], [0.5, 0.0, 3.0]])}


def test_channel_is_mean_of_the_channel_per_element() -> None:
    a = acts()
    got = channel("conv", 1)(a)
    assert torch.allclose(got, a["conv"][:, 1].mean((1, 2)))
    assert got.shape == (2,)


def test_batched_channel_gives_each_element_its_own_unit() -> None:
    a = acts()
    obj = channel("conv", [2, 0])
    assert obj.batch == 2
    assert torch.allclose(obj(a), torch.stack([a["conv"][0, 2].mean(), a["conv"][1, 0].mean()]))
    # a chunk holding only global element 1 picks channel 0 for it
    chunk = {"conv": a["conv"][1:]}
    assert torch.allclose(obj(chunk, torch.tensor([1])), a["conv"][1:, 0].mean((1, 2)))


def test_algebra_matches_arithmetic_and_unions_layers() -> None:
    a = acts()
    c, r = channel("conv", 0), channel("relu", 1)
    vc, vr = c(a), r(a)
    assert torch.allclose((c + r)(a), vc + vr)
    assert torch.allclose((c - r)(a), vc - vr)
    assert torch.allclose((2 * c)(a), 2 * vc)
    assert torch.allclose((c * 3)(a), 3 * vc)
    assert torch.allclose((c / 4)(a), vc / 4)
    assert torch.allclose((-c)(a), -vc)
    assert torch.allclose((1 - c)(a), 1 - vc)
    assert torch.allclose(sum([c, r, c])(a), 2 * vc + vr)
    assert (c + r + c).layers == ("conv", "relu")


def test_plain_objective_broadcasts_over_a_batched_one() -> None:
    a = acts()
    obj = channel("conv", [1, 2]) - 0.5 * layer_l2("relu")
    expected = torch.stack([a["conv"][0, 1].mean(), a["conv"][1, 2].mean()]) - 0.5 * a["relu"].pow(2).flatten(1).mean(1)
    assert obj.batch == 2
    assert torch.allclose(obj(a), expected)


def test_batched_objectives_of_different_sizes_do_not_combine() -> None:
    with pytest.raises(ValueError, match="different sizes"):
        channel("conv", [0, 1]) + channel("conv", [0, 1, 2])
    with pytest.raises(TypeError):
        channel("conv", 0) * channel("conv", 1)  # type: ignore[operator]
    with pytest.raises(ValueError, match="zero"):
        channel("conv", 0) / 0


def test_neuron_defaults_to_the_centre() -> None:
    a = acts()
    assert torch.allclose(neuron("conv", 2)(a), a["conv"][:, 2, 1, 1])
    assert torch.allclose(neuron("conv", [0, 1], y=0, x=1)(a), torch.stack([a["conv"][0, 0, 0, 1], a["conv"][1, 1, 0, 1]]))


def test_class_logit_direction_interpolate() -> None:
    a = acts()
    assert torch.allclose(class_logit(1)(a), torch.tensor([5.0, 0.0]))
    assert torch.allclose(class_logit([1, 2])(a), torch.tensor([5.0, 3.0]))
    v = torch.tensor([1.0, 0.0, -1.0])
    assert torch.allclose(direction("conv", v)(a), (a["conv"][:, 0] - a["conv"][:, 2]).mean((1, 2)))
    mix = interpolate(channel("conv", 0), channel("conv", 2), [0.0, 1.0])
    assert torch.allclose(mix(a), torch.stack([a["conv"][0, 0].mean(), a["conv"][1, 2].mean()]))


def test_checks_name_the_valid_range() -> None:
    shapes = {"conv": torch.Size([1, 3, 2, 2]), OUTPUT: torch.Size([1, 10])}
    with pytest.raises(ValueError, match=r"channel 3 out of range.*valid: 0\.\.2"):
        (channel("conv", 0) + channel("conv", [1, 3])).check(shapes)
    with pytest.raises(ValueError, match=r"class 10 out of range.*valid: 0\.\.9"):
        class_logit(10).check(shapes)
    with pytest.raises(ValueError, match="x=5 out of range"):
        neuron("conv", 0, x=5).check(shapes)
    channel("conv", 2).check(shapes)  # valid: no error


def test_bad_units_are_rejected_early() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        channel("conv", -1)
    with pytest.raises(ValueError, match="empty"):
        channel("conv", [])
    with pytest.raises(TypeError):
        channel("conv", "3")  # type: ignore[arg-type]


def test_an_objective_must_return_one_value_per_element() -> None:
    bad = Objective(lambda a, idx: a["conv"].sum().reshape(1, 1), ["conv"])
    with pytest.raises(ValueError, match="one value per batch element"):
        bad(acts())
