"""Linear CKA against an independent float64 reference, its invariances and its errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featurewatch.core import drift
from featurewatch.core.drift import cka, cka_from_grams, gram


def reference_cka(a, b) -> float:
    """Feature-space linear CKA in NumPy float64, straight from Kornblith et al. (2019), eq. 5."""
    x = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    y = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    num = np.linalg.norm(x.T @ y, "fro") ** 2
    return float(num / (np.linalg.norm(x.T @ x, "fro") * np.linalg.norm(y.T @ y, "fro")))


def rng(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def structured_pair(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Low-rank 'activations' and a nonlinear, noisy, partly mixed function of them."""
    g = rng(seed)
    basis = torch.randn(n, 3, generator=g)
    a = basis @ torch.randn(3, d, generator=g) + 0.05 * torch.randn(n, d, generator=g)
    b = torch.relu(a @ torch.randn(d, d + 7, generator=g)) + 0.3 * torch.randn(
        n, d + 7, generator=g
    )
    return a, b


@pytest.mark.parametrize(
    "shape_a, shape_b",
    [
        ((20, 3, 5, 5), (20, 40)),  # D > N: through the Gram matrices
        ((50, 6), (50, 4)),  # D < N: in feature space
        ((12, 12), (12, 3, 2, 2)),  # D == N for one of them
        ((30, 100), (30, 5)),  # mixed
    ],
)
def test_equals_the_float64_reference_on_random_data(shape_a, shape_b):
    g = rng(0)
    a, b = torch.randn(shape_a, generator=g), torch.randn(shape_b, generator=g)
    got = cka(a, b)
    assert isinstance(got, float) and 0.0 <= got <= 1.0
    assert got == pytest.approx(reference_cka(a, b), abs=1e-6)


@pytest.mark.parametrize("n, d", [(16, 64), (64, 8), (40, 40)])
def test_equals_the_reference_on_structured_data(n, d):
    a, b = structured_pair(n, d, seed=n + d)
    expected = reference_cka(a, b)
    assert 0.2 < expected < 0.999  # related but not identical: a value that means something
    assert cka(a, b) == pytest.approx(expected, abs=1e-6)
    assert cka_from_grams(gram(a), gram(b)) == pytest.approx(expected, abs=1e-6)


def test_float32_inputs_far_from_zero_are_centred_in_float64():
    g = rng(1)
    a = (torch.randn(24, 50, generator=g) + 1e4).float()
    b = (torch.randn(24, 50, generator=g) * 1e-3 + a * 1e-3).float()
    assert cka(a, b) == pytest.approx(reference_cka(a.numpy(), b.numpy()), abs=1e-6)


def test_same_features_give_one_and_unrelated_ones_much_less():
    g = rng(2)
    a = torch.randn(64, 10, generator=g)
    assert cka(a, a) == pytest.approx(1.0, abs=1e-12)
    assert cka(a, torch.randn(64, 10, generator=g)) < 0.4


@pytest.mark.parametrize("d", [6, 90])  # feature-space and Gram paths
def test_invariant_to_orthogonal_maps_and_isotropic_scaling(d):
    g = rng(3)
    a, b = structured_pair(30, d, seed=d)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    moved = 4.2 * (a.double() @ q)
    assert cka(a, moved) == pytest.approx(1.0, abs=1e-9)
    assert cka(moved, b) == pytest.approx(cka(a, b), abs=1e-9)
    assert cka(a, 1e-3 * a) == pytest.approx(1.0, abs=1e-9)
    # translating every example by the same vector changes nothing (features are centred)
    assert cka(a.double() + 17.0, b) == pytest.approx(cka(a, b), abs=1e-9)


