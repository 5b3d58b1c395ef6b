"""Attribution maps: planted ground truth, closed-form identities, batched == naive, hygiene."""

from __future__ import annotations

import ast
import copy
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from featurewatch.core.attribution import cam, grad_cam, occlusion, overlay, saliency
from featurewatch.core.cam_layers import (
    check_cam_layer,
    default_gradcam_layer,
    find_cam_layer,
    last_conv_layer,
    last_linear_layer,
)
from featurewatch.core.inspect import activation_maps
from tests._hygiene import assert_untouched, snapshot
from tests._models import SmallCNN, TinyResNet
from tests.core._trained import trained_digits_net, validation_digits

SIZE = 16
#: Two disjoint boxes (row slice, column slice): class c's score reads only box c.
BOXES = [(slice(2, 8), slice(2, 8)), (slice(9, 15), slice(8, 14))]


class Boxes(nn.Module):
    """Multiplies channel c of its input by the indicator of box c."""

    def __init__(self) -> None:
        super().__init__()
        masks = torch.zeros(len(BOXES), SIZE, SIZE)
        for c, (rows, cols) in enumerate(BOXES):
            masks[c, rows, cols] = 1.0
        self.masks: torch.Tensor
        self.register_buffer("masks", masks)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return a * self.masks


class BoxNet(nn.Module):
    """score_c = mean over the image of (w . x) * box_c: a GAP + linear net looking only in box c.

    The 1x1 conv mixes the 3 input channels with fixed positive weights, ``mask`` keeps box c in
    channel c, and the classifier is the identity on the pooled channels.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, len(BOXES), 1, bias=False)
        self.mask = Boxes()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(len(BOXES), len(BOXES))
        with torch.no_grad():
            self.conv.weight.copy_(
                torch.tensor([0.5, 1.0, 1.5]).expand(len(BOXES), 3)[..., None, None]
            )
            self.fc.weight.copy_(torch.eye(len(BOXES)) * 4.0)
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.mask(self.conv(x))).flatten(1))


def bright_images(n: int = 2, seed: int = 0) -> torch.Tensor:
    """Positive images that are bright everywhere: only the model's box makes a region special."""
    return 0.5 + 0.5 * torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def box_mass(maps: torch.Tensor, box: int) -> torch.Tensor:
    """Fraction of each map's positive mass inside a box."""
    rows, cols = BOXES[box]
    pos = maps.clamp_min(0)
    return pos[:, rows, cols].sum(dim=(1, 2)) / pos.sum(dim=(1, 2))


def argmax_in_box(maps: torch.Tensor, box: int) -> bool:
    rows, cols = BOXES[box]
    flat = maps.flatten(1).argmax(1)
    r, c = flat // SIZE, flat % SIZE
    return bool(((r >= rows.start) & (r < rows.stop) & (c >= cols.start) & (c < cols.stop)).all())


def small_cnn() -> SmallCNN:
    torch.manual_seed(0)
    m = SmallCNN()
    with torch.no_grad():  # non-trivial BN statistics, so "unchanged" means something
        m.train()
        m(torch.randn(8, 1, SIZE, SIZE))
    return m.eval()


