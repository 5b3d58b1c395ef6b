"""Truncated forwards: how often a forward calls each layer's module, and reading layers on the way.

A layer reference without ``@k`` means the *last* call of its module
(:mod:`featurewatch.core.layers`), and a forward can only stop right after the deepest layer a
caller needs once it is known which call that is. So every method that reads layers of a model
(dataset examples, receptive fields, projections, the render loop) first counts the calls in one
single-image forward, and then runs its real forwards truncated after the deepest layer:

* :func:`counted_forward` - run a probe forward that may fail (a head that wants another input size)
  and count the calls of named modules; the failure is handed back, so the caller decides whether
  it matters (it does only if a layer it needs was not reached);
* :func:`count_calls` / :func:`resolve_call_counts` / :func:`layer_call_counts` - the counts for a
  set of layer references (computed once per input shape, reusable as ``call_counts``);
* :func:`layers_reader` / :func:`layer_reader` - ``read(x)`` returning the outputs of the layers
  for ``x``, the forward stopped right after the deepest of them.

Example:
    >>> counts = layer_call_counts(model, pool[:1], ["layer1.0.relu", "layer2"])
    >>> refs = [parse_layer("layer1.0.relu")]
    >>> with layers_reader(model, refs, counts) as read:
    ...     outputs = read(pool)     # {"layer1.0.relu": tensor}, nothing after it ran
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import torch
from torch import nn

from featurewatch.core.hygiene import isolated, model_device_dtype
from featurewatch.core.layers import (
    LayerNotReachedError,
    LayerRef,
    StopForward,
    capture,
    module_calls,
    not_reached_message,
    parse_layer,
    resolve_layer,
)
from featurewatch.core.validation import check_images

__all__ = [
    "Forward",
    "count_calls",
    "counted_forward",
    "layer_call_counts",
    "layer_reader",
    "layers_reader",
    "resolve_call_counts",
]

#: A forward pass: the model itself, or a stand-in (``functional_call`` with other parameters).
Forward = Callable[[torch.Tensor], Any]


def counted_forward(
    model: nn.Module, run: Callable[[], Any], names: Sequence[str]
) -> tuple[dict[str, int], Exception | None]:
    """Run ``run()`` once, counting the calls of the named modules, and catch what it raises.

    A probe forward may fail after every layer a caller needs was reached (a classifier head that
    wants the training input size, on a larger image): that failure does not matter to the caller,
    one before a needed layer does. So the exception is returned, not raised, with the counts
    (up to the failure) for the caller to judge.

    Returns:
        ``({module name: calls}, the exception raised by run() or None)``.
    """
    failure: Exception | None = None

    def probe() -> None:
        nonlocal failure
        try:
            run()
        except Exception as err:  # noqa: BLE001 - judged by the caller: fine if its layers ran
            failure = err

    return module_calls(model, probe, list(names)), failure


def count_calls(
    forward: Forward, model: nn.Module, example: torch.Tensor, names: Sequence[str]
) -> dict[str, int]:
    """How often one forward of ``example[:1]`` calls each named module (``forward`` runs it: the
    model, or a stand-in such as a ``functional_call``).

    If the model fails after every named module was reached (a head that wants another input
    size), the count up to there is used; if it fails before one of them, the failure is raised.
    """
    with torch.no_grad():
        counts, failure = counted_forward(model, lambda: forward(example[:1]), names)
    if failure is not None and any(counts[n] == 0 for n in names):
        raise failure
    return counts


def resolve_call_counts(
    forward: Forward,
    model: nn.Module,
    refs: Sequence[LayerRef],
    example: torch.Tensor,
    known: Mapping[str, int] | None = None,
) -> dict[str, int] | None:
    """Calls per forward of every module a reference without ``@k`` names (to find its *last*
    call), or ``None`` when every reference names its call and no counting is needed.

    Counts in ``known`` (from :func:`layer_call_counts`) are used as they are; only the missing
    ones cost a single-image counting forward.

    Raises:
        ValueError: a referenced module is not called by the forward pass.
    """
    names = sorted({r.name for r in refs if r.call is None})
    if not names:
        return None
    counts = {n: int(known[n]) for n in names if known is not None and n in known}
    missing = [n for n in names if n not in counts]
    if missing:
        counts.update(count_calls(forward, model, example, missing))
    for ref in refs:
        if ref.call is None and counts[ref.name] == 0:
            raise ValueError(f"layer {str(ref)!r} is not called in the model's forward pass")
    return counts


def layer_call_counts(
    model: nn.Module, example: torch.Tensor, layers: Sequence[str]
) -> dict[str, int]:
    """How often one forward pass calls the module of each layer reference (keyed by module name).

    The dataset-example functions (:func:`~featurewatch.core.examples.top_examples`,
    :func:`~featurewatch.core.receptive_field.receptive_fields`,
    :func:`~featurewatch.core.projection.project`) need it for references without ``@k`` (they
    mean the module's *last* call) and otherwise run one untruncated single-image forward to find
    it; compute it once per input shape and pass it as ``call_counts`` to skip those forwards. A
    module that is never called counts 0 (the functions then raise for that layer).

    Args:
        model: the network (left exactly as it was).
        example: ``(N, C, H, W)`` input; only ``example[:1]`` is run.
        layers: layer references (``"features.6"``, ``"layer1.0.relu@1"``).

    Returns:
        ``{module name: calls per forward}``.

    Raises:
        ValueError: unknown layer. The model's own exception if it fails before a layer is reached.

    Example:
        >>> counts = layer_call_counts(model, pool[:1], ["layer1.0.relu", "layer2"])
        >>> counts
        {'layer1.0.relu': 2, 'layer2': 1}
    """
    check_images("example", example)
    refs = [parse_layer(la) for la in layers]
    for ref in refs:
        resolve_layer(model, ref)
    names = sorted({r.name for r in refs})
    with isolated(model):
        device, dtype = model_device_dtype(model)
        return count_calls(model, model, example[:1].to(device=device, dtype=dtype), names)


@contextmanager
def layers_reader(
    model: nn.Module,
    refs: Sequence[LayerRef],
    counts: dict[str, int] | None,
    forward: Forward | None = None,
) -> Iterator[Callable[[torch.Tensor], dict[str, torch.Tensor]]]:
    """Yield ``read(x)``: ``{str(ref): output}`` for ``x``; the forward stops right after the
    deepest layer, so each module up to there runs once per ``read`` and none after it.

    One layer is not cloned (nothing runs after the capture, so a later in-place op cannot
    overwrite it, and the autograd graph is kept for
    :func:`~featurewatch.core.projection.project`); several are (a later
    in-place op, ``ReLU(inplace=True)`` after a conv, would change an earlier capture).
    """
    run = forward if forward is not None else model
    with capture(model, list(refs), call_counts=counts, stop=True, clone=len(refs) > 1) as got:

        def read(x: torch.Tensor) -> dict[str, torch.Tensor]:
            with suppress(StopForward):
                run(x)
            outs: dict[str, torch.Tensor] = {}
            for ref in refs:
                out = got.outputs.get(str(ref))
                if out is None:
                    raise LayerNotReachedError(not_reached_message(ref, got.calls.get(ref.name, 0)))
                if not isinstance(out, torch.Tensor):
                    raise TypeError(
                        f"layer {str(ref)!r} outputs {type(out).__name__}, not a tensor"
                    )
                outs[str(ref)] = out
            return outs

        yield read


@contextmanager
def layer_reader(
    model: nn.Module, ref: LayerRef, counts: dict[str, int] | None, forward: Forward | None = None
) -> Iterator[Callable[[torch.Tensor], torch.Tensor]]:
    """:func:`layers_reader` for one layer: ``read(x)`` returns its output."""
    with layers_reader(model, [ref], counts, forward) as read_all:
        yield lambda x: read_all(x)[str(ref)]
