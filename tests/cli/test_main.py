"""The command line: --help everywhere, one line per bad input, --debug, the progress bar."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from torch.utils.tensorboard import SummaryWriter

from featurewatch.cli.main import COMMANDS, main
from tests.cli.conftest import featurewatch_cli


def python_m(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "featurewatch", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_help_for_the_command_and_every_subcommand():
    done = featurewatch_cli("--help")
    assert done.returncode == 0 and done.stdout.startswith("usage: featurewatch")
    assert all(c.name in done.stdout for c in COMMANDS)
    for command in COMMANDS:
        done = featurewatch_cli(command.name, "--help")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"usage: featurewatch {command.name}")
        assert "--debug" in done.stdout
    assert "-o FILE, --output FILE" in featurewatch_cli("report", "--help").stdout
    done = python_m("report", "--help")  # python -m featurewatch is the same command
    assert done.returncode == 0 and done.stdout.startswith("usage: featurewatch report")
    done = python_m("--version")
    assert done.returncode == 0 and done.stdout.startswith("featurewatch 0.")


def _no_featurewatch_tags(tmp: Path) -> Path:
    writer = SummaryWriter(tmp / "tb" / "version_0")
    writer.add_scalar("train_loss", 0.5, 1)
    writer.close()
    return tmp / "tb"


def _garbage_jsonl(tmp: Path) -> Path:
    (tmp / "featurewatch").mkdir()
    (tmp / "featurewatch" / "events.jsonl").write_text("{half a record\n\n")
    return tmp


def _two_runs(tmp: Path) -> Path:
    for name in ("a", "b"):
        (tmp / name / "featurewatch").mkdir(parents=True)
        (tmp / name / "featurewatch" / "events.jsonl").write_text("")
    return tmp


def _a_file(tmp: Path) -> Path:
    (tmp / "metrics.csv").write_text("step,loss\n")
    return tmp / "metrics.csv"


def _other_files(tmp: Path) -> Path:
    (tmp / "notes.txt").write_text("nothing here\n")
    (tmp / "sub").mkdir()
    (tmp / "sub" / "metrics.csv").write_text("step,loss\n")
    return tmp


def _empty(tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


@pytest.mark.parametrize(
    "make, args, expected, code",
    [
        (None, ["report", "{tmp}/missing"], "RUN '{tmp}/missing' does not exist", 1),
        (_empty, ["report", "{run}"], "is empty; point at the folder", 1),
        (_other_files, ["report", "{run}"], "no featurewatch output in '{tmp}'", 1),
        (
            _no_featurewatch_tags,
            ["report", "{run}"],
            "hold no featurewatch/ tags (only 1 other tag(s): train_loss)",
            1,
        ),
        (
            _garbage_jsonl,
            ["report", "{run}"],
            "holds no featurewatch records (1 unreadable line(s))",
            1,
        ),
        (
            _two_runs,
            ["report", "{run}"],
            "holds 2 runs: {tmp}/a/featurewatch (files sink), {tmp}/b",
            1,
        ),
        (_a_file, ["report", "{run}"], "is a file, not a run folder", 1),
        (
            None,
            ["report", "{fit}", "-o", "{tmp}/no/such/dir/r.html"],
            "folder '{tmp}/no/such/dir' does not exist",
            1,
        ),
        (None, ["report", "{fit}", "-o", "{tmp}"], "is a folder; give a file name", 1),
        (
            None,
            ["report", "{fit}", "--max-frames", "-1"],
            "--max-frames must be 0 (all) or a positive",
            1,
        ),
        (
            None,
            ["report", "{fit}", "--max-frames", "many"],
            "argument --max-frames: invalid int value: 'many'",
            2,
        ),
        (
            None,
            ["report", "{fit}", "--frobnicate"],
            "report: unrecognized arguments: --frobnicate (see 'featurewatch report --help')",
            2,
        ),
        (None, ["report"], "the following arguments are required: RUN", 2),
        (None, ["frobnicate", "ckpts"], "invalid choice: 'frobnicate'", 2),
        (None, [], "choose a command: report, replay, render", 2),
    ],
)
def test_bad_input_is_one_line_and_a_nonzero_exit(tmp_path, fit_run, make, args, expected, code):
    run = make(tmp_path) if make is not None else None
    fill = {"tmp": str(tmp_path), "run": str(run), "fit": str(fit_run.csv_dir)}
    done = featurewatch_cli(*[a.format(**fill) for a in args], cwd=tmp_path)
    assert done.returncode == code, (done.returncode, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("featurewatch: error: ")
    assert expected.format(**fill) in lines[0]
    assert "Traceback" not in done.stderr + done.stdout
    assert done.stdout == ""
    assert not (tmp_path / "report.html").exists()


def test_debug_shows_the_traceback(tmp_path):
    for args in (
        ["--debug", "report", str(tmp_path / "missing")],
        ["report", str(tmp_path / "missing"), "--debug"],
    ):
        done = python_m(*args)
        assert done.returncode != 0
        assert "Traceback (most recent call last)" in done.stderr
        assert "CLIError: RUN" in done.stderr


def test_an_unexpected_error_is_one_line_too(tmp_path, monkeypatch, capsys):
    """A bug or an environment failure (here: the page cannot be built) is also one line, naming
    the exception and pointing to --debug."""
    from featurewatch.cli import report

    def broken(*args, **kwargs):
        raise OSError("disk on fire\nsecond line")

    folder = tmp_path / "featurewatch"
    folder.mkdir()
    (folder / "events.jsonl").write_text(
        '{"kind": "scalar", "key": "featurewatch/x/v", "step": 0, "epoch": 0, "value": 1.0}\n'
    )
    monkeypatch.setattr(report, "build_page", broken)
    assert main(["report", str(tmp_path), "-o", str(tmp_path / "r.html")]) == 1
    err = capsys.readouterr().err
    assert (
        err == "featurewatch: error: OSError: disk on fire (run with --debug for the traceback)\n"
    )
    with pytest.raises(OSError, match="disk on fire"):
        main(["--debug", "report", str(tmp_path), "-o", str(tmp_path / "r.html")])


def test_progress_bar_only_on_a_terminal(fit_run, tmp_path):
    """Quiet in a pipe (checked by every successful run in these tests); a tqdm bar on a TTY."""
    exe = Path(sys.executable).with_name("featurewatch")
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    try:
        done = subprocess.run(
            [str(exe), "report", str(fit_run.tensorboard_dir), "-o", str(tmp_path / "r.html")],
            stdout=subprocess.PIPE,
            stderr=secondary,
            timeout=300,
            check=False,
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
    assert done.returncode == 0
    assert "embedding images" in terminal and "reading event files" in terminal
    assert (tmp_path / "r.html").stat().st_size > 10_000