def digits(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


# ---------------------------------------------------------------------- planted ground truth
PLANTED: dict[str, Callable[[nn.Module, torch.Tensor, int], torch.Tensor]] = {
    "saliency": lambda m, x, t: saliency(m, x, t),
    "smoothgrad": lambda m, x, t: saliency(m, x, t, smooth=8, noise=0.3),
    "occlusion": lambda m, x, t: occlusion(m, x, t, window=2, stride=1, output="logit"),
    "gradcam": lambda m, x, t: grad_cam(m, x, t, "mask"),
    "cam": lambda m, x, t: cam(m, x, t, "mask", "fc"),
}


@pytest.mark.parametrize("method", sorted(PLANTED))
def test_each_method_finds_the_box_the_class_reads(method: str) -> None:
    model, x = BoxNet(), bright_images()
    # a whole-image method would put 36 / 256 = 14% of its mass in a box; occlusion credits every
    # pixel of a window that overlaps the box, so its map spills one pixel (window - 1) around it
    # (the exact support is checked below)
    threshold = 0.7 if method == "occlusion" else 0.95
    for target in (0, 1):
        maps = PLANTED[method](model, x, target)
        assert maps.shape == (2, SIZE, SIZE)
        mass = box_mass(maps, target)
        assert (mass > threshold).all(), f"{method}, class {target}: {mass}"
        assert argmax_in_box(maps, target)
        assert (box_mass(maps, 1 - target) < 0.05).all()


def test_occlusion_support_is_the_box_grown_by_the_window_and_sign_follows_the_class() -> None:
    model, x = BoxNet(), bright_images()
    logit = occlusion(model, x, 0, window=3, stride=1, output="logit")
    rows, cols = BOXES[0]
    grown = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    grown[rows.start - 2 : rows.stop + 2, cols.start - 2 : cols.stop + 2] = True
    assert (logit[:, ~grown].abs() < 1e-6).all()  # windows that miss the box change nothing
    assert (logit[:, grown] > 0).all()
    # with the softmax probability, covering the *other* class's box helps class 0: negative there
    prob = occlusion(model, x, 0, window=2, stride=1)
    rows1, cols1 = BOXES[1]
    assert (prob[:, rows1, cols1] < 0).all() and (prob[:, rows, cols] > 0).all()
    assert prob.abs().max() <= 1.0


# ---------------------------------------------------------------------- closed-form identities
def lowres_cam(model: nn.Module, x: torch.Tensor, target: torch.Tensor, layer: str) -> torch.Tensor:
    """CAM at the feature map's own resolution, by hand: ``sum_k W[target, k] A_k``."""
    a = activation_maps(model, x, [layer])[layer]
    return torch.einsum("nk,nkhw->nhw", model.fc.weight.detach()[target], a)


def upsample(maps: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    return F.interpolate(maps[:, None], size=(size, size), mode="bilinear", align_corners=False)[
        :, 0
    ]


def test_grad_cam_is_the_upsampled_positive_part_of_cam_over_positions_on_a_gap_linear_net() -> (
    None
):
    """Selvaraju et al., eq. 2: the ReLU acts on the h x w map, and the result is upsampled.

    On a GAP + linear net the Grad-CAM weights are ``W[target] / (h * w)``, so
    ``grad_cam == upsample(relu(cam_lowres)) / (h * w)`` and ``cam == upsample(cam_lowres)``.
    """
    model, x = small_cnn(), digits()
    target = torch.tensor([3, 0, 7])
    # features.6 is an in-place ReLU whose output is pooled into fc: 8 x 8 positions
    gc = grad_cam(model, x, target, "features.6")
    c = cam(model, x, target, "features.6", "fc")
    low = lowres_cam(model, x, target, "features.6")
    assert low.shape == (3, 8, 8)
    assert gc.shape == c.shape == (3, SIZE, SIZE)
    assert (low < 0).any() and (low > 0).any()  # a real, signed CAM: not a degenerate case
    torch.testing.assert_close(c, upsample(low), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(gc, upsample(low.clamp_min(0)) / 64, rtol=1e-4, atol=1e-7)
    # the order matters here: ReLU after the upsampling is a different map (what grad_cam was)
    assert (gc - c.clamp_min(0) / 64).abs().max() > 1e-2 * gc.max()
    # the default CAM layer is the pooled map, found by running the network
    torch.testing.assert_close(cam(model, x, target), c)


def test_grad_cam_matches_pytorch_grad_cam_on_a_trained_net_with_negative_regions() -> None:
    """The reference implementation as the oracle, on maps that are partly negative.

    On random weights most maps are of one sign and the order of ReLU and upsampling hardly shows;
    a trained digits CNN has 8 x 8 and 4 x 4 maps with negative cells next to positive ones (a
    quarter to a half of the cells at ``features.3``/``features.4``, where a ReLU after the
    upsampling took the correlation down to 0.94). pytorch-grad-cam min-max scales its maps, so they
    are compared by Pearson correlation, image by image.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, accuracy = trained_digits_net()
    assert accuracy > 0.8  # really trained
    x = validation_digits(8)
    with torch.no_grad():
        predicted = model(x).argmax(1)
    for layer, size in (("features.3", 8), ("features.4", 8), ("features.6", 4), ("features.7", 4)):
        ours = grad_cam(model, x, predicted, layer)
        reference_model = copy.deepcopy(model)  # it calls eval()/zero_grad() on the model it gets
        with GradCAM(reference_model, [reference_model.get_submodule(layer)]) as reference:
            theirs = reference(
                input_tensor=x.clone(),
                targets=[ClassifierOutputTarget(int(t)) for t in predicted],
            )
        # the low-resolution maps have negative cells next to positive ones (in most images)
        a = activation_maps(model, x, [layer])[layer].requires_grad_(True)
        tail = model.features[int(layer.split(".")[1]) + 1 :]
        logits = model.fc(model.pool(tail(a)).flatten(1))
        (g,) = torch.autograd.grad(logits.gather(1, predicted[:, None]).sum(), a)
        low = (g.mean((2, 3), keepdim=True) * a).sum(1).detach()
        assert low.shape[-2:] == (size, size)
        mixed = (low < 0).flatten(1).any(1) & (low > 0).flatten(1).any(1)
        assert mixed.sum() >= len(x) // 2, f"{layer}: {int(mixed.sum())} of {len(x)} signed maps"
        for i in range(len(x)):
            r = np.corrcoef(ours[i].flatten().numpy(), theirs[i].flatten())[0, 1]
            assert r >= 0.999, f"{layer}, image {i}: Pearson r = {r:.4f}"


def test_cam_layer_is_found_in_forward_order_and_wrong_layers_are_refused() -> None:
    assert find_cam_layer(small_cnn(), digits(1)) == "features.6"
    assert find_cam_layer(BoxNet(), bright_images(1)) == "mask"
    # the block's ReLU is called twice; the pooled map is its second (last) call
    assert find_cam_layer(TinyResNet().eval(), torch.randn(1, 3, SIZE, SIZE)) == "layer1.relu"
    model, x = small_cnn(), digits(1)
    check_cam_layer(model, x, "features.6")
    with pytest.raises(
        ValueError, match=r"'features\.4' is undefined.*layer='features\.6'.*'gradcam'"
    ):
        check_cam_layer(model, x, "features.4")  # right channel count, but BN + ReLU follow it
    with pytest.raises(ValueError, match=r"8 channels but classifier 'fc' takes 16.*grad_cam"):
        cam(model, x, 0, "features.0")
    no_gap = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 3))
    with pytest.raises(ValueError, match="no layer of Sequential is pooled into it; use 'gradcam'"):
        find_cam_layer(no_gap, digits(1))
    # with several nn.Linear layers, the error says how to name the right one
    two_heads = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4),
        nn.ReLU(), nn.Linear(4, 3),
    )  # fmt: skip
    with pytest.raises(
        ValueError, match=r"classifier '6'.*name it with `classifier=` \(others: 4\)"
    ):
        find_cam_layer(two_heads, digits(1))
    assert find_cam_layer(two_heads, digits(1), classifier="4") == "1"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cam_layer_is_found_in_low_precision(dtype: torch.dtype) -> None:
    """bf16/fp16 pooling rounds its result (relative error ~4e-3 in bf16): the comparison with the
    classifier's input must allow for the model's dtype, not float32's 1e-4."""
    model, x = small_cnn(), digits(2)
    expected = find_cam_layer(model, x)
    low = copy.deepcopy(model).to(dtype)
    assert find_cam_layer(low, x) == expected == "features.6"
    check_cam_layer(low, x, "features.6")
    with pytest.raises(ValueError, match=r"'features\.4' is undefined.*layer='features\.6'"):
        check_cam_layer(low, x, "features.4")  # a wrong layer is still refused
    maps = cam(low, x, [1, 2])  # the default layer, end to end
    assert maps.dtype == dtype
    torch.testing.assert_close(maps.float(), cam(model, x, [1, 2]), rtol=0.1, atol=0.05)


def strided_net() -> nn.Sequential:
    """conv/2 - ReLU - conv/2 - BN - ReLU - global pool - linear: on 4 x 4 inputs the pooled map is
    1 x 1 (what torchvision's ResNet-18 does on 32 px CIFAR images)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3),
    ).eval()  # fmt: skip


def test_a_1x1_pooled_map_is_a_valid_cam_layer() -> None:
    model = strided_net()
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    # the ReLU's 1 x 1 output is the pooled map; the pool's own (N, 6, 1, 1) output is not the layer
    assert find_cam_layer(model, x) == "4"
    assert find_cam_layer(model, torch.randn(1, 1, 8, 8)) == "4"  # the same layer at 2 x 2
    check_cam_layer(model, x, "4")
    with pytest.raises(ValueError, match=r"'2' is undefined.*use layer='4' for CAM"):
        check_cam_layer(model, x, "2")  # BN + ReLU follow the conv: a true message, with a hint
    maps = cam(model, x, [0, 2])
    assert maps.shape == (2, 4, 4)
    torch.testing.assert_close(maps, maps[:, :1, :1].expand(-1, 4, 4))  # one value per image
    # CAM = Grad-CAM x positions, with 1 position
    torch.testing.assert_close(grad_cam(model, x, [0, 2], "4"), maps.clamp_min(0))
    assert default_gradcam_layer(model, x) == "4"


def test_a_max_pool_that_outputs_1x1_is_a_feature_map_not_the_global_pool() -> None:
    """VGG at 32 px: its last MaxPool2d turns 2 x 2 into 1 x 1, then AdaptiveAvgPool2d(1) pools
    that. The MaxPool2d output (and its Sequential) is the CAM layer; only the adaptive pool is
    not."""
    torch.manual_seed(0)
    features = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
    model = nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3)).eval()
    x = torch.randn(2, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    assert find_cam_layer(model, x) == "0.2"
    assert cam(model, x, [0, 1]).shape == (2, 2, 2)
    # a CIFAR VGG with no adaptive pool: MaxPool2d down to 1 x 1, Flatten, Linear. The max pool's
    # output is what the classifier reads; it is not "computed from a pooled map"
    vgg = nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(), nn.Linear(6, 3)
    ).eval()
    assert find_cam_layer(vgg, torch.randn(2, 1, 4, 4)) == "2"


class AuxNet(nn.Module):
    """SmallCNN's layers plus an auxiliary head registered *last* and called only in training
    (GoogLeNet's aux classifiers): registration order is not forward order."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = small_cnn().features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)
        self.aux = nn.Sequential(
            nn.Conv2d(16, 4, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        out = self.fc(self.pool(f).flatten(1))
        return out + self.aux(f) if self.training else out


def test_default_gradcam_layer_follows_the_forward_pass_not_registration_order() -> None:
    model, x = AuxNet().eval(), digits(2)
    assert last_conv_layer(model) == "aux.0" and last_linear_layer(model) == "aux.4"  # the trap
    # the default classifier (aux.4) is never called: no CAM layer, so the last spatial map in
    # forward order, larger than 1 x 1 (the pool's (N, 16, 1, 1) output finishes after it)
    before = snapshot(model)
    assert default_gradcam_layer(model, x) == "features"
    assert_untouched(model, before)  # the probing forward pass leaves no hook behind
    maps = grad_cam(model, x, [1, 2])
    assert maps.max() > 0
    torch.testing.assert_close(maps, grad_cam(model, x, [1, 2], "features.6"))
    # naming the classifier finds the pooled map (the same tensor, named by its leaf module)
    assert default_gradcam_layer(model, x, classifier="fc") == "features.6"
    with pytest.raises(ValueError, match=r"'aux\.0' was not called.*pass `layer=`"):
        grad_cam(model, x, 1, "aux.0")
    with pytest.raises(
        ValueError, match=r"no module of Sequential outputs a spatial.*pass `layer=`"
    ):
        default_gradcam_layer(nn.Sequential(nn.Flatten(), nn.Linear(256, 3)), digits(1))


def test_default_gradcam_layer_is_the_block_output_not_a_zero_initialized_residual_branch() -> None:
    """resnet(zero_init_residual=True): the last registered conv is inside the residual branch,
    whose BatchNorm scale is 0, so the score does not depend on it at all (blank maps)."""
    torch.manual_seed(0)
    model = TinyResNet().eval()
    with torch.no_grad():
        model.layer1.bn2.weight.zero_()
    x = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    target = [0, 3, 5]
    assert last_conv_layer(model) == "layer1.conv2"
    assert grad_cam(model, x, target, "layer1.conv2").abs().max() == 0
    assert default_gradcam_layer(model, x) == "layer1.relu"  # the block's output, pooled into fc
    maps = grad_cam(model, x, target)
    assert (maps.flatten(1).amax(1) > 0).all()
    torch.testing.assert_close(maps, grad_cam(model, x, target, "layer1"))


class LayerNorm2d(nn.LayerNorm):
    """torchvision's ConvNeXt ``LayerNorm2d``: a LayerNorm over the channels of (N, C, H, W)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Permute(nn.Module):
    def __init__(self, *dims: int) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)


class TinyCNBlock(nn.Module):
    """torchvision's CNBlock: depthwise conv, then an MLP on channels-last (N, h, w, C) tensors."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels), Permute(0, 2, 3, 1),
            nn.LayerNorm(channels), nn.Linear(channels, 4 * channels), nn.GELU(),
            nn.Linear(4 * channels, channels), Permute(0, 3, 1, 2),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class TinyConvNeXt(nn.Module):
    """torchvision's ConvNeXt in miniature (16 x 16 -> 2 x 2): stem, downsample, one block, then
    ``avgpool`` and a classifier that normalizes the *pooled* (N, C, 1, 1) vector before its
    Linear, ``Sequential(LayerNorm2d, Flatten, Linear)``. ``functional_pool`` pools with
    ``mean((2, 3))`` instead of the ``avgpool`` module (no hook sees that pool)."""

    def __init__(
        self, in_channels: int = 1, classes: int = 3, functional_pool: bool = False
    ) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(in_channels, 8, 4, stride=4), LayerNorm2d(8)),
            nn.Sequential(LayerNorm2d(8), nn.Conv2d(8, 16, 3, stride=2, padding=1)),
            TinyCNBlock(16),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(LayerNorm2d(16), nn.Flatten(1), nn.Linear(16, classes))
        self.functional_pool = functional_pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        pooled = f.mean((2, 3), keepdim=True) if self.functional_pool else self.avgpool(f)
        return self.classifier(pooled)


@pytest.mark.parametrize("functional_pool", [False, True])
def test_convnext_default_gradcam_layer_is_the_map_entering_the_pool_not_the_norm_after_it(
    functional_pool: bool,
) -> None:
    """The LayerNorm2d on the pooled vector is what the Linear reads, and its output is (N, C, 1, 1)
    at every input size: as the Grad-CAM layer it gave uniform maps (torchvision's convnext_tiny
    chose 'classifier.0')."""
    model = TinyConvNeXt(functional_pool=functional_pool).eval()
    x = torch.randn(3, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(4))
    before = snapshot(model)
    assert default_gradcam_layer(model, x) == "features"  # the 2 x 2 map the pool averages
    assert_untouched(model, before)
    maps = grad_cam(model, x, [0, 1, 2])
    flat = maps.flatten(1)
    assert (flat.amax(1) - flat.amin(1) > 1e-6).all(), "uniform maps: the layer is after the pool"
    torch.testing.assert_close(maps, grad_cam(model, x, [0, 1, 2], "features"))


def test_convnext_default_gradcam_layer_at_small_inputs_is_still_before_the_pool() -> None:
    model = TinyConvNeXt().eval()
    # 8 x 8: the last stage is 1 x 1; its channels-last (N, 1, 1, 16) Linear outputs are not maps,
    # the last channels-first map larger than 1 x 1 is (the downsample's LayerNorm2d, 2 x 2)
    assert default_gradcam_layer(model, torch.randn(1, 1, 8, 8)) == "features.1.0"
    # 4 x 4: every map is 1 x 1; the one the pool averages, not the LayerNorm2d applied after it
    assert default_gradcam_layer(model, torch.randn(1, 1, 4, 4)) == "features"


@pytest.mark.parametrize("size", [SIZE, 4])
def test_cam_refuses_a_network_that_normalizes_the_pooled_vector(size: int) -> None:
    """CAM needs pool -> linear: ConvNeXt's LayerNorm2d between them makes it undefined, and the
    message says which module is in the way (not "name another nn.Linear")."""
    model = TinyConvNeXt().eval()
    x = torch.randn(2, 1, size, size, generator=torch.Generator().manual_seed(5))
    before = snapshot(model)
    why = (
        r"classifier 'classifier\.2' reads a globally average-pooled feature map, and no layer of "
        r"TinyConvNeXt is pooled into it; TinyConvNeXt applies classifier\.0 \(LayerNorm2d\) "
        r"between the global pool 'avgpool' and the classifier.*\(pool -> linear only\); use "
        r"'gradcam'"
    )
    with pytest.raises(ValueError, match=why) as err:
        find_cam_layer(model, x)
    assert "classifier=" not in str(err.value)
    with pytest.raises(ValueError, match=why):
        cam(model, x, 0)
    with pytest.raises(ValueError, match=r"CAM at layer 'features' is undefined: .*" + why):
        check_cam_layer(model, x, "features")
    assert_untouched(model, before)
    # functional pooling hides the pool from hooks: refused all the same at 16 x 16
    with pytest.raises(ValueError, match=r"no layer of TinyConvNeXt is pooled into it.*'gradcam'"):
        find_cam_layer(TinyConvNeXt(functional_pool=True).eval(), bright_images(1)[:, :1])


def test_default_layers_with_helpful_errors() -> None:
    model = small_cnn()
    assert last_conv_layer(model) == "features.4"
    assert last_linear_layer(model) == "fc"
    # the default Grad-CAM layer is the pooled map (after BN and ReLU), not the last conv
    assert default_gradcam_layer(model, digits(1)) == "features.6"
    torch.testing.assert_close(
        grad_cam(model, digits(), 1), grad_cam(model, digits(), 1, "features.6")
    )
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(256, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match=r"no convolution layer.*layers: 1, 2, 3"):
        last_conv_layer(mlp)
    with pytest.raises(ValueError, match=r"no nn.Linear.*use 'gradcam'.*layers: 0, 1, 2"):
        last_linear_layer(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3)))


# ---------------------------------------------------------------------- batched == naive
def naive_occlusion(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    window: tuple[int, int],
    stride: tuple[int, int],
    baseline: torch.Tensor,
    output: str,
) -> torch.Tensor:
    """One forward per image and window: the reference implementation."""

    def score(images: torch.Tensor, t: int) -> float:
        out = model(images)
        return float((out.softmax(1) if output == "probability" else out)[0, t])

    n, _, h, w = x.shape
    rows = list(range(0, h - window[0] + 1, stride[0]))
    cols = list(range(0, w - window[1] + 1, stride[1]))
    rows += [h - window[0]] if rows[-1] != h - window[0] else []
    cols += [w - window[1]] if cols[-1] != w - window[1] else []
    result = torch.zeros(n, h, w)
    with torch.no_grad():
        for i in range(n):
            total, count = torch.zeros(h, w), torch.zeros(h, w)
            full = score(x[i : i + 1], int(target[i]))
            for r in rows:
                for c in cols:
                    covered = x[i : i + 1].clone()
                    covered[..., r : r + window[0], c : c + window[1]] = baseline[
                        ..., r : r + window[0], c : c + window[1]
                    ]
                    total[r : r + window[0], c : c + window[1]] += full - score(
                        covered, int(target[i])
                    )
                    count[r : r + window[0], c : c + window[1]] += 1
            result[i] = total / count
    return result


@pytest.mark.parametrize("output", ["probability", "logit"])
def test_batched_occlusion_equals_a_naive_loop_over_windows(
    output: Literal["probability", "logit"],
) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, 5),
    ).eval()
    x = torch.randn(2, 2, 8, 9)
    target = torch.tensor([4, 1])
    baseline = torch.tensor([0.3, -0.2]).reshape(2, 1, 1).expand(2, 8, 9)
    # 4 x 5 window positions, the last row and column pushed to the border; 5 copies per forward
    fast = occlusion(
        model,
        x,
        target,
        window=(3, 2),
        stride=2,
        baseline=baseline[None],
        batch_size=5,
        output=output,
    )
    slow = naive_occlusion(model, x, target, (3, 2), (2, 2), baseline, output)
    assert fast.abs().max() > 1e-3  # something was measured
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-6)


