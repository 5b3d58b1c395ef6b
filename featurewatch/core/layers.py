"""Addressing layers by name and capturing their outputs with hooks that never outlive a call.

A *layer reference* is a name from ``model.named_modules()`` (``"features.3"``,
``"layer1.0.relu"``), optionally followed by ``@k`` to pick the k-th call of a module that
``forward`` calls several times (torchvision's ResNet blocks call one ``relu`` module twice:
``"layer1.0.relu@0"`` is the ReLU after ``bn1``, ``"layer1.0.relu@1"`` the one after the residual
sum). Without ``@k`` the *last* call is meant, i.e. the module's final output in the forward pass.

Every hook is registered inside a context manager whose ``finally`` removes it, so an exception in
the user's model or in our own code cannot leave a hook behind.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from featurewatch.core.hooks import forward_hooks

__all__ = [
    "ACTIVATION_TYPES",
    "CONV_TYPES",
    "LayerNotReachedError",
    "LayerRef",
    "StopForward",
    "capture",
    "find_first_conv",
    "list_layers",
    "module_calls",
    "not_reached_message",
    "parse_layer",
    "resolve_layer",
]

CONV_TYPES: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
#: Modules whose output a user usually means by "the activations of a layer".
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardtanh,
    nn.Softplus,
    nn.Tanh,
    nn.Sigmoid,
)


class StopForward(Exception):
    """Raised from a forward hook once every output a caller needs has been captured.

    Stopping there skips the rest of the network: a render of ``layer1`` of a ResNet never pays
    for ``layer2``-``layer4`` and the classifier.
    """


@dataclass(frozen=True)
class LayerRef:
    """A parsed layer reference: module name plus which of its calls (``None`` = last)."""

    name: str
    call: int | None = None

    def __str__(self) -> str:
        return self.name if self.call is None else f"{self.name}@{self.call}"


def parse_layer(ref: str | LayerRef) -> LayerRef:
    """Split ``"name@k"`` into a :class:`LayerRef`.

    Raises:
        TypeError: if ``ref`` is not a string.
        ValueError: if the ``@k`` suffix is not a non-negative integer.
    """
    if isinstance(ref, LayerRef):
        return ref
    if not isinstance(ref, str):
        raise TypeError(
            f"a layer is named by a string from model.named_modules(), got {type(ref).__name__}"
        )
    name, sep, call = ref.rpartition("@")
    if not sep:
        return LayerRef(ref)
    if not call.isdigit():
        raise ValueError(
            f"layer reference {ref!r}: the part after '@' must be a call index such as "
            f"'{name}@0', got {call!r}"
        )
    return LayerRef(name, int(call))


def _kind(module: nn.Module) -> str | None:
    if isinstance(module, CONV_TYPES):
        return "conv"
    if isinstance(module, ACTIVATION_TYPES):
        return "activation"
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return "norm"
    return None


def list_layers(model: nn.Module, kinds: Sequence[str] = ("conv", "activation")) -> list[str]:
    """Names of the submodules of the given kinds, in registration order.

    Args:
        model: any ``nn.Module``.
        kinds: subset of ``"conv"``, ``"activation"``, ``"linear"``, ``"norm"``.
    """
    return [name for name, m in model.named_modules() if name and _kind(m) in kinds]


def _unknown_layer_message(model: nn.Module, name: str) -> str:
    names = [n for n, _ in model.named_modules() if n]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    useful, what = list_layers(model), "conv/activation layers"
    if not useful:  # e.g. an MLP: list what it has
        useful, what = list_layers(model, kinds=("linear", "norm")) or names, "layers"
    shown = ", ".join(useful[:40]) + (f", ... ({len(useful)} in all)" if len(useful) > 40 else "")
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return (
        f"layer {name!r} not found in {type(model).__name__}{hint} "
        f"({what}: {shown or 'none'}; names come from model.named_modules())"
    )


def resolve_layer(model: nn.Module, ref: str | LayerRef) -> nn.Module:
    """Return the submodule a layer reference names.

    Raises:
        ValueError: if no such submodule exists; the message names the closest matches and the
            available conv/activation layers.
    """
    layer = parse_layer(ref)
    if layer.name == "":
        return model
    try:
        return model.get_submodule(layer.name)
    except AttributeError:
        raise ValueError(_unknown_layer_message(model, layer.name)) from None


def find_first_conv(model: nn.Module) -> str:
    """Name of the first convolution registered in ``model`` (the one that sees the pixels).

    Raises:
        ValueError: if the model has no convolution.
    """
    for name, module in model.named_modules():
        if isinstance(module, CONV_TYPES):
            return name
    raise ValueError(f"{type(model).__name__} has no convolution layer; name one explicitly")


def module_calls(model: nn.Module, run: Callable[[], Any], names: Sequence[str]) -> dict[str, int]:
    """Count how often ``run()`` calls each named module (to resolve "last call" references)."""
    counts = dict.fromkeys(names, 0)

    def make(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _i: Any, _o: Any) -> None:
            counts[name] += 1

        return hook

    with forward_hooks([(model.get_submodule(n) if n else model, make(n)) for n in names]):
        run()
    return counts


class LayerNotReachedError(KeyError, ValueError):
    """A layer reference that the forward pass did not produce (a ``KeyError`` and a
    ``ValueError``)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def not_reached_message(ref: str | LayerRef, calls: int) -> str:
    """Why ``ref`` got no output from a forward in which its module ran ``calls`` times.

    Tells a module that never runs (not used by ``forward``, or bypassed by compiled code) from a
    ``"name@k"`` past the module's last call, and names the valid references.
    """
    ref = parse_layer(ref)
    if calls == 0:
        return (
            f"layer {ref.name!r} is not run by the forward pass; is it called by `forward`? (or "
            "does compiled or scripted code bypass its module hooks?)"
        )
    valid = f"'{ref.name}@0'" if calls == 1 else f"'{ref.name}@0' .. '{ref.name}@{calls - 1}'"
    return (
        f"layer {ref.name!r} runs {calls} time{'s' if calls > 1 else ''} per forward, so "
        f"{str(ref)!r} does not exist; valid: {valid}, or {ref.name!r}"
    )


