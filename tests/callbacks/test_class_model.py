"""ClassModelVisualization in a real Trainer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from PIL import Image

from featurewatch.callbacks.class_model import ClassModelVisualization
from featurewatch.core.images import to_uint8
from featurewatch.core.labels import label_font, labelled_grid
from tests._hygiene import assert_untouched, snapshot
from tests._models import LitClassifier, SmallCNN, digits_loaders
from tests.callbacks.conftest import hooks_left, make_trainer

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


class NamedClassifier(LitClassifier):
    class_names = WORDS


def labelled_cells(
    png: np.ndarray, n: int, tile: int, ncol: int, *, header: bool = True, pad: int = 2
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(strip, tile)`` pixels of each cell of a logged :func:`labelled_grid` picture, from its
    documented layout: a header line, then per cell a title strip above a ``tile`` px tile."""
    size = min(14, max(10, tile // 7))
    strip = sum(label_font(size).getmetrics()) + 2 * 3
    top = sum(label_font(size + 1, bold=True).getmetrics()) + 2 * 3 + pad if header else 0
    rows = -(-n // ncol)
    assert png.shape[0] == top + pad + rows * (strip + tile + pad), png.shape
    assert png.shape[1] >= pad + ncol * (tile + pad), png.shape
    cells = []
    for i in range(n):
        r, c = divmod(i, ncol)
        y, x = top + pad + r * (strip + tile + pad), pad + c * (tile + pad)
        cells.append(
            (png[y : y + strip, x : x + tile], png[y + strip : y + strip + tile, x : x + tile])
        )
    return cells


def strip_of(title: str | tuple[str, ...], tile: int) -> np.ndarray:
    """The title strip ``labelled_grid`` draws for ``title`` over a ``tile`` px tile, as uint8."""
    picture = labelled_grid(torch.zeros(1, 1, tile, tile), [title], pad=0, min_tile=tile)
    return to_uint8(picture[:, : picture.shape[1] - tile])


def has_text(strip: np.ndarray) -> bool:
    """Dark glyph pixels on a title strip's light grey (240), none touching its top or bottom."""
    dark = (strip.min(axis=-1) if strip.ndim == 3 else strip) < 128
    return int(dark.sum()) > 8 and not dark[0].any() and not dark[-1].any()


def fit(
    root: Path,
    cb: ClassModelVisualization,
    model: LitClassifier,
    callbacks: list[pl.Callback] | None = None,
) -> list[dict]:
    pl.seed_everything(0, verbose=False)
    train, val = digits_loaders(n=64, size=16, batch_size=32)
    make_trainer(root, callbacks or [cb], max_epochs=1, limit_val_batches=1).fit(model, train, val)
    return [
        json.loads(line)
        for line in (root / "featurewatch_logs" / "events.jsonl").read_text().splitlines()
    ]


def test_one_image_per_class_with_names_from_the_module(tmp_path: Path) -> None:
    model = NamedClassifier(SmallCNN())
    recs = fit(tmp_path, ClassModelVisualization(classes=[3, 7], steps=8), model)
    image = next(r for r in recs if r["kind"] == "image")
    assert image["key"] == "featurewatch/class_model/output"
    assert "3: three" in image["caption"] and "7: seven" in image["caption"]
    # each 16 px class image is shown at 64 px (min_size) under a strip titled "3 · three"
    png = np.asarray(Image.open(tmp_path / "featurewatch_logs" / image["path"]).convert("RGB"))
    cells = labelled_cells(png, 2, 64, 2)
    header = png[: png.shape[0] - (len(cells[0][0]) + 64 + 4)]
    assert has_text(header[2:])  # "class model · epoch 0 · step 2"
    for strip, tile in cells:
        assert has_text(strip) and (strip.max(axis=-1) == 240).mean() > 0.5  # light grey strip
        assert (tile[::4, ::4] == tile[1::4, 1::4]).all()  # nearest neighbour 4x: blocks intact
    for (strip, _), title in zip(cells, ["3 · three", "7 · seven"]):
        assert np.array_equal(strip, strip_of(title, 64)), title
        assert not np.array_equal(strip, strip_of(title.split()[0], 64))  # the name is drawn
    scalars = {r["key"]: r["value"] for r in recs if r["kind"] == "scalar"}
    assert 0.0 <= scalars["featurewatch/class_model/output/self_classified"] <= 1.0
    assert "featurewatch/class_model/output/mean_logit" in scalars
    assert hooks_left(model) == []


def test_default_renders_every_output_and_explicit_names_win(tmp_path: Path) -> None:
    cb = ClassModelVisualization(class_names=[f"digit {d}" for d in range(10)], steps=4)
    recs = fit(tmp_path, cb, NamedClassifier(SmallCNN()))
    caption = next(r["caption"] for r in recs if r["kind"] == "image")
    assert "0: digit 0" in caption and "9: digit 9" in caption and "three" not in caption


def test_bad_class_fails_at_the_first_batch(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"class 10 out of range; the model outputs 10 scores \(valid: 0\.\.9\)"
    ):
        fit(tmp_path, ClassModelVisualization(classes=[10], steps=2), LitClassifier(SmallCNN()))
    with pytest.raises(TypeError, match="`class_names`"):
        ClassModelVisualization(class_names="0123456789")


class LitDict(LitClassifier):
    """A LightningModule whose forward returns ``{"logits": ..., "aux": ...}``. ``aux`` is the
    negated logits: rendering it instead of ``logits`` would *lower* the class scores checked."""

    def forward(self, x: torch.Tensor) -> Any:
        logits = self.net(x)
        return {"logits": logits, "aux": -logits}

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        x, y = batch
        return F.cross_entropy(self(x)["logits"], y)

    def validation_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        pass


class LitTuple(LitDict):
    def forward(self, x: torch.Tensor) -> Any:
        out = super().forward(x)
        return out["logits"], out["aux"]


class Untouched(pl.Callback):
    """Placed around the callback under test: a snapshot of the model before its end-of-training
    call (``before=True``), and the check that the call changed nothing (``before=False``)."""

    def __init__(self, taken: dict[str, Any], before: bool) -> None:
        self.taken, self.before = taken, before

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.before:
            self.taken["snapshot"] = snapshot(pl_module)
        else:
            assert_untouched(pl_module, self.taken["snapshot"])
            self.taken["checked"] = True


def test_a_model_returning_a_dict_renders_the_logits_output_key_selects(tmp_path: Path) -> None:
    model = LitDict(SmallCNN())
    cb = ClassModelVisualization(
        classes=[3, 7], steps=16, min_size=16, output_key="logits", every_n_epochs=None, at_end=True
    )
    taken: dict[str, Any] = {}
    recs = fit(tmp_path, cb, model, [Untouched(taken, True), cb, Untouched(taken, False)])
    assert taken.get("checked"), "the end-of-training call was not bracketed"
    assert hooks_left(model) == []
    (image,) = [r for r in recs if r["kind"] == "image" and not r["key"].endswith("/filmstrip")]
    assert image["key"] == "featurewatch/class_model/output"
    # the logged tiles, read back from the PNG (16 x 16 under their titles), fed to the model
    with Image.open(tmp_path / "featurewatch_logs" / image["path"]) as im:
        pixels = np.asarray(im.convert("L"), dtype=np.float32) / 255
    cells = labelled_cells(pixels, 2, 16, 2)
    assert all(has_text(strip * 255) for strip, _ in cells)
    tiles = torch.stack([torch.from_numpy(np.ascontiguousarray(t)) for _, t in cells])
    assert cb._norm is not None
    mean, std = (torch.tensor(v).reshape(1, -1, 1, 1) for v in cb._norm)
    model.eval()
    with torch.no_grad():
        logits = model((tiles[:, None] - mean) / std)["logits"]
    # each image scores its own class higher than the other class's image does
    assert logits[0, 3] > logits[1, 3] and logits[1, 7] > logits[0, 7], logits[:, [3, 7]]
    # the logged score is the selected logit of the images shown (up to 8-bit rounding), not aux
    scalars = {r["key"]: r["value"] for r in recs if r["kind"] == "scalar"}
    logged = scalars["featurewatch/class_model/output/mean_logit"]
    shown = float((logits[0, 3] + logits[1, 7]) / 2)
    assert abs(logged - shown) <= 5e-3 + 0.05 * abs(shown), (logged, shown)


@pytest.mark.parametrize(
    ("module", "described"),
    [(LitDict, "a dict with keys 'logits', 'aux'"), (LitTuple, "a tuple of 2 values")],
)
def test_a_dict_or_tuple_output_without_output_key_says_what_to_pass(
    tmp_path: Path, module: type[LitDict], described: str
) -> None:
    model = module(SmallCNN())
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(
        ValueError,
        match=rf"ClassModelVisualization: .*\(N, classes\) scores, got {described}"
        r".*pass `output_key=`",
    ):
        fit(tmp_path, ClassModelVisualization(classes=[1], steps=2), model)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())), "training started"
    with pytest.raises(
        ValueError, match=r"ClassModelVisualization: `output_key='logit'`.*keys: 'logits', 'aux'"
    ):
        fit(
            tmp_path / "b",
            ClassModelVisualization(steps=2, output_key="logit"),
            LitDict(SmallCNN()),
        )
    with pytest.raises(TypeError, match="`output_key` must be None"):
        ClassModelVisualization(output_key=1.5)  # type: ignore[arg-type]


def test_filmstrip_rows_are_classes_and_a_failing_filmstrip_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "featurewatch/class_model/output/filmstrip"
    cb = ClassModelVisualization(classes=[3, 7], steps=4, at_start=True)
    recs = fit(tmp_path / "ok", cb, NamedClassifier(SmallCNN()))
    (strip,) = [r for r in recs if r["key"] == key]
    assert strip["step"] == 2 and "rows 3: three, 7: seven" in strip["caption"]
    assert "columns: 2 of 2 calls" in strip["caption"]  # at_start and the end of epoch 0
    png = np.asarray(Image.open(tmp_path / "ok" / "featurewatch_logs" / strip["path"]))
    with Image.open(tmp_path / "ok" / "featurewatch_logs" / strip["animation"]) as gif:
        assert gif.n_frames == 2
    # 2 rows of 16 px class images shown at 64 px (min_size), 2 columns
    assert png.shape[0] > 2 * 64 and png.shape[1] > 2 * 64

    from featurewatch.callbacks import rendering

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("no filmstrip today")

    monkeypatch.setattr(rendering, "draw_filmstrip", broken)
    cb = ClassModelVisualization(classes=[3, 7], steps=4)
    with pytest.warns(UserWarning, match="no filmstrip today"):
        recs = fit(tmp_path / "broken", cb, NamedClassifier(SmallCNN()))
    assert not [r for r in recs if r["key"] == key]
    (error,) = [r for r in recs if r["kind"] == "text"]
    assert error["key"] == "featurewatch/class_model/output/filmstrip/error"
    assert "featurewatch/class_model/output" in {r["key"] for r in recs}  # the call's image
    assert cb.failures == 1


def test_class_names_that_do_not_name_every_class_fail_before_training(tmp_path) -> None:
    """They used to fall back silently to indices for the classes without a name (issue 11)."""
    train, val = digits_loaders(n=32)
    cb = ClassModelVisualization(classes=[0, 1, 2], class_names=["zero"], steps=1)
    trainer = make_trainer(tmp_path, callbacks=[cb], max_epochs=1)
    with pytest.raises(ValueError, match=r"`class_names` has 1 names but the model scores 10"):
        trainer.fit(LitClassifier(SmallCNN()), train, val)
    assert trainer.global_step == 0
