"""Load a network from a checkpoint for the command line: ``--model MODULE:NAME`` + a file.

``NAME`` is either a ``LightningModule`` subclass or a factory, any callable returning an
``nn.Module``. The file is a Lightning ``.ckpt`` (a LightningModule class loads it with
``load_from_checkpoint``; a factory's module gets its ``state_dict``) or a plain ``state_dict``
(``torch.save(model.state_dict(), ...)``; loaded into ``NAME()``, class or factory). Everything is
loaded on the CPU with ``weights_only=True``. ``MODULE`` is imported as Python would, with the
current folder on the path first, so ``--model train:Net`` finds ``./train.py``. Every failure a
user can fix is a :class:`CLIError` that says what was expected and what came.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from featurewatch.cli.common import CLIError

__all__ = ["Checkpoint", "image_channels", "load_model", "read_checkpoint", "resolve_spec"]


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint file and where in training it was taken.

    Attributes:
        path: the file.
        step: the global step: a Lightning checkpoint's ``global_step``, else ``step=N`` (or
            ``stepN``, ``step_N``) in the file name, else ``None``.
        epoch: a Lightning checkpoint's ``epoch``, else ``epoch=N`` in the name, else ``None``.
        lightning: whether the file is a Lightning checkpoint (it has a ``state_dict`` entry).
    """

    path: Path
    step: int | None
    epoch: int | None
    lightning: bool


def resolve_spec(spec: str) -> Any:
    """The object ``MODULE:NAME`` names (``NAME`` may be dotted: ``pkg.mod:Outer.Inner``)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise CLIError(
            f"--model {spec!r}: expected MODULE:NAME, e.g. 'train_digits:DigitsNet' (a "
            "LightningModule class) or 'mynets:make_model' (a function returning an nn.Module)"
        )
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise CLIError(f"--model {spec!r}: cannot import {module_name!r}: {err}") from err
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n in dir(module) if not n.startswith("_"))[:12]
            raise CLIError(
                f"--model {spec!r}: module {module_name!r} has no {attr!r} "
                f"(it has: {', '.join(public) or 'nothing public'})"
            )
        obj = getattr(obj, part)
    return obj


def _load(path: Path, *, mmap: bool = False) -> Any:
    if not path.is_file():
        raise CLIError(f"checkpoint {str(path)!r} does not exist (or is not a file)")
    try:
        if mmap:  # only the metadata is wanted: tensors stay on disk
            try:
                return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # an old (non-zip) file cannot be memory-mapped
                pass
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        raise CLIError(
            f"cannot read checkpoint {str(path)!r} (expected a Lightning .ckpt or a "
            f"torch.save'd state_dict): {_first_line(err)}"
        ) from err


def _number(name: str, key: str) -> int | None:
    found = re.search(rf"{key}[=_-]?(\d+)", name)
    return int(found.group(1)) if found else None


def read_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Where ``path`` was taken in training (see :class:`Checkpoint`); the file is read once."""
    p = Path(path)
    state = _load(p, mmap=True)
    lightning = isinstance(state, dict) and isinstance(state.get("state_dict"), dict)
    step = epoch = None
    if lightning:
        step, epoch = state.get("global_step"), state.get("epoch")
    step = int(step) if isinstance(step, int) else _number(p.name, "step")
    epoch = int(epoch) if isinstance(epoch, int) else _number(p.name, "epoch")
    return Checkpoint(p, step, epoch, lightning)


def load_model(spec: str, checkpoint: str | os.PathLike[str]) -> nn.Module:
    """The network of ``checkpoint``, built as ``spec`` says, on the CPU, in eval mode."""
    path = Path(checkpoint)
    if not path.is_file():
        raise CLIError(f"checkpoint {str(path)!r} does not exist (or is not a file)")
    target = resolve_spec(spec)
    import pytorch_lightning as pl

    is_lightning_class = isinstance(target, type) and issubclass(target, pl.LightningModule)
    state = _load(path)
    if is_lightning_class and isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        try:
            model = target.load_from_checkpoint(str(path), map_location="cpu", weights_only=True)
        except Exception as err:
            raise CLIError(
                f"checkpoint {str(path)!r} does not load into {spec}: {_first_line(err)}"
            ) from err
        return model.eval()
    if not callable(target):
        raise CLIError(
            f"--model {spec!r} is a {type(target).__name__}; expected a LightningModule class "
            "or a function returning an nn.Module"
        )
    try:
        model = target()
    except Exception as err:
        raise CLIError(
            f"--model {spec!r}: calling {spec.partition(':')[2]}() to build the model for the "
            f"state_dict in {str(path)!r} failed: {_first_line(err)}"
        ) from err
    if not isinstance(model, nn.Module):
        raise CLIError(f"--model {spec!r} returned a {type(model).__name__}, not an nn.Module")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CLIError(
            f"checkpoint {str(path)!r} holds a {type(state).__name__} that is not a state_dict "
            "(expected a Lightning .ckpt or torch.save(model.state_dict(), path))"
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CLIError(
            f"checkpoint {str(path)!r} does not match {spec}: {_first_line(err)}"
        ) from err
    return model.eval()


def image_channels(model: nn.Module) -> int:
    """The input channels of the model's first ``nn.Conv2d`` (the one that sees the pixels)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return int(module.in_channels)
    raise CLIError(
        f"{type(model).__name__} has no nn.Conv2d: featurewatch's pictures are of image models"
    )


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    text = " ".join(lines[:2]) if lines else type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."