def count_forwards(model: nn.Module, run: Callable[[], object]) -> int:
    calls = [0]
    handle = model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        run()
    finally:
        handle.remove()
    return calls[0]


def test_batched_equals_per_image_and_batch_size_changes_nothing() -> None:
    model, x = small_cnn(), digits(3)
    target = [5, 2, 9]
    # the functions with a `batch_size`, and a small one that splits the work into chunks: 3 images
    # in 2 + 1, 15 noisy copies in chunks of 4 that straddle images, 3 x 49 occluded copies in 30
    for name, small, fn in [
        ("saliency", 2, lambda bs: saliency(model, x, target, batch_size=bs)),
        ("smoothgrad", 4, lambda bs: saliency(model, x, target, smooth=5, batch_size=bs)),
        ("occlusion", 5, lambda bs: occlusion(model, x, target, batch_size=bs)),
    ]:
        together = fn(64)
        assert together.abs().max() > 0
        chunked = fn(small)
        forwards = count_forwards(model, lambda: fn(small))  # noqa: B023
        assert forwards > count_forwards(model, lambda: fn(64)), name  # noqa: B023
        torch.testing.assert_close(chunked, together, rtol=1e-4, atol=1e-7, msg=name)
    # every method: a batch gives the maps of its images computed one by one
    for name, fn in {
        "saliency": lambda xs, ts: saliency(model, xs, ts),
        "occlusion": lambda xs, ts: occlusion(model, xs, ts, window=8, stride=4),
        "grad_cam": lambda xs, ts: grad_cam(model, xs, ts),
        "cam": lambda xs, ts: cam(model, xs, ts, "features.6"),
    }.items():
        alone = torch.cat([fn(x[i : i + 1], target[i]) for i in range(3)])
        torch.testing.assert_close(fn(x, target), alone, rtol=1e-4, atol=1e-7, msg=name)


