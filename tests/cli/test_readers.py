"""The run readers: a files-sink folder and TensorBoard event files of the same fit give the same
run model (keys, steps, epochs, captions, pixels); where RUN may point."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from featurewatch.cli.common import CLIError
from featurewatch.cli.readers import find_run, natural_key, read_run
from featurewatch.loggers import strip_context
from tests.cli.conftest import STEPS


def pixels(frame) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(frame.png())).convert("RGB"))


def records(fit_run) -> list[dict]:
    lines = (fit_run.csv_dir / "featurewatch" / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def both(fit_run):
    files = read_run(find_run(fit_run.csv_dir))
    tensorboard = read_run(find_run(fit_run.tensorboard_dir))
    return files, tensorboard


def test_files_and_tensorboard_give_the_same_images(both, fit_run):
    files, tensorboard = both
    assert (files.format, tensorboard.format) == ("files", "tensorboard")
    # the readers give captions without a leading copy of the frame's own epoch and step
    logged = {
        (r["key"], r["step"], r["epoch"], strip_context(r["caption"], r["step"], r["epoch"]))
        for r in records(fit_run)
        if r["kind"] == "image"
    }
    expected_keys = {
        "featurewatch/filters/net.features.0",
        "featurewatch/activations/net.features.0",
        "featurewatch/activations/net.features.4",
        "featurewatch/activations/probe",
        "featurewatch/drift/cka_previous",
        "featurewatch/dead/net.features.2/heatmap",
        "featurewatch/dead/net.features.6/heatmap",
    }
    assert {k for k, *_ in logged} == expected_keys
    for run in (files, tensorboard):
        assert set(run.images) == expected_keys
        got = {(k, f.step, f.epoch, f.caption) for k, frames in run.images.items() for f in frames}
        assert got == logged  # steps, epochs and captions, also from TensorBoard's caption tables
        for frames in run.images.values():
            assert [f.step for f in frames] == sorted(f.step for f in frames)
    assert [f.step for f in files.images["featurewatch/activations/net.features.0"]] == STEPS
    assert [f.step for f in files.images["featurewatch/drift/cka_previous"]] == STEPS[1:]
    for key, frames in files.images.items():
        for a, b in zip(frames, tensorboard.images[key], strict=True):
            assert (a.width, a.height) == (b.width, b.height) == pixels(a).shape[1::-1]
            np.testing.assert_array_equal(pixels(a), pixels(b), err_msg=f"{key} at {a.step}")


def test_files_and_tensorboard_give_the_same_scalars_histograms_and_texts(both):
    files, tensorboard = both
    assert set(files.scalars) == set(tensorboard.scalars)
    assert {
        "featurewatch/drift/net.features.0/cka_first",
        "featurewatch/drift/net.features.4/cka_previous",
        "featurewatch/dead/net.features.2/dead_fraction",
        "featurewatch/filters/seconds",
    } <= set(files.scalars)
    for key, points in files.scalars.items():
        other = tensorboard.scalars[key]
        assert [(p.step, p.epoch) for p in points] == [(p.step, p.epoch) for p in other], key
        np.testing.assert_allclose(
            [p.value for p in points], [p.value for p in other], rtol=1e-6, err_msg=key
        )  # TensorBoard keeps float32
    assert (
        set(files.histograms)
        == set(tensorboard.histograms)
        == {
            "featurewatch/filters/net.features.0/weights",
            "featurewatch/dead/net.features.2/on_rate",
            "featurewatch/dead/net.features.6/on_rate",
        }
    )
    for key, frames in files.histograms.items():
        other = tensorboard.histograms[key]
        assert [f.step for f in frames] == [f.step for f in other]
        for a, b in zip(frames, other):  # binned differently, the same values
            assert sum(a.counts) == sum(b.counts)
            assert a.edges[0] == pytest.approx(b.edges[0], abs=1e-6)
            assert a.edges[-1] == pytest.approx(b.edges[-1], abs=1e-6)
    (key,) = files.texts
    assert key == "featurewatch/complaining/error" and set(tensorboard.texts) == {key}
    for a, b in zip(files.texts[key], tensorboard.texts[key], strict=True):
        assert (a.step, a.epoch) == (b.step, b.epoch)
        assert a.text.rstrip("\n") == b.text  # indentation undone; the last newline is lost there
        assert f"no picture at step {a.step}" in a.text and "Traceback" in a.text
    assert files.steps == tensorboard.steps == STEPS
    assert files.epochs() == tensorboard.epochs() == {0: 0, 4: 0, 8: 1, 12: 2}


def test_where_run_may_point(fit_run):
    tb, fw = fit_run.tensorboard_dir, fit_run.csv_dir / "featurewatch"
    for path, folder, fmt in [
        (fit_run.csv_dir, fw, "files"),  # a logger's log_dir
        (fw, fw, "files"),  # the files sink's own folder
        (fw / "events.jsonl", fw, "files"),
        (fit_run.root / "csv", fw, "files"),  # a folder above one run
        (tb, tb, "tensorboard"),
        (fit_run.root / "tb", tb, "tensorboard"),  # a TensorBoard --logdir
        (next(tb.glob("events.out.tfevents.*")), tb, "tensorboard"),
    ]:
        found = find_run(path)
        assert (found.folder, found.format) == (folder, fmt), path
    with pytest.raises(
        CLIError,
        match=r"holds 2 runs: .*featurewatch \(files sink\), .*version_0 "
        r"\(TensorBoard event files\); pass the folder of the one to show",
    ):
        find_run(fit_run.root)


def test_missing_pngs_and_bad_lines_are_noted_not_fatal(tmp_path):
    folder = tmp_path / "featurewatch"
    (folder / "images").mkdir(parents=True)
    Image.new("RGB", (3, 2), (10, 20, 30)).save(folder / "images" / "a.png")
    lines = [
        {
            "kind": "image",
            "key": "featurewatch/x/a",
            "step": 1,
            "epoch": 0,
            "path": "images/a.png",
            "caption": "c",
            "width": 3,
            "height": 2,
        },
        {
            "kind": "image",
            "key": "featurewatch/x/a",
            "step": 2,
            "epoch": 0,
            "path": "images/gone.png",
            "caption": "",
            "width": 3,
            "height": 2,
        },
        {
            "kind": "scalar",
            "key": "featurewatch/x/v",
            "step": 2,
            "epoch": 0,
            "value": None,
            "nonfinite": "nan",
        },
    ]
    text = "\n".join(json.dumps(r) for r in lines) + "\n{not json\n"
    (folder / "events.jsonl").write_text(text)
    run = read_run(find_run(tmp_path))
    assert [f.step for f in run.images["featurewatch/x/a"]] == [1]
    assert pixels(run.images["featurewatch/x/a"][0])[0, 0].tolist() == [10, 20, 30]
    assert run.scalars["featurewatch/x/v"][0].value is None
    assert len(run.notes) == 2 and "1 unreadable line" in run.notes[0] and "missing" in run.notes[1]


def test_natural_order():
    names = ["features.13", "features.2", "layer10.0", "features.10", "layer2.1", "Features.3"]
    assert sorted(names, key=natural_key) == [
        "features.2",
        "Features.3",
        "features.10",
        "features.13",
        "layer2.1",
        "layer10.0",
    ]
