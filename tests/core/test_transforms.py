"""Transforms: private per-element randomness, sizes, magnitudes scaled to the image."""

from __future__ import annotations

import pytest
import torch

from featurewatch.core.transforms import compose, jitter, pad, random_affine, standard_transforms


def gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def images(n: int = 3, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(123)
    return torch.rand(n, 2, size, size, generator=g)


def displacements(size: int, transforms: list, n: int = 64) -> torch.Tensor:
    """Where a bright dot at the centre ends up, for n seeds (pixels, max over y/x)."""
    x = torch.zeros(n, 1, size, size)
    x[:, :, size // 2, size // 2] = 1.0
    out = compose(transforms)(x, gens(*range(n)))
    flat = out.flatten(1).argmax(1)
    y, xx = flat // size, flat % size
    return torch.maximum((y - size // 2).abs(), (xx - size // 2).abs()).float()


def test_standard_transforms_keep_the_size_and_scale_with_it() -> None:
    for size in (16, 32, 128):
        x = images(2, size)
        out = compose(standard_transforms(size))(x, gens(0, 1))
        assert out.shape == x.shape
    # a dot at the centre moves by up to 2 + 1 px at 32 px, by up to Lucid's 12 + 6 at 224 px
    small, big = (
        displacements(32, standard_transforms(32)),
        displacements(224, standard_transforms(224)),
    )
    assert small.max() <= 3 and small.max() >= 2
    assert big.max() <= 18 and big.max() >= 10
    assert standard_transforms(32, strength=0) == []


def test_integer_shifts_move_content_exactly() -> None:
    x = images(8, 16)
    out = random_affine(shift=(2, 0))(x, gens(*range(8)))
    for i in range(8):
        matches = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.allclose(
                out[i, :, 4:12, 4:12], x[i, :, 4 - dy : 12 - dy, 4 - dx : 12 - dx], atol=1e-5
            )
        ]
        assert len(matches) == 1


def test_same_generators_same_result_and_global_rng_untouched() -> None:
    x = images()
    t = compose(standard_transforms(32))
    state = torch.get_rng_state()
    a = t(x, gens(1, 2, 3))
    b = t(x, gens(1, 2, 3))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b)
    c = t(x, gens(4, 5, 6))
    assert not torch.equal(a, c)


def test_each_element_depends_only_on_its_own_generator() -> None:
    x = images()
    t = compose(standard_transforms(32))
    together = t(x, gens(7, 8, 9))
    alone = t(x[1:2], gens(8))
    assert torch.allclose(together[1:2], alone, atol=1e-6)


def test_jitter_pad_affine_shapes_and_identity() -> None:
    x = images(2, 16)
    assert jitter(3)(x, gens(0, 1)).shape == (2, 2, 13, 13)
    assert pad(2)(x, gens(0, 1)).shape == (2, 2, 20, 20)
    assert torch.equal(random_affine()(x, gens(0, 1)), x)
    rotated = random_affine(degrees=[90.0])(x, gens(0, 1))
    assert torch.allclose(rotated, torch.rot90(x, 1, dims=(2, 3)), atol=1e-5) or torch.allclose(
        rotated, torch.rot90(x, -1, dims=(2, 3)), atol=1e-5
    )
    with pytest.raises(ValueError, match="one generator per batch element"):
        jitter(1)(x, gens(0))
    with pytest.raises(ValueError):
        jitter(16)(x, gens(0, 1))
