import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from featurewatch.core.hygiene import in_isolation, isolated
from tests._models import SmallCNN


def snapshot(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [p.requires_grad for p in model.parameters()],
        [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        [m.training for m in model.modules()],
    )


def assert_same(a, b):
    for k in a[0]:
        assert torch.equal(a[0][k], b[0][k]), k
    assert a[1] == b[1]
    assert all((x is None and y is None) or torch.equal(x, y) for x, y in zip(a[2], b[2]))
    assert a[3] == b[3]


def test_isolated_restores_everything_even_on_error():
    torch.manual_seed(0)
    model = SmallCNN()
    model.train()
    model.features[1].eval()  # mixed flags must come back exactly
    model.fc.weight.requires_grad_(False)
    model.features[0].weight.grad = torch.ones_like(model.features[0].weight)
    before = snapshot(model)
    torch_rng, np_rng, py_rng = torch.get_rng_state(), np.random.get_state(), random.getstate()

    with pytest.raises(RuntimeError, match="boom"):
        with isolated(model):
            assert in_isolation()
            assert not model.training and not any(p.requires_grad for p in model.parameters())
            x = torch.randn(8, 1, 8, 8, requires_grad=True)  # draws from the global RNG
            np.random.rand(3), random.random()
            out = model(x)  # eval: BatchNorm running stats untouched
            (g,) = torch.autograd.grad(out.sum(), [x])
            assert g.shape == x.shape
            raise RuntimeError("boom")

    assert not in_isolation()
    assert_same(before, snapshot(model))
    assert torch.equal(torch.get_rng_state(), torch_rng)
    assert np.random.get_state()[1].tolist() == np_rng[1].tolist()
    assert random.getstate() == py_rng


def test_isolated_allows_gradients_inside_inference_mode():
    model = SmallCNN()
    with torch.inference_mode():
        probe = torch.randn(2, 1, 8, 8)  # an inference tensor, as Lightning's validation makes
        with isolated(model):
            x = probe.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(model(x).sum(), [x])
    assert g.abs().sum() > 0


def test_core_imports_no_lightning_or_logging_backends():
    code = (
        "import sys, featurewatch.core as c; "
        "bad=[m for m in sys.modules if m.split('.')[0] in "
        "('lightning','pytorch_lightning','tensorboard','wandb','mlflow','lightning_fabric')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_public_name_resolves():
    import featurewatch

    for name in featurewatch.__all__:
        assert getattr(featurewatch, name) is not None, name
