"""featurewatch replay: the callbacks over a real run's per-epoch checkpoints give what the same
callbacks logged during training (drift values to 1e-3, the same keys for the others)."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from featurewatch import (
    ActivationGrid,
    AttributionMaps,
    ChannelVisualization,
    ClassModelVisualization,
    DatasetExamples,
    FilterWeights,
)
from featurewatch.callbacks.feature_drift import FeatureDrift
from featurewatch.cli.main import main
from featurewatch.cli.readers import read_files
from tests._models import LitClassifier, SmallCNN, digits_loaders
from tests.callbacks.conftest import make_trainer
from tests.callbacks.test_feature_drift import reference_cka

LAYERS = ["net.features.2", "net.features.6"]  # SmallCNN's two ReLUs
MODEL = "tests._models:LitClassifier"
STEPS = 16  # render steps, in training and in replay


@dataclass(frozen=True)
class TrainedRun:
    root: Path
    ckpt: Path  # init.pt (the weights at step 0) and epoch=E-step=S.ckpt
    logged: Path  # the files-sink folder of the training run
    probe: Path  # FeatureDrift's probe during training, saved as a .pt tensor
    drift: FeatureDrift


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> TrainedRun:
    """3 epochs of 4 steps; every callback replay runs, at start and at every epoch end."""
    root = tmp_path_factory.mktemp("replay_run")
    pl.seed_everything(0, verbose=False)
    train, val = digits_loaders(n=128, batch_size=32)
    drift = FeatureDrift(LAYERS, num_images=16, at_start=True)
    logger = CSVLogger(root, name="csv")
    trainer = make_trainer(
        root,
        callbacks=[
            ChannelVisualization(LAYERS, steps=STEPS, at_start=True),
            ClassModelVisualization(steps=STEPS, at_start=True),
            FilterWeights(at_start=True),
            ActivationGrid(LAYERS, at_start=True),
            AttributionMaps(at_start=True),
            DatasetExamples(LAYERS, pool_size=16, at_start=True),
            drift,
            ModelCheckpoint(
                dirpath=root / "ckpt",
                filename="{epoch}-{step}",
                save_top_k=-1,
                every_n_epochs=1,
                save_on_train_epoch_end=True,
            ),
        ],
        logger=logger,
        enable_checkpointing=True,
        max_epochs=3,
    )
    model = LitClassifier(SmallCNN(), lr=0.3)
    (root / "ckpt").mkdir()
    torch.save(model.state_dict(), root / "ckpt" / "init.pt")
    trainer.fit(model, train, val)
    torch.save(drift._probe.fixed, root / "probe.pt")
    return TrainedRun(
        root, root / "ckpt", Path(logger.log_dir) / "featurewatch", root / "probe.pt", drift
    )


def records(folder: Path) -> list[dict]:
    lines = (folder / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def drift_values(folder: Path) -> dict[str, dict[int, float]]:
    found: dict[str, dict[int, float]] = {}
    for r in records(folder):
        if r["kind"] == "scalar" and re.fullmatch(r"featurewatch/drift/.+/cka_\w+", r["key"]):
            found.setdefault(r["key"], {})[r["step"]] = r["value"]
    return found


@pytest.fixture(scope="module")
def replayed(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("replayed") / "out"
    start = time.perf_counter()
    code = main(
        [
            "replay",
            str(trained.ckpt),
            "--model",
            MODEL,
            "--probe",
            str(trained.probe),
            "--layers",
            *LAYERS,
            "--steps",
            str(STEPS),
            "-o",
            str(out),
        ]
    )
    seconds = time.perf_counter() - start
    return code, out, seconds


def test_replay_gives_the_drift_logged_during_training(trained, replayed, capsys):
    code, out, seconds = replayed
    assert code == 0
    logged, again = drift_values(trained.logged), drift_values(out)
    keys = [f"featurewatch/drift/{la}/{w}" for la in LAYERS for w in ("cka_previous", "cka_first")]
    assert sorted(logged) == sorted(again) == sorted(keys)
    worst = 0.0
    for key in keys:
        assert sorted(again[key]) == sorted(logged[key])  # same steps: 0 (first only), 4, 8, 12
        for step, value in logged[key].items():
            worst = max(worst, abs(again[key][step] - value))
            assert again[key][step] == pytest.approx(value, abs=1e-3), (key, step)
    assert sorted(logged[keys[1]]) == [0, 4, 8, 12]
    # values that tell the steps apart: the drift is not trivially 1 everywhere
    assert min(logged[f"featurewatch/drift/{LAYERS[1]}/cka_first"].values()) < 1 - 1e-3
    print(f"\nreplay vs logged: max |delta cka| = {worst:.2e}; replay {seconds:.1f} s for 4 ckpts")
    # and the replay's values are CKA recomputed from the checkpoints' weights with plain hooks
    from tests.callbacks.test_feature_drift import activations

    probe = torch.load(trained.probe, weights_only=True)
    paths = {0: trained.ckpt / "init.pt"}
    paths.update({int(re.search(r"step=(\d+)", p.name)[1]): p for p in trained.ckpt.glob("*.ckpt")})
    acts = {step: activations(p, probe, LAYERS) for step, p in paths.items()}
    for la in LAYERS:
        for step in (4, 8, 12):
            first = reference_cka(acts[0][la], acts[step][la])
            previous = reference_cka(acts[step - 4][la], acts[step][la])
            assert again[f"featurewatch/drift/{la}/cka_first"][step] == pytest.approx(
                first, abs=1e-3
            )
            assert again[f"featurewatch/drift/{la}/cka_previous"][step] == pytest.approx(
                previous, abs=1e-3
            )


def test_replay_logs_the_keys_every_callback_logged_during_training(trained, replayed):
    _, out, _ = replayed
    during = {(r["kind"], r["key"], r["step"]) for r in records(trained.logged)}
    after = {(r["kind"], r["key"], r["step"]) for r in records(out)}
    assert {k for _, k, _ in during if k.endswith("/error")} == set()
    assert after == during  # every key, at the same steps
    for name in ("channels", "class_model", "filters", "activations", "attribution", "examples"):
        assert any(k.startswith(f"featurewatch/{name}/") for _, k, _ in after), name
    assert ("image", "featurewatch/examples/net.features.2/filmstrip", 12) in after
    # each call at its checkpoint's step and epoch
    steps = {(r["step"], r["epoch"]) for r in records(out) if r["key"].endswith("/seconds")}
    assert steps == {(0, 0), (4, 0), (8, 1), (12, 2)}
    # the real reader reads it, as `featurewatch report` will
    run = read_files(out)
    assert run.steps == [0, 4, 8, 12]
    frames = run.images["featurewatch/channels/net.features.2"]
    assert [f.step for f in frames] == [0, 4, 8, 12]
    assert len({f.png() for f in frames}) == 4  # the network changed, so did its pictures
    assert (out / "index.html").stat().st_size > 1000


def test_report_reads_the_replayed_folder(replayed, tmp_path):
    _, out, _ = replayed
    assert main(["report", str(out), "-o", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "net.features.6" in page and "data:image/png;base64," in page


def test_replay_of_a_glob_and_a_state_dict_factory(trained, tmp_path, capsys):
    """Lightning checkpoints through a factory (their state_dict), chosen by a glob; callbacks
    picked with --callbacks; the epoch comes from the checkpoint."""
    out = tmp_path / "out"
    code = main(
        [
            "replay",
            str(trained.ckpt / "epoch=*.ckpt"),
            "--model",
            "tests.cli.test_replay:lit_classifier",
            "--probe",
            str(trained.probe),
            "--callbacks",
            "drift",
            "filters",
            "-o",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    captured = capsys.readouterr()
    assert captured.err == ""
    assert "replayed 3 checkpoint(s), steps 4..12, with FeatureDrift, FilterWeights" in captured.out
    keys = {r["key"] for r in records(out)}
    assert {k.split("/")[1] for k in keys} == {
        "drift",
        "filters",
    }  # its seconds under its own prefix
    # default layers: SmallCNN's two convs; first call here is step 4
    values = drift_values(out)
    assert sorted(values) == sorted(
        f"featurewatch/drift/net.features.{i}/{w}"
        for i in (0, 4)
        for w in ("cka_previous", "cka_first")
    )
    assert values["featurewatch/drift/net.features.0/cka_first"][4] == pytest.approx(1.0)


def lit_classifier() -> torch.nn.Module:
    """A factory, as ``--model MODULE:FACTORY`` names one."""
    return LitClassifier(SmallCNN())
