"""The one output-substitution mechanism, and the layout rules of the core it belongs to."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch import nn

import featurewatch.core
from featurewatch.core.hooks import forward_hooks, substitute_outputs
from featurewatch.core.layers import capture


def hooks_left(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


class Reused(nn.Module):
    """One in-place ReLU module called twice (a torchvision BasicBlock in one line each)."""

    def __init__(self) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.relu(x - 1.0)
        return self.relu(a * 3.0 - 2.0)


def test_substitute_outputs_sees_the_pre_activation_of_an_in_place_module_call_by_call() -> None:
    model = Reused()
    x = torch.tensor([[-2.0, 0.5, 3.0]])
    seen: list[torch.Tensor] = []

    def replace(module: nn.Module, inp: torch.Tensor) -> torch.Tensor:
        seen.append(inp.detach().clone())
        return inp * 10  # not a ReLU at all: the replacement decides

    with capture(model, ["relu@0", "relu@1"]) as got, substitute_outputs([model.relu], replace):
        out = model(x)
    # each call's own input, untouched by the in-place module
    torch.testing.assert_close(seen[0], x - 1.0)
    torch.testing.assert_close(seen[1], (x - 1.0) * 10 * 3.0 - 2.0)
    torch.testing.assert_close(out, seen[1] * 10)
    # a capture at the module itself sees the replaced outputs (the substitution is prepended)
    torch.testing.assert_close(got["relu@0"], (x - 1.0) * 10)
    torch.testing.assert_close(got["relu@1"], out)
    assert hooks_left(model) == 0
    # and afterwards the module is itself again
    torch.testing.assert_close(model(x), torch.relu(torch.relu(x - 1.0) * 3.0 - 2.0))


def test_substitute_outputs_keeps_gradients_through_an_in_place_module() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(inplace=True))
    x = torch.randn(4, 3, requires_grad=True)
    with substitute_outputs([model[1]], lambda _m, a: a):  # identity instead of the ReLU
        (g,) = torch.autograd.grad(model(x).sum(), x)
    torch.testing.assert_close(g, model[0].weight.sum(0).expand(4, 3))


def test_hooks_are_removed_when_the_forward_raises() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    with (
        pytest.raises(RuntimeError),
        forward_hooks([(model[0], lambda *a: None)]),
        substitute_outputs([model[1]], lambda _m, a: a),
    ):
        model(torch.randn(2, 5))  # wrong width
    assert hooks_left(model) == 0


def test_no_core_module_imports_another_modules_private_names() -> None:
    """A helper two modules need is public in the module that owns it (issue 13)."""
    root = Path(featurewatch.core.__file__).parent
    found = []
    for path in sorted(root.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("featurewatch"):
                found += [f"{path.name}: {node.module}.{a.name}" for a in node.names]
    assert found  # the scan reads real imports
    private = [f for f in found if f.rsplit(".", 1)[-1].startswith("_")]
    assert private == []
