"""featurewatch replay and render: every bad input is one line on stderr and a non-zero exit;
render writes one labelled PNG of a checkpoint's channel and class images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from featurewatch.cli.main import main
from tests._models import LitClassifier, SmallCNN
from tests.cli.conftest import featurewatch_cli

MODEL = "tests._models:LitClassifier"


class WideLit(LitClassifier):
    """A LightningModule whose weights do not fit LitClassifier's checkpoints (width 4)."""

    def __init__(self) -> None:
        super().__init__(SmallCNN(width=4))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two state_dict checkpoints (steps 0 and 5), a Lightning-style .ckpt and probes."""
    root = tmp_path_factory.mktemp("ckpts")
    (root / "ckpt").mkdir()
    torch.manual_seed(0)
    torch.save(LitClassifier(SmallCNN()).state_dict(), root / "ckpt" / "step=0.pt")
    model = LitClassifier(SmallCNN())
    torch.save(model.state_dict(), root / "ckpt" / "step=5.pt")
    torch.save(
        {"state_dict": model.state_dict(), "global_step": 5, "epoch": 1},
        root / "lightning-like.ckpt",
    )
    x = torch.randn(8, 1, 16, 16)
    torch.save(x, root / "probe.pt")
    torch.save((x, torch.arange(8) % 10), root / "labelled.pt")
    torch.save(torch.zeros(5, 16), root / "flat.pt")
    torch.save(x[:1], root / "one.pt")
    torch.save(torch.randn(4, 3, 16, 16), root / "rgb.pt")
    torch.save(torch.zeros(4, 4), root / "not_a_probe.pt")
    (root / "empty").mkdir()
    (root / "images").mkdir()
    for i in range(3):
        Image.fromarray((np.random.default_rng(i).random((20, 20)) * 255).astype("uint8")).save(
            root / "images" / f"{i}.png"
        )
    (root / "used").mkdir()
    (root / "used" / "events.jsonl").write_text("")
    return root


def replay(*extra: str) -> list[str]:
    return ["replay", "{root}/ckpt", "--model", MODEL, "--probe", "{root}/probe.pt", *extra]


BAD = [
    # replay
    (
        ["replay", "{root}/missing", "--model", MODEL, "--probe", "{root}/probe.pt", "-o", "{out}"],
        "checkpoint path '{root}/missing' does not exist",
        1,
    ),
    (
        ["replay", "{root}/empty", "--model", MODEL, "--probe", "{root}/probe.pt", "-o", "{out}"],
        "folder '{root}/empty' holds no checkpoint (*.ckpt, *.pt, *.pth)",
        1,
    ),
    (
        [
            "replay",
            "{root}/ckpt/*.nothing",
            "--model",
            MODEL,
            "--probe",
            "{root}/probe.pt",
            "-o",
            "{out}",
        ],
        "the glob '{root}/ckpt/*.nothing' matches no file",
        1,
    ),
    (
        [
            "replay",
            "{root}/ckpt",
            "--model",
            "no_such_module:Net",
            "--probe",
            "{root}/probe.pt",
            "-o",
            "{out}",
        ],
        "cannot import 'no_such_module'",
        1,
    ),
    (
        [
            "replay",
            "{root}/ckpt",
            "--model",
            "tests._models",
            "--probe",
            "{root}/probe.pt",
            "-o",
            "{out}",
        ],
        "expected MODULE:NAME",
        1,
    ),
    (
        [
            "replay",
            "{root}/ckpt",
            "--model",
            "tests._models:Nope",
            "--probe",
            "{root}/probe.pt",
            "-o",
            "{out}",
        ],
        "module 'tests._models' has no 'Nope' (it has: ",
        1,
    ),
    (
        [
            "replay",
            "{root}/ckpt",
            "--model",
            "tests._models:TinyResNet",
            "--probe",
            "{root}/probe.pt",
            "-o",
            "{out}",
        ],
        "does not match tests._models:TinyResNet",
        1,
    ),
    (
        [
            "replay",
            "{root}/lightning-like.ckpt",
            "--model",
            "tests.cli.test_checkpoint_commands:WideLit",
            "--probe",
            "{root}/probe.pt",
            "-o",
            "{out}",
        ],
        "does not load into tests.cli.test_checkpoint_commands:WideLit",
        1,
    ),
    (
        replay("--layers", "net.features.9", "-o", "{out}"),
        (
            "--layers 'net.features.9': layer 'net.features.9' not found in LitClassifier; did "
            "you mean 'net.features.6' or 'net.features.5' or 'net.features.4'? (conv/activation "
            "layers: net.features.0, net.features.2, net.features.4, net.features.6"
        ),
        1,
    ),
    (
        ["replay", "{root}/ckpt", "--model", MODEL, "--probe", "{root}/flat.pt", "-o", "{out}"],
        (
            "--probe '{root}/flat.pt' holds a torch.float32 tensor of shape (5, 16); expected an "
            "(N, C, H, W) tensor of model inputs"
        ),
        1,
    ),
    (
        ["replay", "{root}/ckpt", "--model", MODEL, "--probe", "{root}/one.pt", "-o", "{out}"],
        "gave 1 image; replay needs at least 2",
        1,
    ),
    (
        ["replay", "{root}/ckpt", "--model", MODEL, "--probe", "{root}/rgb.pt", "-o", "{out}"],
        "holds 3-channel images (4, 3, 16, 16), but the model's first convolution takes 1",
        1,
    ),
    (
        ["replay", "{root}/ckpt", "--model", MODEL, "--probe", "{root}/nothing.pt", "-o", "{out}"],
        "--probe '{root}/nothing.pt' does not exist",
        1,
    ),
    (
        ["replay", "{root}/ckpt", "--model", MODEL, "--probe", "{root}/empty", "-o", "{out}"],
        "--probe folder '{root}/empty' holds no image files",
        1,
    ),
    (replay("-o", "{root}/used"), "already holds featurewatch output (events.jsonl)", 1),
    (replay("--normalize", "a", "b", "-o", "{out}"), "expected MEAN STD as comma-separated", 1),
    (replay("--steps", "0", "-o", "{out}"), "--steps must be a positive number, got 0", 1),
    (replay("--callbacks", "dreams", "-o", "{out}"), "argument --callbacks: invalid choice", 2),
    (replay(), "the following arguments are required: -o/--output", 2),
    (["replay", "{root}/ckpt", "-o", "{out}"], "required: --model, --probe", 2),
    # render
    (
        ["render", "{root}/missing.ckpt", "--model", MODEL, "-o", "{out}.png"],
        "checkpoint '{root}/missing.ckpt' does not exist",
        1,
    ),
    (
        ["render", "{root}/ckpt/step=5.pt", "--model", "nowhere:Net", "-o", "{out}.png"],
        "cannot import 'nowhere'",
        1,
    ),
    (
        [
            "render",
            "{root}/ckpt/step=5.pt",
            "--model",
            "tests._models:TinyResNet",
            "-o",
            "{out}.png",
        ],
        "does not match tests._models:TinyResNet",
        1,
    ),
    (
        ["render", "{root}/ckpt/step=5.pt", "--model", MODEL, "--layer", "fc", "-o", "{out}.png"],
        "--layer 'fc': layer 'fc' not found in LitClassifier",
        1,
    ),
    (
        ["render", "{root}/ckpt/step=5.pt", "--model", MODEL, "--classes", "12", "-o", "{out}.png"],
        "--classes [12]: the model has 10 classes (0..9)",
        1,
    ),
    (
        ["render", "{root}/ckpt/step=5.pt", "--model", MODEL, "-o", "{out}.jpg"],
        "give a .png file name",
        1,
    ),
    (
        ["render", "{root}/ckpt/step=5.pt", "--model", MODEL, "-o", "{root}/no/dir/x.png"],
        "folder '{root}/no/dir' does not exist",
        1,
    ),
    (
        ["render", "{root}/not_a_probe.pt", "--model", MODEL, "-o", "{out}.png"],
        "holds a Tensor that is not a state_dict",
        1,
    ),
    (["render", "{root}/ckpt/step=5.pt", "-o", "{out}.png"], "required: --model", 2),
]


@pytest.mark.parametrize("args, expected, code", BAD)
def test_bad_input_is_one_line_and_a_nonzero_exit(files, tmp_path, capsys, args, expected, code):
    fill = {"root": str(files), "out": str(tmp_path / "out")}
    got = main([a.format(**fill) for a in args])
    out, err = capsys.readouterr()
    assert got == code, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("featurewatch: error: "), err
    assert expected.format(**fill) in lines[0], lines[0]
    assert "Traceback" not in out + err and out == ""
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.png").exists()


def test_one_line_from_the_installed_command_and_a_traceback_with_debug(files, tmp_path):
    args = ["replay", str(files / "ckpt"), "--model", "no_such_module:Net", "--probe"]
    args += [str(files / "probe.pt"), "-o", str(tmp_path / "out")]
    done = featurewatch_cli(*args, cwd=tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [
        (
            "featurewatch: error: --model 'no_such_module:Net': cannot import 'no_such_module': No "
            "module named 'no_such_module'"
        )
    ]
    done = featurewatch_cli(*args, "--debug", cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr and "CLIError" in done.stderr


def test_help_of_replay_and_render():
    for name, options in (
        (
            "replay",
            (
                "--model MODULE:NAME",
                "--probe FILE.pt|FOLDER",
                "--normalize MEAN STD",
                "--layers L",
                "--callbacks NAME",
                "-o OUT, --output OUT",
            ),
        ),
        ("render", ("--model MODULE:NAME", "--layer L", "--classes", "-o OUT.png")),
    ):
        done = featurewatch_cli(name, "--help")
        assert done.returncode == 0 and done.stdout.startswith(f"usage: featurewatch {name}")
        for option in options:
            assert option in done.stdout, (name, option)


def test_replay_of_state_dicts_with_labels_and_a_folder_probe(files, tmp_path, capsys):
    """Steps from the file names; labels explain their class in attribution; a folder probe is
    resized and normalized."""
    out = tmp_path / "out"
    args = replay("--callbacks", "attribution", "drift", "-o", str(out))
    args[5] = "{root}/labelled.pt"
    assert main([a.format(root=files) for a in args]) == 0, capsys.readouterr().err
    keys = {line.split('"key": "')[1].split('"')[0] for line in (out / "events.jsonl").open()}
    assert "featurewatch/attribution/saliency" in keys
    assert "featurewatch/drift/net.features.0/cka_previous" in keys
    caption = next(
        json.loads(line)["caption"]
        for line in (out / "events.jsonl").open()
        if '"featurewatch/attribution/saliency"' in line
    )
    # the labels 0, 1, 2, 3 are the targets (with "predicted" they would all be the argmax)
    assert all(f"#{i}: target {i}, predicted" in caption for i in range(4)), caption
    out2 = tmp_path / "out2"
    args = ["replay", f"{files}/ckpt", "--model", MODEL, "--probe", f"{files}/images"]
    args += ["--size", "16", "--normalize", "0.3", "0.4", "--callbacks", "drift", "-o", str(out2)]
    assert main(args) == 0, capsys.readouterr().err
    assert "featurewatch/drift/net.features.4/cka_first" in (out2 / "events.jsonl").read_text()


def test_render_writes_one_labelled_png(files, tmp_path, capsys):
    out = tmp_path / "r.png"
    args = ["render", f"{files}/ckpt/step=5.pt", "--model", MODEL, "--layer", "net.features.2"]
    args += ["--channels", "4", "--classes", "1", "7", "--steps", "8", "--size", "24"]
    assert main([*args, "-o", str(out)]) == 0, capsys.readouterr().err
    assert "wrote " in capsys.readouterr().out
    image = np.asarray(Image.open(out).convert("L"))
    assert image.shape[0] > 150 and image.shape[1] > 500
    assert image.std() > 20  # tiles and labels, not a blank canvas


def test_checkpoints_are_ordered_by_global_step_and_duplicates_skipped(tmp_path):
    from featurewatch.cli.common import CLIError
    from featurewatch.cli.models import Checkpoint
    from featurewatch.cli.replay import order_checkpoints

    def ck(name, step, epoch=None):
        return Checkpoint(tmp_path / name, step, epoch, step is not None)

    ordered, notes = order_checkpoints(
        [
            ck("epoch=10-step=110.ckpt", 110, 10),
            ck("last.ckpt", 110, 10),
            ck("init.pt", None),
            ck("epoch=9-step=99.ckpt", 99, 9),
            ck("epoch=1-step=20.ckpt", 20),
        ]
    )
    assert [(c.path.name, c.step, c.epoch) for c in ordered] == [
        ("init.pt", 0, 0),
        ("epoch=1-step=20.ckpt", 20, 0),  # unknown epoch: the previous checkpoint's
        ("epoch=9-step=99.ckpt", 99, 9),
        ("epoch=10-step=110.ckpt", 110, 10),  # 110 after 99: by number, not by name
    ]
    assert notes == [
        "init.pt has no global step; replayed at step 0 (before training)",
        "skipping last.ckpt: same global step 110 as epoch=10-step=110.ckpt",
    ]
    ordered, notes = order_checkpoints([ck("b10.pt", None), ck("b9.pt", None)])
    assert [(c.path.name, c.step) for c in ordered] == [("b9.pt", 0), ("b10.pt", 1)]
    assert "in name order at steps 0..1" in notes[0]
    with pytest.raises(CLIError, match="2 checkpoints have no global step"):
        order_checkpoints([ck("a.pt", None), ck("b.pt", None), ck("step=3.ckpt", 3)])


def test_a_callback_failing_in_a_call_is_reported_and_the_exit_code_is_1(
    files, tmp_path, capsys, monkeypatch
):
    from featurewatch.callbacks.feature_drift import FeatureDrift

    def broken(self, trainer, pl_module, event):
        raise RuntimeError(f"no drift at step {trainer.global_step}")

    monkeypatch.setattr(FeatureDrift, "visualize", broken)
    out = tmp_path / "out"
    args = replay("--callbacks", "drift", "filters", "-o", str(out))
    assert main([a.format(root=files) for a in args]) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        (
            "featurewatch: warning: FeatureDrift failed: featurewatch FeatureDrift failed at step "
            "0: RuntimeError: no drift at step 0. Training continues; pass strict=True to stop on "
            "such errors."
        )
    ]
    assert "replayed 2 checkpoint(s), steps 0..5" in captured.out
    log = [json.loads(line) for line in (out / "events.jsonl").open()]
    errors = [r for r in log if r["key"] == "featurewatch/drift/error"]
    assert [r["step"] for r in errors] == [0, 5]
    assert "RuntimeError: no drift at step 5" in errors[1]["value"]
    assert {r["step"] for r in log if r["key"] == "featurewatch/filters/net.features.0"} == {0, 5}


def test_replay_shows_a_progress_bar_on_a_terminal_only(files, tmp_path):
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios
    from pathlib import Path

    exe = Path(sys.executable).with_name("featurewatch")
    args = [a.format(root=files) for a in replay("--callbacks", "filters")]
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    try:
        done = subprocess.run(
            [str(exe), *args, "-o", str(tmp_path / "tty")],
            stdout=subprocess.PIPE,
            stderr=secondary,
            timeout=300,
            check=False,
            cwd=Path.cwd(),
        )
        os.close(secondary)
        secondary = -1
        chunks = []
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the other side is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(primary)
        if secondary != -1:
            os.close(secondary)
    terminal = b"".join(chunks).decode("utf-8", "replace")
    assert done.returncode == 0, terminal
    assert "replay:" in terminal and "/2 [" in terminal and "ckpt/s" in terminal, terminal
    piped = featurewatch_cli(*args, "-o", str(tmp_path / "pipe"), cwd=Path.cwd())
    assert piped.returncode == 0 and piped.stderr == ""
