from contextlib import suppress

import pytest
import torch
from torch import nn

from featurewatch.core.inspect import activation_maps
from featurewatch.core.layers import (
    StopForward,
    capture,
    list_layers,
    module_calls,
    parse_layer,
    resolve_layer,
)
from tests._models import SmallCNN, TinyResNet


def all_hooks_empty(model: nn.Module) -> bool:
    return all(
        not m._forward_hooks
        and not m._forward_pre_hooks
        and not m._backward_hooks
        and not getattr(m, "_backward_pre_hooks", {})
        for m in model.modules()
    )


def test_unknown_layer_names_closest_and_available():
    model = TinyResNet()
    with pytest.raises(ValueError) as err:
        resolve_layer(model, "layer1.conv")
    msg = str(err.value)
    assert "'layer1.conv' not found in TinyResNet" in msg
    assert "did you mean" in msg and "'layer1.conv1'" in msg
    assert "conv1, relu, layer1.conv1" in msg  # available conv/activation layers, in order
    # a model with neither (an MLP of Linear layers) lists the layers it has, not "none"
    with pytest.raises(
        ValueError, match=r"\(layers: 0, 1; names come from model.named_modules\(\)\)"
    ):
        resolve_layer(nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)), "fc")


def test_parse_layer_call_suffix():
    assert parse_layer("layer1.relu@1").call == 1
    assert parse_layer("layer1.relu").call is None
    with pytest.raises(ValueError, match="call index"):
        parse_layer("layer1.relu@x")
    with pytest.raises(TypeError):
        parse_layer(3)  # type: ignore[arg-type]


def test_list_layers_kinds():
    names = list_layers(SmallCNN())
    assert names == ["features.0", "features.2", "features.4", "features.6"]


def test_reused_relu_is_captured_per_call_site():
    torch.manual_seed(0)
    model = TinyResNet().eval()
    x = torch.randn(2, 3, 8, 8)
    counts = module_calls(model, lambda: model(x), ["layer1.relu"])
    assert counts == {"layer1.relu": 2}
    with torch.no_grad():
        first = torch.relu(
            model.layer1.bn1(model.layer1.conv1(model.relu(model.bn1(model.conv1(x)))))
        )
    with (
        torch.no_grad(),
        capture(
            model, ["layer1.relu@0", "layer1.relu@1", "layer1.relu"], call_counts=counts
        ) as got,
    ):
        out = model(x)
    assert torch.allclose(got["layer1.relu@0"], first)
    assert not torch.allclose(got["layer1.relu@0"], got["layer1.relu@1"])
    # without @k the last call is meant; and the captured tensor survives later in-place ops
    assert torch.equal(got["layer1.relu"], got["layer1.relu@1"])
    assert out.shape == (2, 10)
    assert all_hooks_empty(model)


def test_capture_stops_after_deepest_layer_and_removes_hooks():
    model = SmallCNN().eval()
    calls = []
    h = model.fc.register_forward_hook(lambda *a: calls.append("fc"))
    try:
        x = torch.randn(1, 1, 8, 8)
        with (
            pytest.raises(ValueError, match="call_counts"),
            capture(model, ["features.2"], stop=True),
        ):
            pass
        counts = module_calls(model, lambda: model(x), ["features.2"])
        calls.clear()
        with (
            capture(model, ["features.2"], stop=True, call_counts=counts) as got,
            suppress(StopForward),
        ):
            model(x)
        assert "features.2" in got.outputs and calls == []
    finally:
        h.remove()
    assert all_hooks_empty(model)


def test_hooks_removed_when_forward_raises():
    model = SmallCNN()
    with pytest.raises(RuntimeError), capture(model, ["features.2"]):
        model(torch.randn(1, 3, 8, 8))  # wrong channel count
    assert all_hooks_empty(model)


def test_activation_maps_matches_manual_forward():
    torch.manual_seed(1)
    model = SmallCNN().eval()
    x = torch.randn(3, 1, 8, 8)
    maps = activation_maps(model, x, ["features.2", "features.6"])
    with torch.no_grad():
        h = model.features[:3](x)
        expected = model.features[3:](h)
    assert torch.allclose(maps["features.2"], h)
    assert torch.allclose(maps["features.6"], expected)


def test_activation_maps_of_a_conv_followed_by_inplace_relu_are_not_rectified():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3), nn.ReLU(inplace=True)
    ).eval()
    x = torch.randn(2, 1, 8, 8)
    maps = activation_maps(model, x, ["0", "2"])
    with torch.no_grad():
        conv0 = model[0](x)
    assert conv0.min() < 0
    assert torch.equal(maps["0"], conv0)  # the captured conv output, not the ReLU'd one
