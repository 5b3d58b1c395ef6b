"""``featurewatch replay CHECKPOINTS --model MODULE:NAME --probe FILE.pt|FOLDER -o OUT``: the
featurewatch callbacks over the saved checkpoints of a run that had none attached.

Every checkpoint (a folder's ``*.ckpt``/``*.pt``/``*.pth`` files, a glob, or files) is loaded in
global-step order and each chosen callback runs one call on it, logged at the checkpoint's global
step and epoch into a files-sink folder ``OUT`` (``OUT/events.jsonl``, ``OUT/index.html``), so
``featurewatch report OUT`` shows the run's evolution. The calls are the callbacks' own: their
``check_model``/``check_input`` on the first checkpoint and the probe, then their ``visualize``
through :meth:`~featurewatch.callbacks.base.FeatureWatchCallback.replay_call` (same isolation,
failure reporting and timing as in training), and the filmstrips of the end of training. The probe
images stand for the data: FeatureDrift's probe, ActivationGrid's and AttributionMaps' images (the
first 4; with labels, attribution explains the labelled class), DatasetExamples' pool.
"""

from __future__ import annotations

import argparse
import glob
import re
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from featurewatch.cli.common import CLIError, parse_normalize, progress
from featurewatch.cli.models import Checkpoint, image_channels, load_model, read_checkpoint
from featurewatch.cli.probe import load_probe

__all__ = ["CALLBACKS", "configure", "find_checkpoints", "order_checkpoints", "run"]

#: ``--callbacks`` names, in the order they run at each checkpoint.
CALLBACKS = ("channels", "classes", "filters", "activations", "attribution", "examples", "drift")
_SUFFIXES = (".ckpt", ".pt", ".pth")
#: Default layers (without ``--layers``): at most this many conv layers, evenly spaced.
_DEFAULT_LAYERS = 4
#: Images of the probe that ActivationGrid and AttributionMaps show (their default count).
_SHOWN = 4


def configure(parser: argparse.ArgumentParser) -> None:
    """Add ``replay``'s arguments to its subparser."""
    parser.add_argument(
        "checkpoints",
        nargs="+",
        metavar="CHECKPOINTS",
        help="a folder (its *.ckpt, *.pt, *.pth files), a glob (quoted, e.g. 'ckpt/*.ckpt') or "
        "checkpoint files",
    )
    parser.add_argument(
        "--model",
        required=True,
        metavar="MODULE:NAME",
        help="the LightningModule class of the .ckpt files, or a function returning the "
        "nn.Module of state_dict files (MODULE is imported with the current folder on the path)",
    )
    parser.add_argument(
        "--probe",
        required=True,
        metavar="FILE.pt|FOLDER",
        help="the fixed images every call looks at: a .pt file of model inputs ((N, C, H, W), "
        "or an (images, labels) tuple), or a folder of image files (or of class sub-folders)",
    )
    parser.add_argument(
        "--normalize",
        nargs=2,
        metavar=("MEAN", "STD"),
        default=None,
        help="the model's input normalization, comma-separated per channel (applied to a probe "
        "folder's images; renders use it too; default: fitted from the probe)",
    )
    parser.add_argument(
        "--layers",
        nargs="+",
        default=None,
        metavar="L",
        help="layers as in model.named_modules() (default: up to 4 conv layers, evenly spaced)",
    )
    parser.add_argument(
        "--callbacks",
        nargs="+",
        default=None,
        choices=CALLBACKS,
        metavar="NAME",
        help=f"what to compute: {', '.join(CALLBACKS)} (default: all that fit the model)",
    )
    parser.add_argument(
        "--size", type=int, default=None, metavar="N", help="resize a probe folder's images to N"
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=64,
        metavar="N",
        help="optimization steps of channel and class images (default: %(default)s)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace featurewatch output already in OUT (events.jsonl, index.html, images/)",
    )
    parser.add_argument(
        "-o", "--output", required=True, metavar="OUT", help="the files-sink folder to write"
    )


