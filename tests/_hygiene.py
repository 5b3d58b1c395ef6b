"""The one check of the core promise for tests: a function left the model exactly as it found it."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Exactly equal: dtype, shape, device and every bit (so NaN equals NaN, -0.0 differs from
    0.0)."""
    if a.dtype != b.dtype or a.shape != b.shape or a.device != b.device:
        return False
    return torch.equal(_bits(a), _bits(b))


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().reshape(-1).contiguous().view(torch.uint8)


def snapshot(model: nn.Module) -> dict[str, Any]:
    """Parameters, their ``.grad`` and ``requires_grad``, buffers (values and the tensor objects
    themselves), the ``state_dict`` keys, train flags, ``inplace`` flags and the global torch RNG
    state, copied."""
    return {
        "params": {n: p.detach().clone() for n, p in model.named_parameters()},
        "grads": {
            n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()
        },
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "buffers": {n: b.clone() for n, b in model.named_buffers()},
        "buffer_objects": dict(model.named_buffers()),
        "state_keys": list(model.state_dict().keys()),
        "training": {n: m.training for n, m in model.named_modules()},
        "inplace": {n: m.inplace for n, m in model.named_modules() if hasattr(m, "inplace")},
        "rng": torch.get_rng_state(),
        "hooks": _hooks(model),
    }


def _hooks(model: nn.Module) -> dict[tuple[str, str], list[int]]:
    """The ids of the hooks each module carries (the model's own, e.g. ``prepare_qat``'s)."""
    return {
        (name, attr): list(getattr(m, attr))
        for name, m in model.named_modules()
        for attr in _HOOK_DICTS
        if getattr(m, attr)
    }


def assert_untouched(model: nn.Module, before: dict[str, Any]) -> None:
    """Everything :func:`snapshot` took is unchanged, and no module carries a hook it did not
    carry before.

    Buffers must be the same tensor objects under the same names (restored in place, so optimizer
    state and user references stay valid), bit for bit equal, with the same dtype and shape.
    """
    after = snapshot(model)
    for key in ("params", "buffers"):
        assert before[key].keys() == after[key].keys(), f"{key} added or removed"
        for n, t in before[key].items():
            assert same_tensor(t, after[key][n]), f"{key} {n} changed"
    for n, b in before["buffer_objects"].items():
        assert after["buffer_objects"][n] is b, f"buffer {n} was replaced by another tensor"
    assert before["state_keys"] == after["state_keys"], "state_dict keys changed"
    for n, g in before["grads"].items():
        g2 = after["grads"][n]
        assert (g is None and g2 is None) or (
            g is not None and g2 is not None and torch.equal(g, g2)
        ), f".grad of {n} changed"
    for key in ("requires_grad", "training", "inplace"):
        assert before[key] == after[key], f"{key} changed"
    assert torch.equal(before["rng"], after["rng"]), "global torch RNG state changed"
    hooks = _hooks(model)
    for (name, attr), ids in hooks.items():
        assert ids == before["hooks"].get((name, attr), []), (
            f"hook left on {name or 'model'} ({attr})"
        )
    assert hooks.keys() == before["hooks"].keys(), "a hook of the model was removed"
