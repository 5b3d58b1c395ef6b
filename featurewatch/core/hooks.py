"""Temporary module hooks: every hook of the core is placed here and removed in a ``finally``.

Three mechanisms, each written once:

* :func:`forward_hooks` - observe modules during the forward passes run inside a ``with`` block
  (layer capture, call counting, the layer scans of CAM);
* :func:`substitute_outputs` - *replace* what modules return, as a function of their input, during
  the forward passes run inside a ``with`` block: the ReLU-gradient redirect of
  :func:`~featurewatch.core.render.render`, the guided-backprop and deconvnet rules of
  :func:`~featurewatch.core.projection.project` and the pass-through activations of
  :func:`~featurewatch.core.receptive_field.receptive_fields` (Captum's
  ``ModifiedReluGradientAttribution`` and Lucid's ``overrides`` do the same, one place each);
* :class:`Observer` - a Python function that long-lived hooks (the per-step statistics of
  :class:`~featurewatch.core.stats.ChannelStatsRecorder`) call on a tensor, which a
  ``torch.compile``-d forward runs *as is*, at run time, instead of tracing it.

Why :class:`Observer` exists: a hook registered on a submodule of a compiled model is traced into
the user's graph with guards on every piece of Python state it reads (counters, dictionaries,
flags). A hook that updates running statistics changes that state at every step, so each step
failed a guard and recompiled ``training_step`` (6 recompilations in 6 steps of a small CNN),
until Dynamo's recompile limit made it give up and run the step eagerly: the user's compiled
training silently stopped being compiled. A custom operator is opaque to Dynamo: the hook's body
becomes one node of the graph, whose Python implementation runs with the real tensor at that point
of the forward. The graph is then traced once with the hooks and never again.

In-place modules (``nn.ReLU(inplace=True)``) are the trap of output replacement (pytorch 61519,
captum 973): the module would overwrite its input, which the replacement needs. The substitution
hands such a module a clone of its input and keeps the original, so the replacement always sees
the pre-activation, and the graph of the layer before stays valid.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

__all__ = ["Observer", "forward_hooks", "substitute_outputs"]

#: ``replace(module, input) -> output``: what a substituted module returns for its first argument.
Replacement = Callable[[nn.Module, torch.Tensor], Any]


@contextmanager
def forward_hooks(pairs: Iterable[tuple[nn.Module, Callable[..., Any]]]) -> Iterator[None]:
    """Register ``module.register_forward_hook(fn)`` for every pair while the block runs.

    Every handle is removed in a ``finally``, so an exception in the model (or in a hook) cannot
    leave one behind.

    Example:
        >>> with forward_hooks([(model.fc, lambda m, i, o: seen.append(o.shape))]):
        ...     model(x)
    """
    handles = []
    try:
        for module, fn in pairs:
            handles.append(module.register_forward_hook(fn))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def substitute_outputs(modules: Sequence[nn.Module], replace: Replacement) -> Iterator[None]:
    """While active, each of ``modules`` returns ``replace(module, input)`` instead of its output.

    A forward pre-hook keeps the module's input (its first positional argument) and hands an
    in-place module (``inplace=True``) a clone, so the kept input survives the module; a forward
    hook, *prepended* so that a capture hooked on the module itself (:func:`~featurewatch.core.
    layers.capture`) sees the replaced output, returns ``replace(module, kept input)``. Pre- and
    post-hook of one call are adjacent, so a module called several times in one forward (the ReLU of
    a torchvision ResNet block) is handled call by call. A call whose first argument is not a
    tensor, and ``F.relu``-style functional calls (no module to hook), are left alone.

    For an in-place module the kept input is the very tensor the caller passed, which the module
    was meant to overwrite; ``replace`` may return it as is (an identity) or a new tensor.

    Args:
        modules: the modules to substitute (each at most once).
        replace: ``(module, input) -> output``; may count calls or read per-module settings.

    Example:
        >>> relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
        >>> with substitute_outputs(relus, lambda m, x: x.clamp_min(0) * 2):
        ...     model(x)  # every nn.ReLU module doubles its output
    """
    kept: dict[int, torch.Tensor] = {}

    def pre(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if not args or not isinstance(args[0], torch.Tensor):
            return None
        kept[id(module)] = args[0]
        if getattr(module, "inplace", False):
            return (args[0].clone(), *args[1:])
        return None

    def post(module: nn.Module, args: tuple[Any, ...], out: Any) -> Any:
        x = kept.pop(id(module), None)
        return None if x is None else replace(module, x)

    handles = []
    try:
        for m in modules:
            handles.append(m.register_forward_pre_hook(pre))
            handles.append(m.register_forward_hook(post, prepend=True))
        yield
    finally:
        for h in handles:
            h.remove()
        kept.clear()


#: What each live :class:`Observer` runs, by key (the operator below only carries an int).
_OBSERVERS: dict[int, Callable[[Any], None]] = {}
_KEYS = itertools.count()
#: Mutated (nominally) by every observer call: the compiler keeps the calls and their order.
_ORDER = torch.zeros(1)


@torch.library.custom_op(
    "featurewatch::observe",
    mutates_args=("order",),
    schema="(int key, Tensor(a!) order, Tensor? value) -> ()",
)
def _observe(key: int, order: torch.Tensor, value: torch.Tensor | None) -> None:
    fn = _OBSERVERS.get(key)
    if fn is not None:  # released while a compiled graph still holds the call: nothing to do
        fn(value)


@_observe.register_fake
def _observe_fake(key: int, order: torch.Tensor, value: torch.Tensor | None) -> None:
    return None


class Observer:
    """Calls ``fn(tensor)`` from a hook, in eager forwards and, opaquely, in compiled ones.

    In an eager forward, calling the observer calls ``fn`` directly. While ``torch.compile``
    traces a forward, it records one call of the ``featurewatch::observe`` operator instead, which
    runs ``fn`` with the detached tensor when the compiled graph runs: ``fn`` may read and update
    any Python state without a guard or a graph break. The value must not be needed by the graph
    (``fn`` returns nothing) and ``fn`` must not change the tensor.

    Call :meth:`release` when the hook is removed (a compiled graph that still holds the call then
    does nothing).

    Example:
        >>> seen = Observer(lambda t: counts.append(int((t > 0).sum())))
        >>> handle = relu.register_forward_hook(lambda m, i, out: seen(out))
        >>> ...; handle.remove(); seen.release()
    """

    def __init__(self, fn: Callable[[Any], None]) -> None:
        self.key = next(_KEYS)
        self.fn = fn
        _OBSERVERS[self.key] = fn

    def __call__(self, value: Any = None) -> None:
        if torch.compiler.is_compiling():
            # the operator carries tensors only; anything else reaches ``fn`` as None
            tensor = value.detach() if isinstance(value, torch.Tensor) else None
            torch.ops.featurewatch.observe(self.key, _ORDER, tensor)
        else:
            self.fn(value)

    def release(self) -> None:
        """Forget ``fn`` (idempotent)."""
        _OBSERVERS.pop(self.key, None)
