"""Attribution beyond 2-D image classifiers (issue 14): feature vectors, 1-D signals, vision
transformer tokens, and targets that are functions of the output.

References are independent implementations: Captum's ``Saliency`` and ``LayerGradCam`` and
pytorch-grad-cam's ``GradCAM`` with the ``reshape_transform`` its documentation gives for ViTs;
occlusion is checked against a plain loop over the windows.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models import VisionTransformer

from featurewatch.core.attribution import (
    feature_map,
    grad_cam,
    map_shape,
    occlusion,
    occlusion_masks,
    saliency,
)


def tabular_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 3)).eval()


def signal_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv1d(2, 8, 5, padding=2),
        nn.ReLU(),
        nn.Conv1d(8, 8, 5, stride=2, padding=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    ).eval()


def tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    vit = VisionTransformer(
        image_size=32,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
        num_classes=5,
    ).eval()
    nn.init.normal_(vit.heads.head.weight, std=0.5)  # torchvision starts the head at zero
    return vit


def test_one_shape_rule_for_inputs_and_maps() -> None:
    assert map_shape(torch.zeros(4, 20)) == (4, 20)
    assert map_shape(torch.zeros(4, 2, 64)) == (4, 64)
    assert map_shape(torch.zeros(4, 3, 8, 9)) == (4, 8, 9)
    with pytest.raises(ValueError, match=r"\(N, F\).*\(N, C, L\).*\(N, C, H, W\)"):
        saliency(tabular_net(), torch.zeros(4), 0)
    with pytest.raises(ValueError, match="feature vectors"):
        grad_cam(tabular_net(), torch.zeros(2, 20), 0, "0")


def test_saliency_on_feature_vectors_and_signals_equals_captum() -> None:
    from captum.attr import Saliency

    x = torch.randn(6, 20)
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    model = tabular_net()
    ours = saliency(model, x, target)
    theirs = Saliency(copy.deepcopy(model)).attribute(x.clone(), target=target, abs=True)
    assert ours.shape == (6, 20)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)

    s = torch.randn(5, 2, 64)
    model = signal_net()
    ours = saliency(model, s, 1)
    theirs = Saliency(copy.deepcopy(model)).attribute(s.clone(), target=1, abs=True)
    assert ours.shape == (5, 64)
    torch.testing.assert_close(ours, theirs.amax(1), rtol=1e-6, atol=1e-7)


def loop_occlusion(model: nn.Module, x: torch.Tensor, target: int, masks: torch.Tensor):
    """One window at a time, the drop of the target's probability credited to its positions."""
    with torch.no_grad():
        reference = model(x).softmax(1)[:, target]
        credit = torch.zeros(map_shape(x))
        coverage = torch.zeros(map_shape(x)[1:])
        for mask in masks:
            occluded = x.clone()
            if x.dim() == 2:
                occluded[:, mask] = 0.0
            else:
                occluded[:, :, mask] = 0.0
            drop = reference - model(occluded).softmax(1)[:, target]
            credit[:, mask] += drop[:, None]
            coverage[mask] += 1
    return credit / coverage


def test_occlusion_on_feature_vectors_and_signals_equals_a_loop_over_windows() -> None:
    x = torch.randn(4, 20)
    masks = occlusion_masks(x.shape, None, None)
    assert masks.shape == (20, 20) and torch.equal(masks, torch.eye(20, dtype=torch.bool))
    torch.testing.assert_close(
        occlusion(tabular_net(), x, 2), loop_occlusion(tabular_net(), x, 2, masks)
    )
    s = torch.randn(3, 2, 64)
    masks = occlusion_masks(s.shape, 12, 5)
    assert masks.sum(1).eq(12).all() and masks.any(0).all()  # full coverage, last at the end
    assert masks[-1, -1]
    ours = occlusion(signal_net(), s, 1, window=12, stride=5, batch_size=7)
    assert ours.shape == (3, 64)
    torch.testing.assert_close(ours, loop_occlusion(signal_net(), s, 1, masks))
    with pytest.raises(ValueError, match="longer than the inputs"):
        occlusion(signal_net(), s, 1, window=65)


def test_grad_cam_on_a_1d_net_equals_captum_layer_grad_cam() -> None:
    from captum.attr import LayerAttribution, LayerGradCam

    s = torch.randn(5, 2, 64)
    model = signal_net()
    ours = grad_cam(model, s, 2, "2")
    reference = copy.deepcopy(model)
    low = LayerGradCam(reference, reference[2]).attribute(s.clone(), 2, relu_attributions=True)
    theirs = LayerAttribution.interpolate(low, (64,), interpolate_mode="linear")[:, 0]
    assert ours.shape == (5, 64)
    assert (low < 1e-12).any()  # cells the ReLU cut
    torch.testing.assert_close(ours, theirs.detach(), rtol=1e-5, atol=1e-7)