# ---------------------------------------------------------------------- SmoothGrad randomness
def test_smoothgrad_draws_only_from_its_private_generator() -> None:
    model, x = small_cnn(), digits(2)
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    a = saliency(model, x, 1, smooth=6, generator=torch.Generator().manual_seed(7))
    b = saliency(model, x, 1, smooth=6, generator=torch.Generator().manual_seed(7))
    c = saliency(model, x, 1, smooth=6, generator=torch.Generator().manual_seed(8))
    assert torch.equal(torch.get_rng_state(), rng), "the global RNG was touched"
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert torch.equal(
        saliency(model, x, 1, smooth=6), saliency(model, x, 1, smooth=6)
    )  # default seed
    # with zero noise, SmoothGrad is the average of identical gradients
    torch.testing.assert_close(saliency(model, x, 1, smooth=3, noise=0.0), saliency(model, x, 1))


# ---------------------------------------------------------------------- hygiene
def messy_state(model: nn.Module) -> None:
    """Training mode with one module in eval, a frozen parameter, a parameter with a .grad."""
    model.train()
    list(model.modules())[2].eval()
    params = list(model.parameters())
    params[0].requires_grad_(False)
    params[1].grad = torch.full_like(params[1], 0.25)


ENTRY_POINTS: dict[str, Callable[[nn.Module, torch.Tensor], object]] = {
    "saliency": lambda m, x: saliency(m, x, 1),
    "smoothgrad": lambda m, x: saliency(m, x, [1, 2], smooth=3),
    "occlusion": lambda m, x: occlusion(m, x, 2, batch_size=7),
    "grad_cam": lambda m, x: grad_cam(m, x, 3, "features.2"),
    "grad_cam_default_layer": lambda m, x: grad_cam(m, x, 3),
    "default_gradcam_layer": lambda m, x: default_gradcam_layer(m, x),
    "cam": lambda m, x: cam(m, x, 3, "features.6"),
    "cam_default_layer": lambda m, x: cam(m, x, 3),
    "find_cam_layer": lambda m, x: find_cam_layer(m, x),
    "check_cam_layer": lambda m, x: check_cam_layer(m, x, "features.6"),
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_entry_points_leave_the_model_untouched(entry: str) -> None:
    model = small_cnn()
    messy_state(model)
    before = snapshot(model)
    ENTRY_POINTS[entry](model, digits(2))
    assert_untouched(model, before)
    # as isolated() leaves it: every parameter frozen, eval mode
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    before = snapshot(model)
    ENTRY_POINTS[entry](model, digits(2))
    assert_untouched(model, before)


class Explode(nn.Module):
    armed = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.armed:
            raise RuntimeError("boom")
        return x


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_an_exception_inside_the_model_leaves_nothing_behind(entry: str) -> None:
    model = small_cnn()
    model.pool = nn.Sequential(Explode(), model.pool)  # type: ignore[assignment]  # after every hooked layer
    messy_state(model)
    before = snapshot(model)
    Explode.armed = True
    try:
        with pytest.raises(RuntimeError, match="boom"):
            ENTRY_POINTS[entry](model, digits(2))
    finally:
        Explode.armed = False
    assert_untouched(model, before)


def not_inplace(model: nn.Module) -> nn.Module:
    twin = copy.deepcopy(model)
    for m in twin.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return twin


def test_in_place_relu_after_or_at_the_layer_gives_the_same_map() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3),
    ).eval()  # fmt: skip
    twin, x = not_inplace(model), digits(3)
    for layer in ("0", "1", "2", "3"):
        maps = grad_cam(model, x, [0, 1, 2], layer)
        assert maps.max() > 0
        torch.testing.assert_close(maps, grad_cam(twin, x, [0, 1, 2], layer), rtol=1e-5, atol=1e-8)
    # the conv output holds negatives the in-place ReLU would erase: the maps must differ from the
    # ReLU's
    assert not torch.allclose(grad_cam(model, x, 0, "2"), grad_cam(model, x, 0, "3"))
    # a module called twice (torchvision-style block): each call, in place, vs not in place
    res = TinyResNet().eval()
    twin_res, rgb = (
        not_inplace(res),
        torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2)),
    )
    for layer in ("layer1.relu@0", "layer1.relu@1", "layer1.relu", "layer1.bn2"):
        torch.testing.assert_close(
            grad_cam(res, rgb, 4, layer), grad_cam(twin_res, rgb, 4, layer), rtol=1e-5, atol=1e-8
        )
    torch.testing.assert_close(
        grad_cam(res, rgb, 4, "layer1.relu"), grad_cam(res, rgb, 4, "layer1.relu@1")
    )
    assert not torch.allclose(
        grad_cam(res, rgb, 4, "layer1.relu@0"), grad_cam(res, rgb, 4, "layer1.relu@1")
    )


