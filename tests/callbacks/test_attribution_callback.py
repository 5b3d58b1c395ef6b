"""AttributionMaps in a real Trainer: keys, steps, pictures read back from disk, early errors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from featurewatch import FeatureWatchWarning
from featurewatch.callbacks.attribution import AttributionMaps, _empty_note, _uniform_note
from featurewatch.core.advice import layer_advice, uniform_maps
from featurewatch.core.attribution import cam, grad_cam, occlusion, overlay, saliency
from featurewatch.core.hygiene import in_isolation, isolated
from featurewatch.core.images import grid, scale_each, to_uint8
from featurewatch.core.labels import colour_bar
from tests._models import LitClassifier, SmallCNN, digits_loaders
from tests.callbacks.conftest import hooks_left, make_trainer
from tests.callbacks.test_activation_grid import NaNNet, magenta, nan_probe
from tests.core.test_attribution import TinyConvNeXt  # the core tests' ConvNeXt in miniature

ALL = ("saliency", "smoothgrad", "occlusion", "gradcam", "cam")


def fit(
    root: Path, cb: AttributionMaps, model: LitClassifier, **trainer: Any
) -> list[dict[str, Any]]:
    pl.seed_everything(0, verbose=False)
    train, val = digits_loaders(n=64, size=16, batch_size=32)  # 2 optimizer steps per epoch
    make_trainer(root, [cb], limit_val_batches=1, **trainer).fit(model, train, val)
    lines = (root / "featurewatch_logs" / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def png(root: Path, record: dict[str, Any]) -> np.ndarray:
    with Image.open(root / "featurewatch_logs" / record["path"]) as im:
        return np.asarray(im.convert("RGB"))


def expected_maps(model: nn.Module, probe: torch.Tensor, method: str) -> torch.Tensor:
    """The maps the callback should log, from the core functions with the settings spelled out:
    predicted classes, SmoothGrad with 4 copies and seed 0, occlusion's default window, Grad-CAM
    and CAM at the map pooled into the classifier."""
    with isolated(model), torch.no_grad():
        t = model(probe).argmax(1)
    if method == "saliency":
        return saliency(model, probe, t)
    if method == "smoothgrad":
        gen = torch.Generator().manual_seed(0)
        return saliency(model, probe, t, smooth=4, noise=0.15, generator=gen)
    if method == "occlusion":
        return occlusion(model, probe, t, output="probability")
    if method == "gradcam":
        return grad_cam(model, probe, t, "net.features.6")
    return cam(model, probe, t, "net.features.6", "net.fc")


def expected_png(probe: torch.Tensor, maps: torch.Tensor, factor: int = 4) -> np.ndarray:
    """Probes on top, overlays below, enlarged by ``factor``, 2 px padding: the logged picture."""
    grey = scale_each(probe).expand(-1, 3, -1, -1)
    tiles = F.interpolate(torch.cat([grey, overlay(probe, maps)]), scale_factor=factor)
    return to_uint8(grid(tiles, nrow=probe.shape[0], padding=2, pad_value=1.0)).astype(int)


def bar_of(height: int) -> np.ndarray:
    """The colour bar the logged picture ends with: jet, 0..1, the unit of a per-map scale."""
    return to_uint8(colour_bar("jet", 0.0, 1.0, height=height, unit="fraction of map's max"))


def caption_peaks(caption: str) -> tuple[str, list[float]]:
    """The unit and the per-image max |map| values a caption states."""
    match = re.search(r"max \|map\| per image, in ([a-z ]+): ((?:#\d+ [-+.e\d]+(?:, )?)+)", caption)
    assert match, caption
    values = [float(v.split(" ")[1]) for v in match.group(2).split(", ")]
    return match.group(1), values


def test_every_method_is_logged_at_the_scheduled_steps(tmp_path: Path) -> None:
    model = LitClassifier(SmallCNN())
    cb = AttributionMaps(
        ALL,
        num_images=3,
        smooth_samples=4,
        every_n_epochs=None,
        every_n_train_steps=2,
        at_start=True,
    )
    recs = fit(tmp_path, cb, model, max_epochs=2)
    images = [r for r in recs if r["kind"] == "image"]
    # at start (step 0), after steps 2 and 4; the run's end is step 4 again, not logged twice
    assert sorted((r["key"], r["step"]) for r in images) == sorted(
        (f"featurewatch/attribution/{m}", s) for m in ALL for s in (0, 2, 4)
    )
    seconds = [r for r in recs if r["key"] == "featurewatch/attribution/seconds"]
    assert [r["step"] for r in seconds] == [0, 2, 4]
    assert not [r for r in recs if r["kind"] == "text"]  # no failure was reported
    captions = {r["key"]: r["caption"] for r in images if r["step"] == 4}
    # Grad-CAM's default is the pooled map too (after BN and ReLU), not the last conv
    assert "Grad-CAM (layer net.features.6)" in captions["featurewatch/attribution/gradcam"]
    assert (
        "CAM (layer net.features.6)" in captions["featurewatch/attribution/cam"]
    )  # the pooled map
    assert "4 noisy copies" in captions["featurewatch/attribution/smoothgrad"]
    for caption in captions.values():
        assert "epoch 1, step 4" in caption and "3 probe images (top)" in caption
        for i in range(3):  # target = predicted class
            part = caption.split(f"#{i}: target ")[1]
            target, rest = part.split(", predicted ", 1)
            assert rest.startswith(target + " (p=")
    bar = bar_of(2 * 64 + 3 * 2)
    for r in images:
        pixels = png(tmp_path, r)
        # 3 tiles per row, 16 px probes enlarged 4x to 64 px, 2 px padding; then the colour bar
        assert pixels.shape == (2 * 64 + 3 * 2, 3 * 64 + 4 * 2 + bar.shape[1], 3)
        assert np.array_equal(pixels[:, 3 * 64 + 4 * 2 :], bar)
        dark = pixels[:, -bar.shape[1] + 20 :].min(axis=-1) < 128
        assert dark.sum() > 100  # ticks, their values and the unit are drawn
        top = pixels[2:66, : 3 * 64 + 4 * 2].astype(int)
        assert (top[..., 0] == top[..., 2]).all(), "the probe images are grey digits"
    assert hooks_left(model) == []
    _, val = digits_loaders(n=64, size=16, batch_size=32)
    probe = cb.state_dict()["probe"]
    assert torch.equal(probe, next(iter(val))[0][:3])  # first validation images
    # The pictures of the last step, recomputed from the trained model with the core functions
    # (the step-4 call ran after the last optimizer step: the model is as it was then).
    for method in ALL:
        record = next(r for r in images if r["step"] == 4 and r["key"].endswith("/" + method))
        maps = expected_maps(model, probe, method)
        pixels = png(tmp_path, record).astype(int)[:, : 3 * 64 + 4 * 2]  # left of the bar
        assert np.abs(pixels - expected_png(probe, maps)).max() <= 1, method
        # independently of that oracle: each map's hottest pixel is red (jet's top) in the PNG;
        # an all-zero map would be blue there (jet(0) blended 50%: B - R = 64)
        hot = 0
        for i, m in enumerate(maps):
            if m.max() <= 0:
                continue  # no positive evidence: a uniform tile (the caption says so)
            r, c = divmod(int(m.argmax()), m.shape[1])
            y, x = 68 + 4 * r, 2 + i * 66 + 4 * c
            assert pixels[y, x, 0] - pixels[y, x, 2] >= 50, (method, i, pixels[y, x])
            hot += 1
        assert hot >= 2, method
        # the per-image scale is in the caption: the colours are per image, the numbers are not
        unit, peaks = caption_peaks(record["caption"])
        assert unit == {"occlusion": "probability drop", "gradcam": "logit", "cam": "logit"}.get(
            method, "logit per input unit"
        )
        torch.testing.assert_close(
            torch.tensor(peaks), maps.abs().flatten(1).amax(1).float(), rtol=6e-3, atol=0
        )


def test_fixed_probe_and_targets(tmp_path: Path) -> None:
    probe = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    cb = AttributionMaps(
        ["occlusion", "gradcam"], probe, target=[3, 7], window=4, stride=2, occlusion_output="logit"
    )
    model = LitClassifier(SmallCNN())
    recs = fit(tmp_path, cb, model, max_epochs=1)
    images = [r for r in recs if r["kind"] == "image"]
    assert sorted(r["key"] for r in images) == [
        "featurewatch/attribution/gradcam",
        "featurewatch/attribution/occlusion",
    ]
    assert {r["step"] for r in images} == {2}  # end of epoch 0 = end of training
    for r in images:
        assert (
            "#0: target 3, predicted" in r["caption"] and "#1: target 7, predicted" in r["caption"]
        )
        bar = bar_of(2 * 64 + 3 * 2)
        assert png(tmp_path, r).shape == (2 * 64 + 3 * 2, 2 * 64 + 3 * 2 + bar.shape[1], 3)
    caption = next(r["caption"] for r in images if r["key"].endswith("occlusion"))
    assert "drop of the logit when a window is set to 0" in caption
    unit, peaks = caption_peaks(caption)
    assert unit == "logit drop"
    logit = occlusion(model, probe, [3, 7], window=4, stride=2, output="logit")
    prob = occlusion(model, probe, [3, 7], window=4, stride=2, output="probability")
    assert not torch.allclose(logit.abs().amax((1, 2)), prob.abs().amax((1, 2)), rtol=0.05)
    torch.testing.assert_close(torch.tensor(peaks), logit.abs().amax((1, 2)), rtol=6e-3, atol=0)
    resumed = AttributionMaps(["occlusion", "gradcam"], target=[3, 7], num_images=2)
    resumed.load_state_dict(cb.state_dict())
    assert torch.equal(resumed._probe.get(), probe)


def test_caption_says_when_a_map_has_no_positive_evidence() -> None:
    maps = torch.zeros(3, 4, 4)
    maps[0, 1, 1] = 0.5
    maps[2] = -1.0
    assert (
        _empty_note(maps)
        == "; no positive evidence for the target in image(s) #1, #2 (uniform tile)"
    )
    assert _empty_note(maps[:1]) == ""


def test_caption_says_when_a_map_is_uniform() -> None:
    """A layer whose map is 1 x 1 gives one value per image: no location."""
    one = F.interpolate(torch.tensor([0.3, 2.0, -1.0]).reshape(3, 1, 1, 1), size=(16, 16))[:, 0]
    assert uniform_maps(one) == uniform_maps(one.bfloat16()) == [0, 1]  # #2: no evidence
    assert uniform_maps(torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(0))) == []
    assert _uniform_note([0, 1], "why") == (
        "; the map of image(s) #0, #1 is uniform: it shows no location (why)"
    )
    assert _uniform_note([], "why") == ""


def test_uniform_map_advice_is_checked_on_the_model_not_guessed() -> None:
    """The caption advises a larger input only when the layer's map is 1 x 1 *because* the input is
    small; a module after the global pool (ConvNeXt's LayerNorm2d) is 1 x 1 at every size."""
    model = TinyConvNeXt().eval()
    x = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    with isolated(model):
        after_pool = layer_advice(model, x, "classifier.0")
        small = layer_advice(model, x[..., :4, :4], "features")
        pool = layer_advice(model, x, "avgpool")
    assert "use a larger input" not in after_pool + pool
    assert after_pool == (
        "layer 'classifier.0' outputs a 1x1 map at this 16x16 input and still at 256x256 (it works "
        "on the pooled vector), so a larger input will not help; pass `layer=` naming a feature "
        "map computed before the global pool, e.g. 'features' (the default Grad-CAM layer)"
    )
    assert small == (
        "layer 'features''s feature map is 1x1 at this 4x4 input (32x32 at 256x256); use a larger "
        "input, or pass `layer=` naming an earlier layer with a larger map"
    )
    assert pool.startswith("layer 'avgpool' outputs a 1x1 map at this 16x16 input and still at")


def test_convnext_like_model_gradcam_shows_a_location_and_cam_is_refused_at_setup(
    tmp_path: Path,
) -> None:
    model = LitClassifier(TinyConvNeXt(classes=10))
    recs = fit(tmp_path, AttributionMaps("gradcam", num_images=2), model, max_epochs=1)
    assert not [r for r in recs if r["kind"] == "text"], "no failure"
    (caption,) = [r["caption"] for r in recs if r["kind"] == "image"]
    assert "Grad-CAM (layer net.features)" in caption  # not net.classifier.0, after the pool
    assert "uniform" not in caption
    assert hooks_left(model) == []
    # naming the LayerNorm2d after the pool: uniform maps, and the caption says what helps
    cb = AttributionMaps("gradcam", num_images=2, layer="net.classifier.0")
    recs = fit(tmp_path / "b", cb, LitClassifier(TinyConvNeXt(classes=10)), max_epochs=1)
    (caption,) = [r["caption"] for r in recs if r["kind"] == "image"]
    advice = caption.partition("is uniform: it shows no location (")[2]
    assert advice.startswith("layer 'net.classifier.0' outputs a 1x1 map at this 16x16 input and ")
    assert "use a larger input" not in advice  # the old, false advice
    assert "larger input will not help; pass `layer=`" in advice and "'net.features'" in advice
    # CAM is undefined (a LayerNorm2d between the pool and the Linear): refused before training
    with pytest.raises(
        ValueError,
        match=r"AttributionMaps: CAM needs .* applies net\.classifier\.0 \(LayerNorm2d\) between "
        r"the global pool 'net\.avgpool' and the classifier.*use 'gradcam'",
    ):
        fit(tmp_path / "c", AttributionMaps("cam"), LitClassifier(TinyConvNeXt(classes=10)))


def test_bad_arguments_fail_in_init_listing_what_is_valid() -> None:
    with pytest.raises(
        ValueError,
        match=r"unknown attribution method 'gradient'.*"
        r"'saliency', 'smoothgrad', 'occlusion', 'gradcam', 'cam'",
    ):
        AttributionMaps(["saliency", "gradient"])
    with pytest.raises(ValueError, match="at least one"):
        AttributionMaps([])
    with pytest.raises(ValueError, match="'predicted', a class index.*probe images have no labels"):
        AttributionMaps(target="label")
    with pytest.raises(ValueError, match="`target` gives 3 classes for 4 probe images"):
        AttributionMaps(target=[1, 2, 3])
    with pytest.raises(ValueError, match="`cmap`"):
        AttributionMaps(cmap="rainbowz")
    with pytest.raises(ValueError, match="`window`"):
        AttributionMaps(window=0)
    with pytest.raises(ValueError, match="either `every_n_epochs` or `every_n_train_steps`"):
        AttributionMaps(every_n_train_steps=5)
    with pytest.raises(ValueError, match="`occlusion_output` must be 'probability' or 'logit'"):
        AttributionMaps(occlusion_output="prob")
    with pytest.raises(TypeError, match="`output_key` must be None"):
        AttributionMaps(output_key=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="integer class indices"):
        AttributionMaps(target=torch.tensor([1.0, 2.0]))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got float64"):
        AttributionMaps(target=np.float64(3.0))  # type: ignore[arg-type]


def test_targets_like_the_core_and_distinct_state_keys() -> None:
    for given, kept in [
        (np.int64(3), 3),
        (torch.tensor(3), 3),
        (torch.tensor([1, 2, 3, 4]), [1, 2, 3, 4]),
        ([np.int64(1)] * 4, [1, 1, 1, 1]),
        (np.array([5, 6, 7, 8]), [5, 6, 7, 8]),
    ]:
        cb = AttributionMaps(target=given)  # type: ignore[arg-type]
        assert cb.target == kept and type(cb.target) is type(kept), given
        assert all(type(v) is int for v in cb.target) if isinstance(kept, list) else True
    # two instances that differ only by target keep separate state in a checkpoint; the default
    # target keeps the key of earlier versions, under which Lightning looks for the state of
    # checkpoints written by them (tests/callbacks/test_identity.py resumes from one)
    keys = {AttributionMaps("saliency", target=t).state_key for t in ("predicted", 1, 2)}
    assert len(keys) == 3
    assert (
        AttributionMaps("saliency")._legacy_state_key
        == "AttributionMaps{'methods': ['saliency'], 'layer': None}"
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"layer": "net.features.60"},
            ValueError,
            r"'net\.features\.60' not found.*did you mean 'net\.features\.6'",
        ),
        (
            {"target": 10},
            ValueError,
            r"target class 10 out of range; the model outputs 10 scores \(valid: 0\.\.9\)",
        ),
        (
            {"methods": "gradcam", "layer": "net.fc"},
            ValueError,
            r"outputs shape \(1, 10\); pass `layer=` naming a conv",
        ),
        (
            {"methods": "cam", "layer": "net.features.0"},
            ValueError,
            r"8 channels but classifier 'net\.fc' takes 16.*'gradcam'",
        ),
        (
            {"methods": "cam", "layer": "net.features.4"},
            ValueError,
            r"use layer='net\.features\.6' for CAM, or 'gradcam'",
        ),
        ({"methods": "cam", "classifier": "net.features.4"}, TypeError, r"must name an nn\.Linear"),
        (
            {"methods": "cam", "layer": "net.features.0", "classifier": "net.fc"},
            ValueError,
            r"`layer=` sets the layer of both Grad-CAM and CAM",
        ),
        (
            {"methods": "occlusion", "window": 17},
            ValueError,
            r"`window` \(17, 17\) is larger than the images \(16, 16\)",
        ),
    ],
)
def test_bad_configuration_fails_before_the_first_training_step(
    tmp_path: Path, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    model = LitClassifier(SmallCNN())
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(error, match=message):
        fit(tmp_path, AttributionMaps(**kwargs), model, max_epochs=1)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())), "training started"
    assert hooks_left(model) == []