def test_grad_cam_on_vit_tokens_agrees_with_pytorch_grad_cam() -> None:
    """The reshape_transform of pytorch-grad-cam's ViT tutorial: drop the class token, lay the
    patches on the grid, channels first."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    def reshape_transform(tensor: torch.Tensor) -> torch.Tensor:
        patches = tensor[:, 1:, :].reshape(tensor.size(0), 4, 4, tensor.size(2))
        return patches.transpose(2, 3).transpose(1, 2)

    model = tiny_vit()
    torch.manual_seed(1)
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        predicted = model(x).argmax(1)
    layer = "encoder.layers.encoder_layer_1.ln_1"
    ours = grad_cam(model, x, predicted, layer)
    assert ours.shape == (6, 32, 32)
    reference_model = copy.deepcopy(model)
    with GradCAM(
        reference_model, [reference_model.get_submodule(layer)], reshape_transform=reshape_transform
    ) as reference:
        theirs = reference(
            input_tensor=x.clone(), targets=[ClassifierOutputTarget(int(t)) for t in predicted]
        )
    compared = 0
    for i in range(len(x)):
        if float(ours[i].max()) == 0.0:  # nothing positive: their min-max scaled map is 0 too
            assert float(np.abs(theirs[i]).max()) == 0.0
            continue
        r = np.corrcoef(ours[i].flatten().numpy(), theirs[i].flatten())[0, 1]
        assert r >= 0.999, f"image {i}: Pearson r = {r:.5f}"
        compared += 1
    assert compared >= 4
    # the layout itself: the same as the reshape_transform on any tokens
    tokens = torch.randn(6, 17, 32)
    grid = feature_map(model, layer, tokens, x)
    assert grid.shape == (6, 32, 4, 4)
    torch.testing.assert_close(grid, reshape_transform(tokens))


def test_token_grid_can_be_given_and_a_wrong_one_is_refused() -> None:
    tokens = torch.randn(2, 1 + 2 * 8, 16)  # a class token and a 2 x 8 patch grid
    grid = feature_map(nn.Identity(), "x", tokens, torch.zeros(2, 3, 16, 64), (2, 8))
    torch.testing.assert_close(grid[:, :, 1, 3], tokens[:, 1 + 8 + 3])
    with pytest.raises(ValueError, match="grid"):
        feature_map(nn.Identity(), "x", tokens, torch.zeros(2, 3, 16, 64), (5, 5))


def test_a_callable_target_gives_the_maps_of_the_equivalent_class_target() -> None:
    x = torch.randn(4, 20)
    model = tabular_net()
    torch.testing.assert_close(
        saliency(model, x, lambda out: out[:, 1]), saliency(model, x, 1), rtol=0, atol=0
    )
    torch.testing.assert_close(
        occlusion(model, x, lambda out: out[:, 2], output="logit"),
        occlusion(model, x, 2, output="logit"),
    )
    s = torch.randn(3, 2, 64)
    net = signal_net()
    torch.testing.assert_close(
        grad_cam(net, s, lambda out: out[:, 0], "2"), grad_cam(net, s, 0, "2"), rtol=0, atol=0
    )
    # a dense-prediction score: class 1's logits summed over a mask of positions
    dense = nn.Conv1d(2, 3, 3, padding=1).eval()
    mask = torch.zeros(64)
    mask[10:20] = 1.0
    maps = saliency(dense, s, lambda out: (out[:, 1] * mask).sum(1))
    assert maps.shape == (3, 64)
    assert float(maps[:, 30:].abs().max()) == 0.0  # far from the mask, no influence
    assert float(maps[:, 10:20].min()) > 0.0
    with pytest.raises(ValueError, match="one score per input"):
        saliency(model, x, lambda out: out.sum())


def test_signal_saliency_matches_the_gradient_of_an_explicit_function() -> None:
    """Independent of any library: a net whose class-0 logit is sum_t w_t * x[0, t]**2."""

    class Quadratic(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.linspace(-1, 1, 16))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.stack([(self.w * x[:, 0] ** 2).sum(1), x.sum((1, 2))], 1)

    x = torch.randn(3, 2, 16)
    model = Quadratic().eval()
    expected = (2 * model.w.detach() * x[:, 0]).abs()  # channel 1 has no influence on class 0
    torch.testing.assert_close(saliency(model, x, 0), expected)