def test_works_from_inside_inference_mode() -> None:
    model, x = small_cnn(), digits(2)
    outside = (saliency(model, x, 1), grad_cam(model, x, 1), occlusion(model, x, 1))
    with torch.inference_mode():
        inside = (saliency(model, x, 1), grad_cam(model, x, 1), occlusion(model, x, 1))
    for a, b in zip(outside, inside):
        assert not b.is_inference()
        torch.testing.assert_close(a, b)


# ---------------------------------------------------------------------- errors and display
def test_errors_say_what_is_valid() -> None:
    model, x = small_cnn(), digits(2)
    with pytest.raises(
        ValueError, match=r"target class 10 out of range.*10 scores \(valid: 0\.\.9\)"
    ):
        saliency(model, x, [1, 10])
    with pytest.raises(ValueError, match=r"target class 12 out of range"):
        occlusion(model, x, 12)
    with pytest.raises(ValueError, match=r"valid: 0\.\.9"):
        cam(model, x, -1, "features.6")
    with pytest.raises(ValueError, match="one class per image: expected 2, got 3"):
        grad_cam(model, x, [1, 2, 3])
    with pytest.raises(TypeError, match="class index"):
        grad_cam(model, x, 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"'features\.60' not found in SmallCNN.*features\.6"):
        grad_cam(model, x, 1, "features.60")
    with pytest.raises(
        ValueError, match=r"layer 'fc' outputs shape \(2, 10\); name a conv layer.*features\.4"
    ):
        grad_cam(model, x, 1, "fc")
    with pytest.raises(ValueError, match=r"called 1 time\(s\).*features\.6@0\.\.0"):
        grad_cam(model, x, 1, "features.6@1")
    with pytest.raises(TypeError, match="must name an nn.Linear.*'features.0' is a Conv2d.*fc"):
        cam(model, x, 1, "features.6", classifier="features.0")
    with pytest.raises(ValueError, match="`window`"):
        occlusion(model, x, 1, window=0)
    with pytest.raises(ValueError, match="never be covered"):
        occlusion(model, x, 1, window=2, stride=(1, 3))
    with pytest.raises(ValueError, match="larger than the images"):
        occlusion(model, x, 1, window=17)
    with pytest.raises(ValueError, match="`smooth`"):
        saliency(model, x, 1, smooth=-1)
    with pytest.raises(ValueError, match=r"\(N, classes\) scores"):
        saliency(nn.Conv2d(1, 2, 3), x, 0)


