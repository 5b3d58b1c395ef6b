"""How much a layer's representation changed: linear CKA between two feature sets.

Centered Kernel Alignment (Kornblith, Norouzi, Lee & Hinton, 2019, "Similarity of Neural Network
Representations Revisited") compares what a layer computes on the same ``N`` examples at two moments
(or in two networks). With the features of each example flattened to rows of ``A`` (``N x D1``)
and ``B`` (``N x D2``), and every column centred over the ``N`` examples,

    CKA(A, B) = ||A^T B||_F^2 / (||A^T A||_F * ||B^T B||_F)

It is 1 for representations that differ only by a rotation (orthogonal map) and a global scale,
and it ignores how the channels are ordered or mixed orthogonally, so a layer whose filters merely
swap places reads as unchanged. It is *not* invariant to arbitrary invertible linear maps (that
would make every wide layer look identical to every other; see the paper's section 3).

The same quantity through the ``N x N`` Gram matrices ``K = A A^T`` and ``L = B B^T`` of the
centred features is ``<K, L>_F / (||K||_F ||L||_F)``: a callback can keep one ``N x N`` matrix per
layer (``N^2 * 8`` bytes in float64, whatever the layer's width) instead of the activations.
Watching each layer's CKA with its previous state over training shows layers settling bottom-up
(Raghu, Gilmer, Yosinski & Sohl-Dickstein, 2017, "SVCCA").

Everything here is computed in float64 on the CPU (or the input's device when it has float64).
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["cka", "cka_from_grams", "gram"]

#: Columns of a flattened feature matrix converted to float64 at a time while building a Gram
#: matrix (bounds the temporary copy to about this many float64 values).
_CHUNK_VALUES = 1 << 22

_CONSTANT_HINT = (
    "CKA is undefined for features that do not vary; use probe images that differ from each "
    "other, or another layer (a layer whose units are all dead outputs constants)"
)


def _features(x: Any, name: str) -> torch.Tensor:
    """``x`` as an ``(N, D)`` tensor on a device that supports float64 (not converted yet)."""
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(
                f"`{name}` must be a tensor (or array) of shape (N, ...) with one row per example, "
                f"got {type(x).__name__}"
            ) from None
    if x.dim() < 2:
        raise ValueError(
            f"`{name}` must have shape (N, ...) with the N examples first "
            "and their features after, "
            f"got shape {tuple(x.shape)}; for one scalar per example use x[:, None]"
        )
    if x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"`{name}` must hold real numbers, got dtype {x.dtype}")
    x = x.detach()
    if x.device.type == "mps":  # no float64 there
        x = x.cpu()
    n = x.shape[0]
    if n < 2:
        raise ValueError(
            f"CKA compares how N examples relate to each other and needs N >= 2, got `{name}` with "
            f"N = {n}; use at least 2 probe images (a few dozen give a stable value)"
        )
    flat = x.reshape(n, -1)
    if flat.shape[1] == 0:
        raise ValueError(f"`{name}` has no features per example (shape {tuple(x.shape)})")
    return flat


def _centred_columns(flat: torch.Tensor, name: str) -> torch.Tensor:
    centred = flat.to(torch.float64)
    if not torch.isfinite(centred).all():
        raise ValueError(f"`{name}` contains NaN or infinite values; CKA needs finite features")
    return centred - centred.mean(0, keepdim=True)


def gram(features: Any) -> torch.Tensor:
    """The centred linear Gram matrix of ``N`` examples' features, for :func:`cka_from_grams`.

    Keeping this ``N x N`` matrix is enough to compute CKA against any later state of the layer,
    however wide the layer is: it costs ``N^2 * 8`` bytes (32 KiB for 64 probe images).

    Args:
        features: ``(N, ...)`` tensor or array; each example is flattened to one row of ``D``
            values. Converted to float64 a block of columns at a time, so the temporary copy stays
            small even for wide early layers.

    Returns:
        ``(N, N)`` float64 CPU tensor ``Xc Xc^T``, where ``Xc`` is the flattened features with every
        column centred over the ``N`` examples.

    Raises:
        TypeError: if ``features`` is not a real tensor/array.
        ValueError: if ``N < 2``, a value is not finite, or the features are constant over the
            examples.

    Example:
        >>> k0 = gram(torch.randn(16, 8, 5, 5))
        >>> k0.shape
        torch.Size([16, 16])
    """
    flat = _features(features, "features")
    n, d = flat.shape
    step = max(1, _CHUNK_VALUES // n)
    out = torch.zeros(n, n, dtype=torch.float64, device=flat.device)
    for start in range(0, d, step):
        block = _centred_columns(flat[:, start : start + step], "features")
        out += block @ block.T
    if not bool(out.diagonal().sum() > 0):
        raise ValueError(
            f"`features` are the same for all {n} examples (every feature is constant); "
            + _CONSTANT_HINT
        )
    return out.cpu()


def _check_gram(k: Any, name: str) -> torch.Tensor:
    if not isinstance(k, torch.Tensor):
        raise TypeError(
            f"`{name}` must be an (N, N) tensor as gram() returns, got {type(k).__name__}"
        )
    if k.dim() != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(
            f"`{name}` must be a square (N, N) Gram matrix, got shape {tuple(k.shape)}"
        )
    if k.shape[0] < 2:
        raise ValueError(
            f"`{name}` is the Gram matrix of {k.shape[0]} example(s); CKA needs N >= 2"
        )
    k = k.detach().to(device="cpu", dtype=torch.float64)
    if not torch.isfinite(k).all():
        raise ValueError(f"`{name}` contains NaN or infinite values")
    return k


def cka_from_grams(ka: torch.Tensor, kb: torch.Tensor) -> float:
    """Linear CKA from two ``N x N`` Gram matrices of the same ``N`` examples.

    ``<Kc, Lc>_F / (||Kc||_F ||Lc||_F)`` with ``Kc = H K H`` the doubly centred Gram matrix
    (``H = I - 11^T / N``). :func:`gram` already returns centred matrices; centring again changes
    nothing, so plain ``X X^T`` matrices are accepted too.

    Args:
        ka: ``(N, N)`` Gram matrix of the first feature set.
        kb: ``(N, N)`` Gram matrix of the second, same examples in the same order.

    Returns:
        CKA in ``[0, 1]`` (1: same representation up to rotation and scale).

    Raises:
        TypeError: if an argument is not a tensor.
        ValueError: if the shapes differ or are not square, ``N < 2``, a value is not finite, or
            one feature set is constant over the examples.
    """
    ka, kb = _check_gram(ka, "ka"), _check_gram(kb, "kb")
    if ka.shape != kb.shape:
        raise ValueError(
            f"the Gram matrices must be of the same N examples, got {ka.shape[0]} and "
            f"{kb.shape[0]} examples; compute both on the same probe images"
        )
    ka, kb = _double_centre(ka), _double_centre(kb)
    norm_a, norm_b = torch.linalg.matrix_norm(ka), torch.linalg.matrix_norm(kb)
    for norm, name in ((norm_a, "ka"), (norm_b, "kb")):
        if not bool(norm > 0):
            raise ValueError(
                f"`{name}` is the Gram matrix of features that are the same for every example; "
                + _CONSTANT_HINT
            )
    value = float((ka * kb).sum() / (norm_a * norm_b))
    return _unit_interval(value)


def _double_centre(k: torch.Tensor) -> torch.Tensor:
    return k - k.mean(0, keepdim=True) - k.mean(1, keepdim=True) + k.mean()


def _unit_interval(value: float) -> float:
    # Mathematically in [0, 1] (a ratio of a PSD inner product to the norms); rounding may leave
    # it a few ulps outside.
    if math.isnan(value):  # pragma: no cover - excluded by the checks above
        raise ValueError("CKA evaluated to NaN")
    return min(max(value, 0.0), 1.0)


def cka(a: Any, b: Any) -> float:
    """Linear CKA between two feature sets of the same ``N`` examples (Kornblith et al., 2019).

    Each input is flattened to ``(N, D)`` and centred over the ``N`` examples; the value is
    ``||A^T B||_F^2 / (||A^T A||_F ||B^T B||_F)`` in float64, computed through the ``N x N``
    Gram matrices when either feature set is wider than ``N`` (cheaper, same value).

    Args:
        a: ``(N, ...)`` features (e.g. a layer's ``(N, C, H, W)`` activations on N probe images).
        b: ``(N, ...)`` features of the same examples, any width (another layer, another epoch).

    Returns:
        A float in ``[0, 1]``: 1 when ``b`` is ``a`` rotated and scaled, near 0 for unrelated
        features.

    Raises:
        TypeError: if an input is not a real tensor/array.
        ValueError: if the two have different ``N``, ``N < 2``, a value is not finite, or one of
            them is constant over the examples.

    Example:
        >>> x = torch.randn(32, 10)
        >>> q, _ = torch.linalg.qr(torch.randn(10, 10))
        >>> round(cka(x, 3.0 * x @ q), 6)
        1.0
    """
    fa, fb = _features(a, "a"), _features(b, "b")
    if fa.shape[0] != fb.shape[0]:
        raise ValueError(
            f"`a` and `b` must hold the same examples: got N = {fa.shape[0]} and N = {fb.shape[0]} "
            f"(shapes {tuple(torch.as_tensor(a).shape)} and {tuple(torch.as_tensor(b).shape)}); "
            "compute both on the same inputs"
        )
    n = fa.shape[0]
    if max(fa.shape[1], fb.shape[1]) > n:
        return cka_from_grams(gram(fa), gram(fb))
    xa, xb = _centred_columns(fa, "a"), _centred_columns(fb, "b")
    for x, name in ((xa, "a"), (xb, "b")):
        if not bool((x != 0).any()):
            raise ValueError(
                f"`{name}` is the same for all {n} examples (every feature is constant); "
                + _CONSTANT_HINT
            )
    cross = torch.linalg.matrix_norm(xa.T @ xb) ** 2
    self_a, self_b = torch.linalg.matrix_norm(xa.T @ xa), torch.linalg.matrix_norm(xb.T @ xb)
    return _unit_interval(float(cross / (self_a * self_b)))
