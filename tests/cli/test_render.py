"""``featurewatch render``: one labelled PNG of a checkpoint's channels and classes, and one clear
line (exit 1, no traceback) for every bad input."""

from __future__ import annotations

import textwrap

import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from featurewatch.cli.main import main

NETS = textwrap.dedent(
    """
    import pytorch_lightning as pl
    import torch
    from torch import nn

    def make_net():
        return nn.Sequential(
            nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
        )

    def make_other():
        return nn.Sequential(nn.Conv2d(1, 3, 3), nn.Flatten())

    class Lit(pl.LightningModule):
        class_names = ["cat", "dog", "owl", "eel"]

        def __init__(self, width: int = 6):
            super().__init__()
            self.save_hyperparameters()
            self.net = make_net()

        def forward(self, x):
            return self.net(x)
    """
)


@pytest.fixture
def nets(tmp_path, monkeypatch):
    (tmp_path / "fw_render_nets.py").write_text(NETS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import fw_render_nets

    torch.manual_seed(0)
    lit = fw_render_nets.Lit()
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(lit)
    trainer.save_checkpoint(tmp_path / "lit.ckpt")
    torch.save(lit.net.state_dict(), tmp_path / "net.pt")
    return tmp_path


def render(*args: str) -> list[str]:
    return ["render", *args, "--size", "16", "--steps", "2"]


def test_renders_channels_and_named_classes_of_a_lightning_checkpoint(nets, capsys) -> None:
    code = main(
        render(
            "lit.ckpt",
            "--model",
            "fw_render_nets:Lit",
            "--layer",
            "net.1",
            "--classes",
            "-o",
            "out.png",
        )
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "10 images in 2 section(s)" in captured.out  # 6 channels of net.1 + the 4 classes
    with Image.open(nets / "out.png") as im:
        assert im.width > 400 and im.height > 150
        pixels = torch.tensor(list(im.convert("L").getdata()), dtype=torch.float32)
    assert pixels.std() > 20  # drawn, not blank


def test_renders_a_state_dict_through_a_factory(nets, capsys) -> None:
    code = main(
        render(
            "net.pt",
            "--model",
            "fw_render_nets:make_net",
            "--layer",
            "2",
            "--channels",
            "3",
            "-o",
            "f.png",
        )
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "3 images in 1 section(s)" in out
    assert (nets / "f.png").stat().st_size > 1000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.ckpt", "--model", "fw_render_nets:Lit", "--classes"], "does not exist"),
        (["lit.ckpt", "--model", "fw_render_nets", "--classes"], "expected MODULE:NAME"),
        (["lit.ckpt", "--model", "no_such_module:Net", "--classes"], "cannot import"),
        (["lit.ckpt", "--model", "fw_render_nets:Nope", "--classes"], "has no 'Nope' (it has:"),
        (["net.pt", "--model", "fw_render_nets:make_other", "--classes"], "does not match"),
        (["lit.ckpt", "--model", "fw_render_nets:Lit", "--layer", "net.9"], "--layer 'net.9'"),
        (["lit.ckpt", "--model", "fw_render_nets:Lit", "--classes", "7"], "the model has 4"),
        (["lit.ckpt", "--model", "fw_render_nets:Lit", "--classes", "-o", "x.jpg"], ".png"),
    ],
)
def test_every_bad_input_is_one_line_and_exit_1(nets, capsys, args, message) -> None:
    code = main(render(*args))
    err = capsys.readouterr().err
    assert code == 1
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("featurewatch: error: ") and message in err, err
    assert "Traceback" not in err


def test_help_names_every_argument(capsys) -> None:
    assert main(["render", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--model", "--layer", "--classes", "--channels", "--normalize", "--output"):
        assert flag in out