class TupleOut(nn.Module):
    """A LightningModule-style network returning ``(logits, features)``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.net.features(x)
        return self.net.fc(self.net.pool(features).flatten(1)), features


class DictOut(TupleOut):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        logits, features = super().forward(x)
        return {"features": features, "logits": logits}


def test_output_key_selects_the_logits_of_tuple_and_dict_outputs() -> None:
    base, x, target = small_cnn(), digits(2), [3, 7]
    reference = {
        "saliency": saliency(base, x, target),
        "smoothgrad": saliency(base, x, target, smooth=2),
        "occlusion": occlusion(base, x, target, window=8, stride=4),
        "grad_cam": grad_cam(base, x, target),
    }
    for model, key in [
        (TupleOut(base), 0),
        (TupleOut(base), -2),
        (DictOut(base), "logits"),
        (DictOut(base), lambda out: out["logits"]),
    ]:
        got = {
            "saliency": saliency(model, x, target, output_key=key),
            "smoothgrad": saliency(model, x, target, smooth=2, output_key=key),
            "occlusion": occlusion(model, x, target, window=8, stride=4, output_key=key),
            "grad_cam": grad_cam(model, x, target, "net.features.6", output_key=key),
        }
        for name, maps in got.items():
            torch.testing.assert_close(maps, reference[name], msg=f"{name}, output_key={key!r}")
        # CAM reads the classifier's weights, never the output: it needs no key
        torch.testing.assert_close(cam(model, x, target), cam(base, x, target))
    with pytest.raises(
        ValueError,
        match=r"got a tuple of 2 values \(shape \(2, 10\), shape \(2, 16, 8, 8\)\); "
        r"pass `output_key=`",
    ):
        saliency(TupleOut(base), x, 1)
    with pytest.raises(
        ValueError, match=r"dict with keys 'features', 'logits'; pass `output_key=`"
    ):
        grad_cam(DictOut(base), x, 1, "net.features.6")
    with pytest.raises(
        ValueError,
        match=r"`output_key='logit'`: the model's output has no such key "
        r"\(keys: 'features', 'logits'\)",
    ):
        occlusion(DictOut(base), x, 1, output_key="logit")
    with pytest.raises(
        ValueError, match=r"`output_key=1` selects a tensor of shape \(2, 16, 8, 8\)"
    ):
        saliency(TupleOut(base), x, 1, output_key=1)
    with pytest.raises(ValueError, match=r"`output_key=2` is out of range"):
        saliency(TupleOut(base), x, 1, output_key=2)
    with pytest.raises(
        ValueError,
        match=r"`output_key=0` needs a model returning a tuple or list, but it returned a dict",
    ):
        saliency(DictOut(base), x, 1, output_key=0)
    with pytest.raises(TypeError, match="`output_key` must be None"):
        saliency(base, x, 1, output_key=1.5)  # type: ignore[arg-type]


def test_numpy_integer_targets_are_class_indices() -> None:
    model, x = small_cnn(), digits(2)
    expected = saliency(model, x, [3, 3])
    for target in (np.int64(3), np.array(3), [np.int32(3), np.int64(3)], np.array([3, 3])):
        torch.testing.assert_close(saliency(model, x, target), expected)  # type: ignore[arg-type]
    for bad in (np.float64(3.0), np.array([3.0, 1.0]), np.bool_(True), [True, False], "3"):
        with pytest.raises(TypeError, match="class ind"):
            saliency(model, x, bad)  # type: ignore[arg-type]


def test_overlay_blends_a_per_image_heatmap_over_grayscale_images() -> None:
    images = torch.linspace(-3, 5, SIZE * SIZE).reshape(1, 1, SIZE, SIZE).repeat(2, 1, 1, 1)
    maps = torch.zeros(2, SIZE, SIZE)
    maps[0, 3, 4] = 5.0
    maps[1, 10, 2] = 0.01  # another scale: normalized per image
    maps[1, 0, 0] = -7.0  # negative evidence is not coloured
    out = overlay(images, maps, cmap="jet", alpha=0.5)
    assert out.shape == (2, 3, SIZE, SIZE)
    assert out.min() >= 0 and out.max() <= 1
    grey = (images[0, 0] - images.min()) / (images.max() - images.min())
    jet = matplotlib.colormaps["jet"]
    hottest, coldest = (
        torch.tensor(jet(v)[:3], dtype=torch.float32) for v in (1.0, 0.0)
    )  # dark red, dark blue
    for i, (r, c) in enumerate([(3, 4), (10, 2)]):
        torch.testing.assert_close(
            out[i, :, r, c], 0.5 * grey[r, c] + 0.5 * hottest, atol=0.005, rtol=0
        )
        torch.testing.assert_close(
            out[i, :, 0, 0], 0.5 * grey[0, 0] + 0.5 * coldest, atol=0.005, rtol=0
        )
    inferno = overlay(images, maps, cmap="inferno", alpha=1.0)
    torch.testing.assert_close(
        inferno[0, :, 3, 4],
        torch.tensor(matplotlib.colormaps["inferno"](1.0)[:3], dtype=torch.float32),
        atol=0.005,
        rtol=0,
    )
    with pytest.raises(ValueError, match="not a matplotlib colormap"):
        overlay(images, maps, cmap="nope")
    with pytest.raises(ValueError, match="matching images"):
        overlay(images, maps[:, :8])


def test_core_module_imports_only_torch_and_the_core() -> None:
    """No Lightning or logging back-end: the module imports torch, stdlib and featurewatch.core only
    (tests/core/test_hygiene.py checks that importing featurewatch.core loads no Lightning)."""
    import featurewatch.core.attribution as module

    tree = ast.parse(Path(module.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    roots = {name.split(".")[0] for name in imported}
    assert roots <= {
        "__future__",
        "operator",
        "collections",
        "contextlib",
        "typing",
        "torch",
        "matplotlib",
        "featurewatch",
    }
    assert all(
        name.startswith("featurewatch.core.")
        for name in imported
        if name.startswith("featurewatch")
    )


def test_the_cam_layer_is_found_when_the_first_image_gives_nan() -> None:
    """The search runs ``x[:1]``: a NaN there made the match tolerance NaN (issue 11)."""

    torch.manual_seed(0)
    model = SmallCNN(width=4).eval()
    x = torch.randn(2, 1, 12, 12)
    x[0, 0, 3, 3] = float("nan")  # one corrupt pixel: every map of image 0 is partly NaN
    assert torch.isnan(model(x[:1])).all()
    assert find_cam_layer(model, x) == find_cam_layer(model, x[1:]) == "features.6"