def run(args: argparse.Namespace) -> int:
    """Replay the callbacks over the checkpoints; one summary line on stdout."""
    for name in ("steps", "size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise CLIError(f"--{name} must be a positive number, got {value}")
    norm = parse_normalize(args.normalize)
    output = _output_folder(Path(args.output), args.overwrite)
    checkpoints, notes = order_checkpoints(
        [read_checkpoint(p) for p in find_checkpoints(args.checkpoints)]
    )
    for note in notes:
        print(f"featurewatch: note: {note}", file=sys.stderr)
    model = load_model(args.model, checkpoints[0].path)
    images, labels = load_probe(
        args.probe, channels=image_channels(model), size=args.size, normalize=norm
    )
    _check_fits(model, images, args.probe)
    layers = _layers(model, args.layers, images)

    from featurewatch.callbacks import FeatureWatchWarning
    from featurewatch.loggers.files import FilesSink

    # nothing is written before the first call: a setup error leaves OUT untouched
    sink = FilesSink(output, title=f"featurewatch replay · {Path(args.checkpoints[0]).name}")
    callbacks = _setup(model, args.callbacks, layers, (images, labels), norm, args.steps, sink)
    start = time.perf_counter()
    failed: dict[str, str] = {}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", FeatureWatchWarning)
            for i, ck in enumerate(progress(checkpoints, desc="replay", unit="ckpt")):
                if i:
                    model = load_model(args.model, ck.path)
                for cb in callbacks:
                    cb.replay_call(model, ck.step or 0, ck.epoch or 0)
            last = checkpoints[-1]
            for cb in callbacks:
                cb.replay_end(model, last.step or 0, last.epoch or 0)
        for w in caught:
            if issubclass(w.category, FeatureWatchWarning):
                text = str(w.message).splitlines()[0]
                who = text.split()[1] if text.startswith("featurewatch ") else "featurewatch"
                failed.setdefault(who.rstrip(":"), text)
    finally:
        sink.close()
    seconds = time.perf_counter() - start
    names = ", ".join(type(cb).__name__ for cb in callbacks)
    first, last = checkpoints[0], checkpoints[-1]
    print(
        f"replayed {len(checkpoints)} checkpoint(s), steps {first.step}..{last.step}, with "
        f"{names} into {output} in {seconds:.1f} s ({seconds / len(checkpoints):.2f} s per "
        f"checkpoint); see {output / 'index.html'} or run: featurewatch report {output}"
    )
    for who, text in failed.items():
        print(f"featurewatch: warning: {who} failed: {text}", file=sys.stderr)
    return 1 if failed else 0


# ---------------------------------------------------------------------- checkpoints
def _natural(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def find_checkpoints(sources: Sequence[str]) -> list[Path]:
    """The checkpoint files ``sources`` name: folders' ``*.ckpt``/``*.pt``/``*.pth``, globs, files.

    Raises:
        CLIError: for a path that does not exist, a folder or glob without checkpoint files.
    """
    found: list[Path] = []
    for source in sources:
        p = Path(source)
        if p.is_dir():
            files = [f for f in p.iterdir() if f.is_file() and f.suffix in _SUFFIXES]
            if not files:
                kinds = ", ".join("*" + s for s in _SUFFIXES)
                raise CLIError(f"folder {source!r} holds no checkpoint ({kinds})")
        elif p.is_file():
            files = [p]
        elif glob.has_magic(source):
            files = [Path(f) for f in glob.glob(source) if Path(f).is_file()]
            if not files:
                raise CLIError(f"the glob {source!r} matches no file")
        else:
            raise CLIError(f"checkpoint path {source!r} does not exist")
        found += sorted(files, key=lambda f: _natural(f.name))
    unique = list(dict.fromkeys(f.resolve() for f in found))
    return [Path(f) for f in unique]


def order_checkpoints(found: Sequence[Checkpoint]) -> tuple[list[Checkpoint], list[str]]:
    """``found`` in global-step order, every one with a step and an epoch; and notes for the user.

    A file without a global step (a plain ``state_dict`` without ``step=N`` in its name) is put
    at step 0 if it is the only one (the weights before training, e.g. ``init.pt``); when no file
    has a step, they are numbered 0, 1, 2, ... in name order. An unknown epoch is the previous
    checkpoint's (0 for the first). Of several files at one step (``last.ckpt`` next to
    ``epoch=2-step=12.ckpt``) the first by name is kept.

    Raises:
        CLIError: if several files lack a step while others have one (their order is unknown).
    """
    notes: list[str] = []
    stepless = [c for c in found if c.step is None]
    if stepless and len(stepless) == len(found):
        by_name = sorted(found, key=lambda c: _natural(c.path.name))
        found = [Checkpoint(c.path, i, c.epoch, c.lightning) for i, c in enumerate(by_name)]
        notes.append(
            "no checkpoint has a global step (in the file or as step=N in its name); replaying "
            f"them in name order at steps 0..{len(found) - 1}"
        )
    elif len(stepless) > 1:
        shown = ", ".join(c.path.name for c in stepless[:4])
        raise CLIError(
            f"{len(stepless)} checkpoints have no global step ({shown}) while others do, so "
            "their order is unknown; rename them with step=N in the name"
        )
    elif stepless:
        (c,) = stepless
        found = [Checkpoint(c.path, 0, c.epoch, c.lightning) if x is c else x for x in found]
        notes.append(f"{c.path.name} has no global step; replayed at step 0 (before training)")
    ordered: list[Checkpoint] = []
    for c in sorted(found, key=lambda c: (c.step, _natural(c.path.name))):
        if ordered and ordered[-1].step == c.step:
            notes.append(
                f"skipping {c.path.name}: same global step {c.step} as {ordered[-1].path.name}"
            )
            continue
        epoch = c.epoch if c.epoch is not None else (ordered[-1].epoch if ordered else 0)
        ordered.append(Checkpoint(c.path, c.step, epoch, c.lightning))
    return ordered, notes


# ---------------------------------------------------------------------- setup
def _output_folder(output: Path, overwrite: bool) -> Path:
    if output.exists() and not output.is_dir():
        raise CLIError(f"-o {str(output)!r} is a file; give a folder to write the run into")
    if (output / "events.jsonl").exists():
        if not overwrite:
            raise CLIError(
                f"{str(output)!r} already holds featurewatch output (events.jsonl); choose "
                "another folder or pass --overwrite"
            )
        for name in ("events.jsonl", "index.html"):
            (output / name).unlink(missing_ok=True)
        shutil.rmtree(output / "images", ignore_errors=True)
    if not output.parent.resolve().is_dir():
        raise CLIError(f"cannot write {str(output)!r}: its folder does not exist")
    return output


def _check_fits(model: torch.nn.Module, images: torch.Tensor, source: str) -> None:
    try:
        with torch.no_grad():
            model(images[:2])
    except Exception as err:
        raise CLIError(
            f"--probe {source!r}: the model cannot take its images {tuple(images.shape)}: "
            f"{str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}"
        ) from err


def _layers(model: torch.nn.Module, given: Sequence[str] | None, images: torch.Tensor) -> list[str]:
    from featurewatch.core.inspect import activation_maps
    from featurewatch.core.layers import list_layers, parse_layer, resolve_layer

    if given:
        for layer in given:
            try:
                parse_layer(layer)
                resolve_layer(model, layer)
            except ValueError as err:
                raise CLIError(f"--layers {layer!r}: {err}") from err
        return list(given)
    convs = list_layers(model, kinds=("conv",))
    if not convs:
        raise CLIError(
            f"{type(model).__name__} has no conv layer to pick by default; pass --layers (e.g. "
            f"{', '.join(list_layers(model)[:8]) or 'names from model.named_modules()'})"
        )
    with torch.no_grad():
        maps = activation_maps(model, images[:1], convs)
    spatial = [c for c in convs if maps[c].dim() == 4 and maps[c].shape[-2:].numel() > 1]
    convs = spatial or convs
    if len(convs) <= _DEFAULT_LAYERS:
        return convs
    picks = sorted(
        {round(i * (len(convs) - 1) / (_DEFAULT_LAYERS - 1)) for i in range(_DEFAULT_LAYERS)}
    )
    return [convs[i] for i in picks]


def _factories(
    layers: list[str],
    images: torch.Tensor,
    labels: torch.Tensor | None,
    norm: tuple[list[float], list[float]] | None,
    steps: int,
) -> dict[str, Callable[[], Any]]:
    from featurewatch import callbacks as fc

    render: dict[str, Any] = {"steps": steps, "normalize": norm if norm is not None else "data"}
    shown = images[:_SHOWN]
    target: Any = labels[:_SHOWN].tolist() if labels is not None else "predicted"
    return {
        "channels": lambda: fc.ChannelVisualization(layers, **render),
        "classes": lambda: fc.ClassModelVisualization(**render),
        "filters": lambda: fc.FilterWeights(),
        "activations": lambda: fc.ActivationGrid(layers, probe=shown),
        "attribution": lambda: fc.AttributionMaps(probe=shown, target=target),
        "examples": lambda: fc.DatasetExamples(layers, pool=images),
        "drift": lambda: fc.FeatureDrift(layers, probe=images),
    }


def _setup(
    model: torch.nn.Module,
    chosen: Sequence[str] | None,
    layers: list[str],
    probe: tuple[torch.Tensor, torch.Tensor | None],
    norm: tuple[list[float], list[float]] | None,
    steps: int,
    sink: Any,
) -> list[Any]:
    """The callbacks, each checked against the model and the probe (their own checks, through
    ``replay_setup``) and writing to ``sink``.

    A callback the user named that does not fit is an error; one of the default set (all) is left
    out with a note (e.g. class images of a model that does not return class scores).
    """
    images, labels = probe
    factories = _factories(layers, images, labels, norm, steps)
    names = list(dict.fromkeys(chosen)) if chosen else list(CALLBACKS)
    kept = []
    for name in names:
        try:
            cb = factories[name]()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cb.replay_setup(model, images, [sink])
        except (ValueError, TypeError, RuntimeError) as err:
            text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            if chosen:
                raise CLIError(f"--callbacks {name}: {text}") from err
            print(f"featurewatch: note: leaving out {name}: {text}", file=sys.stderr)
            continue
        kept.append(cb)
    if not kept:
        raise CLIError("none of the callbacks fits this model and probe (see the notes above)")
    return kept
