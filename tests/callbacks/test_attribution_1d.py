"""AttributionMaps beyond 2-D CNNs (issue 14): a 1-D ``Conv1d`` net over signals, a tabular MLP
over feature vectors and a small vision transformer's token layers, each in a real Lightning run on
scikit-learn's digits, read back from the files sink (``events.jsonl`` and the PNGs), with the
logged numbers checked against the core functions on the same probe and against Captum.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import featurewatch as fw
from featurewatch.callbacks._probe import ProbeImages
from featurewatch.core.attribution import grad_cam, occlusion, saliency
from tests._models import digits_loaders
from tests.callbacks.conftest import hooks_left
from tests.callbacks.test_breadth_runs import (
    BLOCK,
    SignalNet,
    digit_signals,
    fit,
    png,
    records,
    small_vit,
)


def caption_peaks(caption: str) -> tuple[str, list[float]]:
    """The unit and the per-input maxima the caption states."""
    match = re.search(r"max \|map\| per image, in ([a-z ]+): ((?:#\d+ [-+.e\d]+(?:, )?)+)", caption)
    assert match, caption
    return match.group(1), [float(v.split(" ")[1]) for v in match.group(2).split(", ")]


def predicted(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return copy.deepcopy(model).eval()(x).argmax(1)


def core_maps(model: nn.Module, x: torch.Tensor, method: str, **kw) -> torch.Tensor:
    t = predicted(model, x)
    if method == "saliency":
        return saliency(model, x, t)
    if method == "smoothgrad":
        gen = torch.Generator().manual_seed(0)
        return saliency(model, x, t, smooth=2, noise=0.15, generator=gen)
    if method == "occlusion":
        return occlusion(model, x, t)
    return grad_cam(model, x, t, kw["layer"], grid=kw.get("grid"))


def assert_peaks_match(record: dict, maps: torch.Tensor) -> None:
    _, peaks = caption_peaks(record["caption"])
    expected = maps.abs().flatten(1).amax(1).float()
    torch.testing.assert_close(torch.tensor(peaks), expected, rtol=6e-3, atol=1e-12)


def images_by_key(root: Path) -> dict[str, dict]:
    recs = records(root)
    assert not [r for r in recs if r["kind"] == "text"], [r["value"][:300] for r in recs]
    return {r["key"]: r for r in recs if r["kind"] == "image"}


def captum_saliency(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    from captum.attr import Saliency

    net = copy.deepcopy(model).eval()
    grads = Saliency(net).attribute(x.clone(), target=predicted(model, x), abs=True)
    return grads if x.dim() == 2 else grads.amax(1)


# ---------------------------------------------------------------------------------- 1-D net
SIGNAL_METHODS = ("saliency", "smoothgrad", "occlusion", "gradcam")


def test_a_1d_net_logs_every_method_as_waveforms_with_their_maps(tmp_path: Path) -> None:
    cb = fw.AttributionMaps(SIGNAL_METHODS, num_images=3, smooth_samples=2, layer="net.features.4")
    default = fw.AttributionMaps("gradcam", num_images=2, name="default_layer")
    trainer = fit(tmp_path, SignalNet(), digit_signals(n=64), [cb, default])
    model = trainer.lightning_module
    images = images_by_key(tmp_path)
    probe = cb._probe.fixed
    assert probe is not None and probe.shape == (3, 1, 64)
    for method in SIGNAL_METHODS:
        record = images[f"featurewatch/attribution/{method}"]
        assert record["step"] == trainer.global_step
        caption = record["caption"]
        assert "3 probe signals: each one's waveform (top) and its map below it" in caption
        assert "#2: target " in caption and ", predicted " in caption
        maps = core_maps(model, probe, method, layer="net.features.4")
        assert maps.shape == (3, 64)
        assert_peaks_match(record, maps)
        pixels = png(tmp_path, record).astype(int)
        assert pixels.shape[1] > 2 * pixels.shape[0] > 500  # three panels side by side
        blue = (np.abs(pixels - [31, 119, 180]).sum(-1) < 40).sum()  # the waveform, C0
        red = ((pixels[..., 0] > 180) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)).sum()
        assert blue > 300 and red > 50, (method, blue, red)  # a waveform and jet's hot end
    unit, _ = caption_peaks(images["featurewatch/attribution/occlusion"]["caption"])
    assert unit == "probability drop"
    assert (
        "Grad-CAM (layer net.features.4)" in images["featurewatch/attribution/gradcam"]["caption"]
    )
    # without `layer=`, Grad-CAM reads the net's last (N, C, l) map, found in forward order
    assert "(layer net.features)" in images["featurewatch/default_layer/gradcam"]["caption"]
    # saliency agrees with Captum's on the same probe and model (max over the input channels)
    torch.testing.assert_close(
        saliency(model, probe, predicted(model, probe)), captum_saliency(model, probe)
    )
    assert hooks_left(model) == []


def test_a_probe_tensor_of_signals_is_n_signals_on_a_1d_net(tmp_path: Path) -> None:
    signals = next(iter(digit_signals(n=64)[1]))[0][:5]  # (5, 1, 64): 5 signals, not one image
    cb = fw.AttributionMaps("occlusion", probe=signals, target=[0, 1, 2, 3, 4], window=8)
    trainer = fit(tmp_path, SignalNet(), digit_signals(n=64), [cb])
    record = images_by_key(tmp_path)["featurewatch/attribution/occlusion"]
    assert "5 probe signals" in record["caption"]
    assert all(f"#{i}: target {i}, predicted" in record["caption"] for i in range(5))
    assert torch.equal(cb._probe.fixed, signals)
    model = trainer.lightning_module
    assert_peaks_match(record, occlusion(model, signals, torch.arange(5), window=8))


def test_a_3d_probe_stays_one_image_for_an_image_model() -> None:
    image = torch.rand(1, 16, 16)
    probe = ProbeImages(image, 4)
    probe.check_input("AttributionMaps", torch.rand(8, 1, 16, 16))
    assert probe.fixed is not None and probe.fixed.shape == (1, 1, 16, 16)
    signals = ProbeImages(torch.rand(3, 2, 50), 4)
    signals.check_input("AttributionMaps", torch.rand(8, 2, 50))
    assert signals.fixed is not None and signals.fixed.shape == (3, 2, 50)
    with pytest.raises(ValueError, match=r"inputs are \(8, 1, 50\).*pass signals with 1 channels"):
        ProbeImages(torch.rand(3, 2, 50), 4).check_input("X", torch.rand(8, 1, 50))
    # at setup, a 3-D probe that no Conv1d (nor Conv2d) of the model takes is refused
    with pytest.raises(
        ValueError, match=r"has 2 channels \(shape \(3, 2, 50\)\).*1-channel signals"
    ):
        ProbeImages(torch.rand(3, 2, 50), 4).check_model("X", SignalNet())
    ProbeImages(torch.rand(3, 1, 50), 4).check_model("X", SignalNet())  # fits: no error


def test_a_saved_probe_of_signals_or_rows_is_loaded_at_the_inputs_rank(tmp_path: Path) -> None:
    torch.save(torch.rand(6, 1, 64), tmp_path / "signals.pt")
    probe = ProbeImages(str(tmp_path / "signals.pt"), 4)
    probe.resolve_path(torch.rand(8, 1, 64))
    assert probe.fixed is not None and probe.fixed.shape == (4, 1, 64)
    with pytest.raises(ValueError, match=r"must be a \.pt file holding a tensor of shape"):
        ProbeImages(str(tmp_path / "signals.pt"), 4).resolve_path(torch.rand(8, 64))


# ---------------------------------------------------------------------------------- tabular
class DigitsMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def digit_rows(n: int = 128) -> tuple[DataLoader, DataLoader]:
    """sklearn's digits flattened: 64 pixel features per row, standardized per feature."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0).clamp_min(1e-3)
    y = torch.tensor(d.target, dtype=torch.long)
    train = DataLoader(TensorDataset(x[:n], y[:n]), batch_size=32, shuffle=True)
    return train, DataLoader(TensorDataset(x[n : n + 64], y[n : n + 64]), batch_size=32)