def test_not_invariant_to_arbitrary_invertible_linear_maps():
    """Linear CKA is *meant* to change under a non-orthogonal map (Kornblith et al., section 3):
    stretching some directions by 20x and shrinking others makes it see a different geometry."""
    g = rng(4)
    a = torch.randn(200, 6, generator=g, dtype=torch.float64)
    stretch = torch.diag(torch.tensor([20.0, 1.0, 1.0, 0.05, 0.05, 0.05], dtype=torch.float64))
    mixed = stretch @ torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))[0]
    assert torch.linalg.matrix_rank(mixed) == 6  # invertible
    value = cka(a, a @ mixed)
    assert value == pytest.approx(reference_cka(a, a @ mixed), abs=1e-6)
    assert value < 0.6


def test_gram_is_centred_float64_and_chunking_does_not_change_it(monkeypatch):
    g = rng(5)
    x = torch.randn(10, 4, 6, 6, generator=g)
    k = gram(x)
    assert k.shape == (10, 10) and k.dtype == torch.float64 and k.device.type == "cpu"
    flat = x.reshape(10, -1).double()
    centred = flat - flat.mean(0)
    torch.testing.assert_close(k, centred @ centred.T, rtol=0, atol=1e-10)
    torch.testing.assert_close(k.sum(0), torch.zeros(10, dtype=torch.float64), atol=1e-9, rtol=0)
    monkeypatch.setattr(drift, "_CHUNK_VALUES", 37)  # a few columns at a time, uneven last block
    torch.testing.assert_close(gram(x), k, rtol=0, atol=1e-10)


def test_cka_from_grams_accepts_uncentred_gram_matrices():
    a, b = structured_pair(20, 30, seed=6)
    raw_a, raw_b = a.double() @ a.double().T, b.double() @ b.double().T
    assert cka_from_grams(raw_a, raw_b) == pytest.approx(reference_cka(a, b), abs=1e-9)


def test_inputs_are_not_modified_and_numpy_works():
    a, b = structured_pair(16, 20, seed=7)
    a0, b0 = a.clone(), b.clone()
    value = cka(a, b)
    assert torch.equal(a, a0) and torch.equal(b, b0)
    assert cka(a.numpy(), b.numpy()) == pytest.approx(value, abs=1e-12)


@pytest.mark.parametrize(
    "a, b, error, match",
    [
        (torch.zeros(8, 3), torch.zeros(9, 3), ValueError, r"same examples: got N = 8 and N = 9"),
        (torch.randn(1, 5), torch.randn(1, 5), ValueError, r"needs N >= 2, got `a` with N = 1"),
        (torch.randn(5), torch.randn(5), ValueError, r"shape \(N, \.\.\.\).*x\[:, None\]"),
        (torch.ones(6, 4), torch.randn(6, 4), ValueError, r"`a` is the same for all 6 examples"),
        (torch.randn(6, 40), torch.ones(6, 40) * 3, ValueError, r"same for all 6 examples.*probe"),
        (
            torch.tensor([[1.0, float("nan")], [2.0, 3.0]]),
            torch.randn(2, 2),
            ValueError,
            "NaN or infinite",
        ),
        ("features", torch.randn(3, 2), TypeError, "must be a tensor"),
        (torch.ones(3, 2, dtype=torch.bool), torch.randn(3, 2), TypeError, "real numbers"),
    ],
)
def test_errors_say_what_was_expected(a, b, error, match):
    with pytest.raises(error, match=match):
        cka(a, b)


def test_gram_errors():
    with pytest.raises(ValueError, match="same for all 4 examples"):
        gram(torch.full((4, 3, 2, 2), 0.5))
    with pytest.raises(ValueError, match="N >= 2"):
        gram(torch.randn(1, 10))
    with pytest.raises(ValueError, match="same N examples, got 4 and 5"):
        cka_from_grams(gram(torch.randn(4, 3)), gram(torch.randn(5, 3)))
    with pytest.raises(ValueError, match="square"):
        cka_from_grams(torch.zeros(3, 4, dtype=torch.float64), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="`kb` is the Gram matrix of features that are the same"):
        cka_from_grams(gram(torch.randn(4, 3)), torch.zeros(4, 4))
    with pytest.raises(TypeError, match="as gram\\(\\) returns"):
        cka_from_grams(np.eye(3), np.eye(3))
