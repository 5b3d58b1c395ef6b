"""deep_dream: arguments, shapes, determinism, octaves (the amplification property is checked on a
trained network in test_render_properties.py)."""

from __future__ import annotations

import pytest
import torch

from featurewatch.core.deepdream import deep_dream
from featurewatch.core.objectives import channel
from tests._models import SmallCNN


def model() -> SmallCNN:
    torch.manual_seed(0)
    return SmallCNN().eval()


def pixels(n: int = 2, size: int = 20) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(1))


def test_shape_range_and_determinism() -> None:
    m, x = model(), pixels()
    a = deep_dream(m, x, "features.6", octaves=3, steps=3)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, deep_dream(m, x, "features.6", octaves=3, steps=3))
    assert not torch.equal(a, deep_dream(m, x, "features.6", octaves=3, steps=3, seed=1))
    assert not torch.equal(a, x)
    single = deep_dream(
        m, x[0], channel("features.6", 2), octaves=1, steps=2
    )  # (C, H, W) and any objective
    assert single.shape == (1, 1, 20, 20)


def test_the_objective_rises() -> None:
    m, x = model(), pixels()
    obj = channel("features.6", 3)
    dreamed = deep_dream(m, x, obj, octaves=1, steps=10, step_size=0.05)
    from featurewatch.core.inspect import activation_maps

    before = activation_maps(m, x, ["features.6"])["features.6"][:, 3].mean()
    after = activation_maps(m, dreamed, ["features.6"])["features.6"][:, 3].mean()
    assert after > before


def test_bad_arguments() -> None:
    m, x = model(), pixels()
    with pytest.raises(ValueError, match="`octaves`"):
        deep_dream(m, x, "features.6", octaves=0)
    with pytest.raises(ValueError, match="`octave_scale`"):
        deep_dream(m, x, "features.6", octave_scale=1.0)
    with pytest.raises(ValueError, match="not found"):
        deep_dream(m, x, "features.66")
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        deep_dream(m, x[0, 0], "features.6")
