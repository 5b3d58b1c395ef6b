"""The one check of the core promise for tests: a function left the model exactly as it found it."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def snapshot(model: nn.Module) -> dict[str, Any]:
    """Parameters, their ``.grad`` and ``requires_grad``, buffers, train flags, ``inplace`` flags
    and the global torch RNG state, copied."""
    return {
        "params": {n: p.detach().clone() for n, p in model.named_parameters()},
        "grads": {
            n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()
        },
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "buffers": {n: b.clone() for n, b in model.named_buffers()},
        "training": {n: m.training for n, m in model.named_modules()},
        "inplace": {n: m.inplace for n, m in model.named_modules() if hasattr(m, "inplace")},
        "rng": torch.get_rng_state(),
    }


def assert_untouched(model: nn.Module, before: dict[str, Any]) -> None:
    """Everything :func:`snapshot` took is unchanged, and no module carries a hook."""
    after = snapshot(model)
    for key in ("params", "buffers"):
        for n, t in before[key].items():
            assert torch.equal(t, after[key][n]), f"{key} {n} changed"
    for n, g in before["grads"].items():
        g2 = after["grads"][n]
        assert (g is None and g2 is None) or (
            g is not None and g2 is not None and torch.equal(g, g2)
        ), f".grad of {n} changed"
    for key in ("requires_grad", "training", "inplace"):
        assert before[key] == after[key], f"{key} changed"
    assert torch.equal(before["rng"], after["rng"]), "global torch RNG state changed"
    for name, m in model.named_modules():
        for attr in _HOOK_DICTS:
            assert len(getattr(m, attr)) == 0, f"hook left on {name or 'model'} ({attr})"