PIXEL_NAMES = [f"px r{r} c{c}" for r in range(8) for c in range(8)]


def test_a_tabular_model_logs_saliency_and_occlusion_as_bars_per_feature(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cb = fw.AttributionMaps(("saliency", "occlusion"), num_images=2, feature_names=PIXEL_NAMES)
    trainer = fit(tmp_path, DigitsMLP(), digit_rows(), [cb])
    model = trainer.lightning_module
    images = images_by_key(tmp_path)
    probe = cb._probe.fixed
    assert probe is not None and probe.shape == (2, 64)
    for method, unit in (("saliency", "logit per input unit"), ("occlusion", "probability drop")):
        record = images[f"featurewatch/attribution/{method}"]
        assert (
            "2 probe rows: per row the 16 of 64 features with the largest |value|"
            in (record["caption"])
        )
        assert caption_peaks(record["caption"])[0] == unit
        maps = core_maps(model, probe, method)
        assert maps.shape == (2, 64)
        assert_peaks_match(record, maps)
        pixels = png(tmp_path, record).astype(int)
        assert pixels.shape[0] > 300 and pixels.shape[1] > 500
        orange = (np.abs(pixels - [255, 127, 14]).sum(-1) < 40).sum()  # bars for the target
        assert orange > 500, (method, orange)
    # occlusion of one feature = the probability drop when that feature is set to 0 (the mean)
    t = predicted(model, probe)
    net = copy.deepcopy(model).eval()
    with torch.no_grad():
        p0 = net(probe).softmax(1)[torch.arange(2), t]
        covered = probe[:, None].repeat(1, 64, 1)
        covered[:, torch.arange(64), torch.arange(64)] = 0.0
        probs = net(covered.reshape(-1, 64)).softmax(1).reshape(2, 64, 10)
        drops = p0[:, None] - probs[torch.arange(2), :, t]  # (rows, covered feature)
    torch.testing.assert_close(occlusion(model, probe, t), drops, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(saliency(model, probe, t), captum_saliency(model, probe))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"methods": "gradcam"}, r"'gradcam' does not apply.*feature vectors \(N, F\).*'saliency'"),
        ({"methods": "saliency", "feature_names": ["a", "b"]}, r"gives 2 names for 64 features"),
    ],
)
def test_a_tabular_model_refuses_what_does_not_apply_before_training(
    tmp_path: Path, kwargs: dict, message: str
) -> None:
    model = DigitsMLP()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        fit(tmp_path, model, digit_rows(n=32), [fw.AttributionMaps(**kwargs)])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ---------------------------------------------------------------------------------- ViT
