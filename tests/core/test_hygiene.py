import contextlib
import random
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from featurewatch.core.hygiene import in_isolation, isolated
from tests._hygiene import assert_untouched as _hygiene_assert_untouched
from tests._hygiene import snapshot as _hygiene_snapshot
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

    with pytest.raises(RuntimeError, match="boom"), isolated(model):
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
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_public_name_resolves():
    import featurewatch

    for name in featurewatch.__all__:
        assert getattr(featurewatch, name) is not None, name


class _Stateful(nn.Module):
    """A forward that updates its own state in every way a real module does, even in eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))  # counted in place
        self.register_buffer("rebound", torch.zeros(2))  # `self.x = self.x + 1` rebinds it
        self.register_buffer("resized", torch.zeros(0))  # observers resize_ their min/max
        self.register_buffer("via_data", torch.zeros(3))  # `.data` writes skip version counters
        self.register_buffer("cache", None)  # filled lazily: None before the first forward
        self.conv.register_buffer("shared", torch.ones(1))
        self.register_buffer("shared", self.conv.shared)  # one tensor under two names
        self.extra = {"seen": 0}  # state_dict state outside tensors (get/set_extra_state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        self.calls += 1
        self.rebound = self.rebound + 1
        self.resized.resize_(out.shape[1]).copy_(out.mean((0, 2, 3)).detach())
        self.via_data.data.add_(1.0)
        self.cache = out.detach()[:1].clone()
        self.shared.mul_(2.0)
        self.extra["seen"] += 1
        self.register_buffer("added_in_forward", torch.ones(1))
        return out

    def get_extra_state(self) -> dict[str, int]:
        return dict(self.extra)

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.extra = dict(state)


@pytest.mark.parametrize("fails", [False, True])
def test_isolated_restores_every_buffer_and_extra_state_in_place(fails):
    model = _Stateful()
    model(torch.randn(2, 1, 6, 6))  # one training forward: the state is now non-trivial
    del model._buffers["added_in_forward"]
    originals = dict(model.named_buffers())
    before_state = {k: v.clone() for k, v in model.state_dict().items() if torch.is_tensor(v)}
    extra_before = dict(model.extra)
    before = _hygiene_snapshot(model)

    with contextlib.suppress(RuntimeError), isolated(model):
        for _ in range(3):
            model(torch.randn(2, 1, 6, 6))
        assert model.calls.item() == 4 and model.extra["seen"] == 4  # the forwards did run
        if fails:
            raise RuntimeError("boom")

    _hygiene_assert_untouched(model, before)
    assert dict(model.named_buffers()).keys() == originals.keys()
    for name, tensor in model.named_buffers():
        assert tensor is originals[name], f"{name} is not the original tensor object"
    assert model.extra == extra_before
    assert "added_in_forward" not in model._buffers
    after_state = model.state_dict()
    for key, value in before_state.items():
        assert torch.equal(after_state[key], value), key
    assert model.shared is model.conv.shared  # still one tensor


def test_isolated_keeps_quantization_aware_training_observers():
    from torch.ao.quantization import get_default_qat_qconfig, prepare_qat

    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    net.qconfig = get_default_qat_qconfig("x86")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization deprecation, reduce_range note
        model = prepare_qat(net.train())
    model(torch.randn(4, 1, 8, 8))  # a training step: observers now hold statistics
    before = _hygiene_snapshot(model)
    with isolated(model):
        model(5 * torch.randn(4, 1, 8, 8))  # eval mode does not stop the observers
        changed = [n for n, b in model.named_buffers() if not torch.equal(b, before["buffers"][n])]
        assert changed, "the observers did not update: the test would prove nothing"
    _hygiene_assert_untouched(model, before)


def test_isolated_restores_buffers_inside_inference_mode():
    model = _Stateful()
    model(torch.randn(1, 1, 6, 6))
    del model._buffers["added_in_forward"]
    calls = model.calls
    with torch.inference_mode(), isolated(model):  # inference mode: as in trainer.validate
        model(torch.randn(1, 1, 6, 6))
    assert model.calls is calls and calls.item() == 1 and not calls.is_inference()
