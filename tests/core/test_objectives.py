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
    diverse,
    diversity,
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
    expected = torch.stack([a["conv"][0, 1].mean(), a["conv"][1, 2].mean()]) - 0.5 * a["relu"].pow(
        2
    ).flatten(1).mean(1)
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
    assert torch.allclose(
        neuron("conv", [0, 1], y=0, x=1)(a),
        torch.stack([a["conv"][0, 0, 0, 1], a["conv"][1, 1, 0, 1]]),
    )


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


def test_diversity_is_minus_the_style_similarity_within_each_group() -> None:
    torch.manual_seed(0)
    base = torch.rand(1, 3, 4, 4)
    acts = torch.cat(
        [base, 2.0 * base, torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4)]
    )  # groups {0,1}, {2,3}
    values = diversity("l", 2)({"l": acts})
    # elements 0 and 1 have Gram matrices that differ by a factor only: cosine similarity 1
    assert torch.allclose(values[:2], torch.tensor([-1.0, -1.0]))
    f = acts[2:].flatten(2)
    g = torch.nn.functional.normalize((f @ f.transpose(1, 2)).flatten(1), dim=1)
    expected = -(g[0] @ g[1])
    assert torch.allclose(values[2:], expected.expand(2), atol=1e-6)
    # groups do not see each other: changing group 1 leaves group 0 alone
    other = acts.clone()
    other[2:] = torch.rand(2, 3, 4, 4)
    assert torch.equal(diversity("l", 2)({"l": other})[:2], values[:2])
    # an element alone in its group (the last chunk of a render) gets 0
    assert diversity("l", 2)({"l": acts[:3]}, torch.arange(3))[2] == 0


def test_grouped_objectives_keep_their_group_through_the_algebra() -> None:
    d = diversity("l", 4)
    assert (channel("l", range(8)) + 0.5 * d).group == 4
    assert (-d).group == 4 and (d + 1.0).group == 4
    assert (diversity("l", 2) + diversity("l", 3)).group == 6  # both stay whole in chunks of 6
    assert channel("l", 1).group is None
    with pytest.raises(ValueError, match="group"):
        diversity("l", 0)


def test_diverse_scales_the_reward_to_the_objective() -> None:
    acts = torch.rand(4, 3, 4, 4)
    unit = channel("l", [0, 0, 1, 1])
    for scale in (1.0, 100.0):
        v = unit({"l": scale * acts})
        d = diversity("l", 2)({"l": scale * acts})
        got = diverse(unit, "l", 2, weight=0.5)({"l": scale * acts})
        assert torch.allclose(got, v + 0.5 * v.abs() * d)
    assert diverse(unit, "l", 2, weight=0.0) is unit
    with pytest.raises(ValueError, match="weight"):
        diverse(unit, "l", 2, weight=-1.0)


def test_the_algebra_keeps_the_reported_unit_part_of_a_diverse_objective() -> None:
    """``(2 * diverse(...)).reported`` was ``None``: render then judged the units by the reward."""
    torch.manual_seed(0)
    a = {"l": torch.rand(4, 3, 4, 4), "m": torch.rand(4, 3, 4, 4)}
    unit = channel("l", [0, 0, 1, 1])
    obj = diverse(unit, "l", 2)
    u = unit(a)
    assert not torch.allclose(obj(a), u)  # the reward is really there
    cases = {
        "2 * obj": (2 * obj, 2 * u),
        "obj * 3": (obj * 3, 3 * u),
        "obj / 4": (obj / 4, u / 4),
        "-obj": (-obj, -u),
        "obj + 1": (obj + 1.0, u + 1),
        "1 - obj": (1 - obj, 1 - u),
        "obj + other": (obj + channel("m", 2), u + channel("m", 2)(a)),
        "other - obj": (channel("m", 2) - obj, channel("m", 2)(a) - u),
        "sum": (sum([obj, obj]), 2 * u),
    }
    for label, (combined, expected) in cases.items():
        assert combined.reported is not None, label
        torch.testing.assert_close(combined.reported(a), expected, msg=label)
        assert combined.group == 2, label  # and the other fields survive too
        assert combined.batch == 4, label
    # the objective itself is still the scaled sum of unit and reward
    torch.testing.assert_close((2 * obj)(a), 2 * obj(a))
    # without a regularizer there is nothing separate to report
    assert (2 * unit).reported is None and (unit + channel("m", 1)).reported is None
    # a diverse objective of a diverse objective reports the innermost unit
    assert diverse(obj, "m", 2).reported is unit


def test_objectives_are_values() -> None:
    obj = channel("l", 1)
    with pytest.raises(AttributeError):
        obj.name = "other"  # type: ignore[misc]
    assert Objective(obj.fn, ["l@0", "l@0", "m"]).layers == ("l@0", "m")