def test_gradcam_at_a_vit_token_layer_is_drawn_on_the_patch_grid(tmp_path: Path) -> None:
    layer = BLOCK.format(0)
    cb = fw.AttributionMaps("gradcam", num_images=2, layer=layer)
    given = fw.AttributionMaps("gradcam", num_images=2, layer=layer, grid=(4, 4), name="grid")
    last = fw.AttributionMaps("gradcam", num_images=2, layer=BLOCK.format(1), name="last")
    trainer = fit(tmp_path, small_vit(), digits_loaders(n=64), [cb, given, last])
    model = trainer.lightning_module
    images = images_by_key(tmp_path)
    probe = cb._probe.fixed
    assert probe is not None and probe.shape == (2, 1, 16, 16)
    maps = core_maps(model, probe, "gradcam", layer=layer)
    assert maps.shape == (2, 16, 16) and bool((maps > 0).any())
    for key in ("attribution", "grid"):
        record = images[f"featurewatch/{key}/gradcam"]
        assert f"Grad-CAM (layer {layer})" in record["caption"]
        assert "2 probe images (top) and the map over each" in record["caption"]
        assert_peaks_match(record, maps)
        assert png(tmp_path, record).shape[0] == 2 * 64 + 3 * 2  # 16 px tiles enlarged 4x
    # at the last block only the class token reaches the head: zero maps, and the caption says so
    note = images["featurewatch/last/gradcam"]["caption"]
    assert "the patch tokens get no gradient there" in note and "ln_1" in note


def test_a_grid_that_does_not_fit_the_tokens_is_refused_before_training(tmp_path: Path) -> None:
    cb = fw.AttributionMaps("gradcam", layer=BLOCK.format(0), grid=(5, 5))
    with pytest.raises(ValueError, match=r"17 tokens, which do not hold a 5 x 5 patch grid"):
        fit(tmp_path, small_vit(), digits_loaders(n=32), [cb])