@dataclass
class Captured:
    """Outputs captured during one forward pass, keyed by the layer reference string."""

    outputs: dict[str, torch.Tensor] = field(default_factory=dict)
    complete: bool = False
    calls: dict[str, int] = field(
        default_factory=dict
    )  # calls of each hooked module in the last forward

    def __getitem__(self, ref: str | LayerRef) -> torch.Tensor:
        parsed = parse_layer(ref)
        try:
            return self.outputs[str(parsed)]
        except KeyError:
            raise LayerNotReachedError(
                not_reached_message(parsed, self.calls.get(parsed.name, 0))
            ) from None


@contextmanager
def capture(
    model: nn.Module,
    layers: Sequence[str | LayerRef],
    *,
    call_counts: dict[str, int] | None = None,
    stop: bool = False,
    clone: bool = True,
) -> Iterator[Captured]:
    """Capture the outputs of ``layers`` during forward passes run inside the ``with`` block.

    Args:
        model: the network.
        layers: layer references (``"name"`` or ``"name@k"``).
        call_counts: how often each module is called per forward (from :func:`module_calls`); needed
            to know which call is the last one for references without ``@k``. Without it, a
            reference without ``@k`` keeps the most recent call's output.
        stop: raise :class:`StopForward` as soon as every reference has been captured; run the
            forward as ``with suppress(StopForward): model(x)``.
        clone: clone each captured output so a later in-place op of the model (``out += x``,
            ``ReLU(inplace=True)``) cannot change what was captured. Keeps the autograd graph.

    Yields:
        A :class:`Captured` whose ``outputs`` are refilled by every forward pass.
    """
    refs = [parse_layer(r) for r in layers]
    for ref in refs:
        resolve_layer(model, ref)  # validate before any hook is placed
    if stop and call_counts is None and any(r.call is None for r in refs):
        raise ValueError(
            "capture(stop=True) needs `call_counts` (from module_calls) to know which call of a "
            "module is its last one; pass call_counts or name the call explicitly ('name@k')"
        )
    wanted: dict[str, dict[int | None, str]] = {}
    for ref in refs:
        wanted.setdefault(ref.name, {})[ref.call] = str(ref)
    result = Captured()
    seen = result.calls

    def make(name: str) -> Callable[..., None]:
        picks = wanted[name]
        last = None if call_counts is None else call_counts.get(name, 0) - 1

        def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
            k = seen.get(name, 0)
            seen[name] = k + 1
            targets = []
            if k in picks:
                targets.append(picks[k])
            if None in picks and (last is None or k == last):
                targets.append(picks[None])
            if not targets:
                return
            tensor = out[0] if isinstance(out, (tuple, list)) else out
            if clone and isinstance(tensor, torch.Tensor):
                tensor = tensor.clone()
            for key in targets:
                result.outputs[key] = tensor
            if stop and _all_done():
                result.complete = True
                raise StopForward

        return hook

    def _all_done() -> bool:
        return len(result.outputs) >= len(refs)

    modules = [(model.get_submodule(n) if n else model, make(n)) for n in wanted]

    def reset(_m: nn.Module, _inp: Any) -> None:
        seen.clear()
        result.outputs.clear()
        result.complete = False

    handles = [model.register_forward_pre_hook(reset)]
    try:
        with forward_hooks(modules):
            yield result
    finally:
        for h in handles:
            h.remove()
