"""Large images are processed in fewer per pass, small ones as asked; the results do not change.

Each test counts the inputs that reach the network's first convolution per pass (a forward
pre-hook) with ``batch_size=64``: at 224 px the passes must hold at most the pixel bound's share
(8 images without gradients, 4 with), at 32 px the whole ``batch_size``; the results must equal
those of ``batch_size=1``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from torch import nn

from featurewatch.core.attribution import occlusion, saliency
from featurewatch.core.batching import BACKWARD_PIXELS, FORWARD_PIXELS, bounded_batch
from featurewatch.core.examples import top_examples_multi
from featurewatch.core.projection import project_detailed
from featurewatch.core.receptive_field import receptive_fields


def net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 5, stride=4, padding=2),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    ).eval()


@contextmanager
def passes(model: nn.Sequential) -> Iterator[list[int]]:
    """The batch size of every call of the first convolution."""
    seen: list[int] = []
    handle = model[0].register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
    try:
        yield seen
    finally:
        handle.remove()


def images(n: int, size: int) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def test_bounded_batch_lowers_only_what_exceeds_the_pixels() -> None:
    assert bounded_batch(64, (3, 224, 224), FORWARD_PIXELS) == 8
    assert bounded_batch(64, (3, 224, 224), BACKWARD_PIXELS) == 4
    assert bounded_batch(64, (1, 32, 32), BACKWARD_PIXELS) == 64
    assert bounded_batch(5, (3, 2000, 2000), BACKWARD_PIXELS) == 1  # never 0
    assert bounded_batch(64, (1, 16000), BACKWARD_PIXELS) == 12  # a signal counts its length
    assert bounded_batch(64, (20,), BACKWARD_PIXELS) == 64  # a feature vector is one position


@pytest.mark.parametrize(("size", "most"), [(224, 8), (32, 20)])
def test_dataset_example_passes_hold_at_most_the_pixel_bound(size: int, most: int) -> None:
    model, pool = net(), images(20, size)
    wanted = {"1": [0, 1, 2, 3], "3": [0, 5]}
    with passes(model) as seen:
        tops = top_examples_multi(model, pool, wanted, k=5, batch_size=64, call_counts={})
    assert max(seen) == most
    ones = top_examples_multi(model, pool, wanted, k=5, batch_size=1, call_counts={})
    for layer in wanted:
        assert torch.equal(tops[layer].indices, ones[layer].indices)
        assert torch.allclose(tops[layer].values, ones[layer].values, atol=1e-6)


@pytest.mark.parametrize(("size", "most"), [(224, 4), (32, 10)])
def test_projection_passes_hold_at_most_the_pixel_bound(size: int, most: int) -> None:
    model, x = net(), images(10, size)
    chans = [i % 6 for i in range(10)]
    with passes(model) as seen:
        got = project_detailed(model, x, "3", chans, batch_size=64, call_counts={})
    assert max(seen) == most
    one = project_detailed(model, x, "3", chans, batch_size=1, call_counts={})
    assert torch.allclose(got.gradients, one.gradients, atol=1e-6)


def test_receptive_field_passes_hold_half_the_bound_in_float64() -> None:
    model = net()
    positions = [(y, x) for y in range(4) for x in range(4)]
    with passes(model) as seen:
        boxes = receptive_fields(model, "3", (3, 224, 224), positions, batch_size=64)
    assert max(seen) == 2 and len(seen) >= len(positions) // 2
    assert boxes == receptive_fields(model, "3", (3, 224, 224), positions, batch_size=1)


def test_smoothgrad_and_occlusion_passes_hold_at_most_the_pixel_bound() -> None:
    model, x = net(), images(3, 224)
    with passes(model) as seen:
        smooth = saliency(model, x, target=[0, 1, 2], smooth=6, batch_size=64)
    assert max(seen) == 4
    assert torch.allclose(
        smooth, saliency(model, x, target=[0, 1, 2], smooth=6, batch_size=1), atol=1e-6
    )
    with passes(model) as seen:
        drops = occlusion(model, x, target=[0, 1, 2], window=56, stride=56, batch_size=64)
    assert max(seen) == 8  # the reference forward of all 3 images comes first
    assert seen[0] == 3
    one = occlusion(model, x, target=[0, 1, 2], window=56, stride=56, batch_size=1)
    assert torch.allclose(drops, one, atol=1e-6)