class AuxNet(SmallCNN):
    """SmallCNN plus an auxiliary head registered *last* and called only in training (GoogLeNet's
    aux classifiers): its conv is the last one registered, its linear the last linear."""

    def __init__(self) -> None:
        super().__init__()
        self.aux = nn.Sequential(
            nn.Conv2d(16, 4, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        out = self.fc(self.pool(f).flatten(1))
        return out + self.aux(f) if self.training else out


def test_default_gradcam_layer_is_resolved_in_forward_order_at_the_first_batch(
    tmp_path: Path,
) -> None:
    model = LitClassifier(AuxNet())
    recs = fit(tmp_path, AttributionMaps("gradcam", num_images=2), model, max_epochs=1)
    assert not [r for r in recs if r["kind"] == "text"], "no failure"
    (image,) = [r for r in recs if r["kind"] == "image"]
    # not 'net.aux.0' (registered last, never called in eval): the last spatial map of the forward
    # pass (the default classifier, 'net.aux.4', is not called either, so no CAM layer is found)
    assert "Grad-CAM (layer net.features)" in image["caption"]
    # a layer the eval forward pass never calls is refused before training, saying what to do
    with pytest.raises(
        ValueError,
        match=r"'net\.aux\.0' is not called in the eval-mode forward pass.*pass `layer=`",
    ):
        fit(
            tmp_path / "b",
            AttributionMaps("gradcam", layer="net.aux.0"),
            LitClassifier(AuxNet()),
            max_epochs=1,
        )


class ExplodesOnBigBatches(SmallCNN):
    """Fails like an out-of-memory error on featurewatch's batches of more than 8 images."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if in_isolation() and x.shape[0] > 8:
            raise RuntimeError("CUDA out of memory (simulated)")
        return super().forward(x)


def test_a_failing_method_is_reported_and_the_others_are_still_logged(tmp_path: Path) -> None:
    # occlusion evaluates 2 x 49 occluded copies, 64 per forward pass: it fails; the others do not
    cb = AttributionMaps(("saliency", "occlusion", "gradcam"), num_images=2)
    with pytest.warns(
        FeatureWatchWarning,
        match=r"AttributionMaps: method 'occlusion' failed at step 2: "
        r"RuntimeError: CUDA out of memory",
    ):
        recs = fit(tmp_path, cb, LitClassifier(ExplodesOnBigBatches()), max_epochs=1)
    assert sorted(r["key"] for r in recs if r["kind"] == "image") == [
        "featurewatch/attribution/gradcam",
        "featurewatch/attribution/saliency",
    ]
    (text,) = [r for r in recs if r["kind"] == "text"]
    assert text["key"] == "featurewatch/attribution/occlusion/error" and text["step"] == 2
    assert "out of memory" in text["value"] and "Traceback" in text["value"]
    assert cb.calls == 1 and cb.failures == 1  # the call is counted as failed
    strict = AttributionMaps(("saliency", "occlusion"), num_images=2, strict=True)
    with pytest.raises(RuntimeError, match="out of memory"):
        fit(tmp_path / "strict", strict, LitClassifier(ExplodesOnBigBatches()), max_epochs=1)


class LitTuple(LitClassifier):
    """A LightningModule whose forward returns ``(logits, features)``."""

    def forward(self, x: torch.Tensor) -> Any:
        features = self.net.features(x)
        return self.net.fc(self.net.pool(features).flatten(1)), features

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        x, y = batch
        return F.cross_entropy(self(x)[0], y)

    def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        pass


class LitDict(LitTuple):
    """... and one returning ``{"logits": ..., "features": ...}``."""

    def forward(self, x: torch.Tensor) -> Any:
        logits, features = super().forward(x)
        return {"features": features, "logits": logits}

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        x, y = batch
        return F.cross_entropy(self(x)["logits"], y)


@pytest.mark.parametrize(
    ("module", "key", "wrong"), [(LitTuple, 0, 1), (LitDict, "logits", "features")]
)
def test_models_returning_tuples_or_dicts_select_their_logits(
    tmp_path: Path, module: type[LitClassifier], key: int | str, wrong: int | str
) -> None:
    methods = ("saliency", "occlusion", "gradcam", "cam")
    cb = AttributionMaps(methods, num_images=2, window=8, output_key=key)
    recs = fit(tmp_path, cb, module(SmallCNN()), max_epochs=1)
    assert not [r for r in recs if r["kind"] == "text"], "no failure"
    assert sorted(r["key"] for r in recs if r["kind"] == "image") == sorted(
        f"featurewatch/attribution/{m}" for m in methods
    )
    # without `output_key`: refused before the first training step, saying what to pass
    model = module(SmallCNN())
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(
        ValueError, match=r"AttributionMaps: .*\(N, classes\) scores.*pass `output_key=`"
    ):
        fit(tmp_path / "b", AttributionMaps(methods, num_images=2), model, max_epochs=1)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())), "training started"
    with pytest.raises(
        ValueError, match=r"`output_key=.*` selects a tensor of shape \(1, 16, 8, 8\)"
    ):
        fit(
            tmp_path / "c",
            AttributionMaps(methods, output_key=wrong),
            module(SmallCNN()),
            max_epochs=1,
        )


def test_cam_and_gradcam_work_on_a_bf16_model(tmp_path: Path) -> None:
    """bf16 pooling rounds (relative error ~4e-3): the pooled map must still be found at setup."""
    cb = AttributionMaps(("gradcam", "cam"), num_images=2)
    recs = fit(tmp_path, cb, LitClassifier(SmallCNN()), max_epochs=1, precision="bf16-true")
    assert not [r for r in recs if r["kind"] == "text"], "no failure"
    captions = {r["key"]: r["caption"] for r in recs if r["kind"] == "image"}
    assert "CAM (layer net.features.6)" in captions["featurewatch/attribution/cam"]
    assert "Grad-CAM (layer net.features.6)" in captions["featurewatch/attribution/gradcam"]


def test_nan_maps_are_magenta_where_they_are_nan_and_the_rest_is_logged(tmp_path: Path) -> None:
    # NaNNet: NaN in a 2 x 2 patch after the second conv for the marked probe image #1 only, so its
    # logits, its occlusion map and its Grad-CAM / CAM maps (in part) are NaN; image #0 is healthy
    model = LitClassifier(NaNNet())
    probe = nan_probe()
    cb = AttributionMaps(ALL, probe=probe, smooth_samples=4)
    recs = fit(tmp_path, cb, model, max_epochs=1)
    assert not [r for r in recs if r["kind"] == "text"], "no method failed"
    images = {r["key"].rsplit("/", 1)[1]: r for r in recs if r["kind"] == "image"}
    assert sorted(images) == sorted(ALL)
    nan_pixels = {}
    for method in ALL:
        maps = expected_maps(model, probe, method)
        bad = ~torch.isfinite(maps)
        assert not bad[0].any()  # the healthy image's map is finite
        pixels = png(tmp_path, images[method]).astype(int)
        assert np.array_equal(pixels[:, 2 * 66 + 2 :], bar_of(134))  # the colour bar at the right
        pixels = pixels[:, : 2 * 66 + 2]
        assert np.abs(pixels - expected_png(probe, maps)).max() <= 1, method
        # independently of that oracle: magenta exactly where the map is NaN (4x enlarged tiles)
        bottom = pixels[68:132]
        for i in range(2):
            tile = magenta(bottom[:, 2 + 66 * i : 66 + 66 * i])
            expected = bad[i].repeat_interleave(4, 0).repeat_interleave(4, 1).numpy()
            assert (tile == expected).all(), (method, i)
        assert not magenta(pixels[2:66]).any()  # the probe images themselves
        nan_pixels[method] = int(bad[1].sum())
        caption = images[method]["caption"]
        n = nan_pixels[method]
        if n:
            assert f"; non-finite values (NaN/Inf, shown magenta): map #1 {n} of 256" in caption
        else:
            assert "non-finite" not in caption
        assert "p=nan" in caption.split("#1: target ")[1]
    # occlusion measures the NaN probability: all NaN; Grad-CAM and CAM: the patch, upsampled
    assert nan_pixels["occlusion"] == 256
    assert 0 < nan_pixels["gradcam"] < 256 and 0 < nan_pixels["cam"] < 256
