"""Receptive fields: the input box a feature-map position can depend on, measured exactly.

Zeiler & Fergus (2014) show each dataset example with the patch of the input the unit can see.
Computing that patch from kernel sizes, strides and paddings breaks on every architecture that is
not a plain stack (residual sums, concatenations, dilations, ``F.interpolate``); here it is
*measured*: the bounding box of the support of the gradient of the unit with respect to the input,
under a stand-in forward in which nothing can hide a pixel (see :func:`receptive_fields`):

* stand-in parameters (``torch.func.functional_call``; the model's tensors are untouched) under
  which every unit is a positive function of its inputs;
* every elementwise activation module passing its input through
  (:func:`~featurewatch.core.hooks.substitute_outputs`);
* every max-pool module passing gradient to its whole window.

On 1-D signals (a ``Conv1d`` net over ``(N, C, L)`` inputs) the same measurement gives an
interval of samples: :func:`receptive_intervals`.

Example:
    >>> receptive_fields(small_cnn, "features.6", (1, 16, 16), [(0, 0), (3, 3)])
    [(0, 0, 5, 5), (3, 3, 11, 11)]
    >>> receptive_intervals(signal_net, "features.6", (1, 64), [0, 31])
    [(0, 8), (56, 64)]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from featurewatch.core.batching import BACKWARD_PIXELS, bounded_batch
from featurewatch.core.calls import layer_reader, resolve_call_counts
from featurewatch.core.hooks import forward_hooks, substitute_outputs
from featurewatch.core.hygiene import isolated, model_device_dtype
from featurewatch.core.layers import ACTIVATION_TYPES, parse_layer, resolve_layer
from featurewatch.core.units import unit_values
from featurewatch.core.validation import check_int, is_int

__all__ = ["Box", "Interval", "receptive_field", "receptive_fields", "receptive_intervals"]

#: ``(top, left, bottom, right)`` in input pixels; ``bottom``/``right`` exclusive, so
#: ``image[..., top:bottom, left:right]`` is the patch.
Box = tuple[int, int, int, int]

#: ``(start, stop)`` in input samples of a 1-D signal, ``stop`` exclusive, so
#: ``signal[..., start:stop]`` is the part of the signal a unit can see.
Interval = tuple[int, int]


def _surrogate_state(model: nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Stand-in parameters and buffers under which every unit is a positive function of its inputs.

    Weights (``dim >= 2``) become ``1 / fan_in`` (each output an average: no overflow however
    deep), biases 0, other vectors (BatchNorm/LayerNorm scales, PReLU slopes) 1, BatchNorm running
    means 0 and variances 1. With a positive input, every pre-activation is then positive, so an
    ``F.relu`` never blocks, and every gradient is a sum of non-negative terms, so none cancels to
    zero. (Activation *modules* are bypassed altogether, see :func:`_activations_pass_through`:
    residual sums grow past any cap, and a saturated ``ReLU6`` would block.) The model's own
    tensors are not touched (``functional_call``).
    """
    state: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():
        if not p.is_floating_point():
            continue
        if p.dim() >= 2:
            fan_in = max(1, p[0].numel())
            state[name] = torch.full(p.shape, 1.0 / fan_in, dtype=dtype, device=p.device)
        elif name.rsplit(".", 1)[-1] == "bias":
            state[name] = torch.zeros(p.shape, dtype=dtype, device=p.device)
        else:
            state[name] = torch.ones(p.shape, dtype=dtype, device=p.device)
    for name, b in model.named_buffers():
        if b is None or not b.is_floating_point():
            continue
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "running_mean":
            state[name] = torch.zeros(b.shape, dtype=dtype, device=b.device)
        elif leaf == "running_var":
            state[name] = torch.ones(b.shape, dtype=dtype, device=b.device)
        else:
            state[name] = b.to(dtype)
    return state


_MAX_POOLS = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)


def _window_average(module: nn.Module, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor | None:
    """The average over each max-pool window (same windows as ``module``), or ``None``."""
    if getattr(module, "return_indices", False):
        return None
    if isinstance(module, nn.AdaptiveMaxPool1d):
        return F.adaptive_avg_pool1d(x, out.shape[-1])
    if isinstance(module, nn.AdaptiveMaxPool2d):
        return F.adaptive_avg_pool2d(x, (out.shape[-2], out.shape[-1]))
    if isinstance(module, nn.AdaptiveMaxPool3d):
        return F.adaptive_avg_pool3d(x, (out.shape[-3], out.shape[-2], out.shape[-1]))
    if not isinstance(module, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)):
        return None
    dilation = module.dilation
    if any(d != 1 for d in (dilation if isinstance(dilation, tuple) else (dilation,))):
        return None  # average pooling has no dilation: such a pool keeps its argmax-only gradient
    window: Any = (module.kernel_size, module.stride, module.padding, module.ceil_mode, True)
    if isinstance(module, nn.MaxPool1d):
        return F.avg_pool1d(x, *window)
    if isinstance(module, nn.MaxPool2d):
        return F.avg_pool2d(x, *window)
    return F.avg_pool3d(x, *window)


@contextmanager
def _whole_window_pools(model: nn.Module) -> Iterator[None]:
    """Let every ``nn.MaxPool*`` module pass gradient to its whole window, not just the argmax.

    The output *value* is unchanged (``out + (avg - avg.detach())``); the gradient gains the
    average pool's, which is positive on every pixel of each window.
    """

    def hook(module: nn.Module, args: tuple[Any, ...], out: Any) -> Any:
        if not isinstance(out, torch.Tensor) or not args or not isinstance(args[0], torch.Tensor):
            return None
        avg = _window_average(module, args[0], out)
        if avg is None or avg.shape != out.shape:
            return None
        return out + (avg - avg.detach())

    pools = [m for m in model.modules() if isinstance(m, _MAX_POOLS)]
    with forward_hooks([(m, hook) for m in pools]):
        yield


#: Elementwise activation modules: in the stand-in forward of :func:`receptive_fields` each passes
#: its input through unchanged (an elementwise function cannot widen or narrow a receptive field;
#: a saturating one - ReLU6, Hardtanh, Hardsigmoid, Sigmoid, Tanh far out - could only hide pixels).
_ELEMENTWISE_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    *ACTIVATION_TYPES,
    nn.Hardsigmoid,
    nn.Hardshrink,
    nn.Softshrink,
    nn.Softsign,
    nn.Tanhshrink,
    nn.Threshold,
    nn.LogSigmoid,
)


def _pass_through(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """An activation's stand-in output: its input (the very tensor for an in-place module, which
    aliases its input; a copy otherwise, which does not)."""
    return x if getattr(module, "inplace", False) else x.clone()


@contextmanager
def _activations_pass_through(model: nn.Module) -> Iterator[None]:
    """While active, every elementwise activation module returns its input unchanged.

    The receptive field depends only on connectivity; with the stand-in parameters every value is
    positive but residual sums double it block after block, so a ``ReLU6``/``Hardtanh`` would
    saturate (gradient 0) and hide every pixel. The outputs are replaced with
    :func:`~featurewatch.core.hooks.substitute_outputs` (in-place modules and modules called
    several times in one forward included).
    """
    modules = [m for m in model.modules() if isinstance(m, _ELEMENTWISE_ACTIVATIONS)]
    with substitute_outputs(modules, _pass_through):
        yield


def _shape3(input_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 4 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 3 or min(shape) < 1:
        hint = "; for 1-D signals (C, L) use receptive_intervals" if len(shape) == 2 else ""
        raise ValueError(f"`input_shape` must be (C, H, W), got {tuple(input_shape)!r}{hint}")
    return shape


def _shape2(input_shape: Sequence[int]) -> tuple[int, int]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(
            f"`input_shape` must be (C, L) of a 1-D signal, got {tuple(input_shape)!r}; for "
            "(C, H, W) images use receptive_fields"
        )
    return shape  # type: ignore[return-value]


def _time_units(layer: str, out: torch.Tensor, chunk: list[int | None]) -> torch.Tensor:
    """The ``(n,)`` units of a 1-D layer output ``(n, C, L)`` (summed over channels) at the times
    in ``chunk`` (``None`` only for a fully-connected ``(n, C)`` output)."""
    if out.dim() == 2:
        return unit_values(layer, out, None, chunk if any(t is not None for t in chunk) else None)
    if out.dim() != 3:
        raise ValueError(
            f"layer {layer!r} outputs shape {tuple(out.shape)} on 1-D signals; receptive "
            "intervals need an (N, C, L) or (N, C) output"
        )
    length = int(out.shape[2])
    for t in chunk:
        if t is None:
            raise ValueError(f"layer {layer!r} has {length} time positions: give a position t")
        if not 0 <= t < length:
            raise ValueError(
                f"position {t} outside the {length} time positions of layer {layer!r} "
                f"(valid: 0..{length - 1})"
            )
    return unit_values(layer, out.unsqueeze(2), None, [(0, t) for t in chunk])


def _time_position(value: Any) -> int | None:
    """A 1-D position: an int, a one-element ``(t,)`` sequence or tensor, or ``None``."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if not is_int(value):
        raise ValueError(f"a 1-D position must be an int t or (t,), got {value!r}")
    return int(value)


def receptive_intervals(
    model: nn.Module,
    layer: str,
    input_shape: Sequence[int],
    positions: Sequence[int | Sequence[int] | None],
    *,
    batch_size: int = 64,
    trials: int = 1,
    call_counts: Mapping[str, int] | None = None,
) -> list[Interval]:
    """The interval of input samples each time position of a 1-D layer can depend on, measured.

    The 1-D form of :func:`receptive_fields` (same method and limits): the first and last sample
    of the support of the unit's gradient (summed over channels) with respect to an ``(1, C, L)``
    input under the stand-in forward. For a stack of ``Conv1d``/``MaxPool1d``/``AvgPool1d`` of
    kernel ``k``, stride ``s``, padding ``p`` and dilation ``d`` that is the analytic interval
    (``[t * s - p, t * s - p + d * (k - 1) + 1)`` per layer, composed), clipped to ``[0, L)``: the
    zero padding does not exist, nothing else can influence the unit.

    Args:
        model: the network (left exactly as it was).
        layer: layer reference; output ``(N, C, L')`` (the positions are time indices ``t``) or
            ``(N, C)`` (position ``None``: the support of the whole layer).
        input_shape: ``(C, L)`` of the model's input signals.
        positions: per unit, its time index: an int, a ``(t,)`` (as in
            :attr:`TopExamples.positions <featurewatch.core.examples.TopExamples>`) or ``None``
            for a fully-connected layer.
        batch_size: the most positions per forward/backward, fewer for large inputs
            (:mod:`~featurewatch.core.batching`; half its bound: the inputs are float64).
        trials: random inputs whose supports are united (see :func:`receptive_fields`, Limits).
        call_counts: from :func:`layer_call_counts`, to skip the counting forward.

    Returns:
        One :data:`Interval` ``(start, stop)`` per position (``stop`` exclusive).

    Raises:
        ValueError: unknown layer, bad input shape, a position outside the layer's time axis (the
            message gives its length), or a unit that does not depend on the input.

    Example:
        >>> # Conv1d k5 p2, MaxPool1d(2), Conv1d k5 p2 over 64 samples: 14-sample intervals
        >>> receptive_intervals(signal_net, "features.6", (1, 64), [0, 10, 31])
        [(0, 8), (14, 28), (56, 64)]
    """
    shape = _shape2(input_shape)
    pos = [_time_position(p) for p in positions]
    supports = _supports(model, layer, shape, pos, _time_units, batch_size, trials, call_counts)
    return [_interval(str(parse_layer(layer)), s, p) for s, p in zip(supports, pos)]


def _interval(layer: str, support: torch.Tensor, position: int | None) -> Interval:
    where = torch.nonzero(support).flatten()
    if where.numel() == 0:
        raise ValueError(
            f"the unit of layer {layer!r} at position {position} does not depend on the input"
        )
    return (int(where[0]), int(where[-1]) + 1)


def receptive_fields(
    model: nn.Module,
    layer: str,
    input_shape: Sequence[int],
    positions: Sequence[tuple[int, int] | None],
    *,
    batch_size: int = 64,
    trials: int = 1,
    call_counts: Mapping[str, int] | None = None,
) -> list[Box]:
    """The input box each feature-map position of ``layer`` can depend on, measured exactly.

    **Method.** The box is the bounding box of the support of the gradient of the unit (summed over
    channels) with respect to the input. To make that support the *architectural* receptive field
    rather than whatever the current weights and a particular input happen to let through, the
    forward runs with stand-in parameters (``torch.func.functional_call``; the model's tensors are
    untouched): weights ``1/fan_in``, biases 0, normalization scales 1, BatchNorm statistics 0/1,
    on a random input in ``[0.5, 1.5]``; and every elementwise activation *module* (ReLU, ReLU6,
    Hardtanh, Hardswish, SiLU, GELU, Sigmoid, Tanh, ... and their in-place forms) passes its input
    through unchanged. Every value is then positive, so no ``F.relu`` blocks a gradient, no
    saturating activation (a ReLU6 after residual sums that grow past 6) zeroes one, and every
    gradient is a sum of non-negative terms, so nothing cancels; dead or zero filters of the real
    model do not shrink the box. Every ``nn.MaxPool*``/``nn.AdaptiveMaxPool*`` module also passes
    gradient to its whole window (an average-pool gradient over the same windows is added; values
    unchanged). All positions are batched: one forward and one backward per ``batch_size``
    positions.

    The stand-in forward runs in float64 (float32 on MPS, which has none): the gradient on the
    edge of a field is a product of about one ``1/k`` per ``k x k`` convolution on the longest
    path (``1/k**2`` at a corner): ``3**-90 = 1e-43`` after 90 3x3 convolutions, the bottom of
    float32's range (smallest subnormal ``1.4e-45``; DenseNet-201 has 98 on its longest path),
    while float64 reaches ``1e-308``. The callback computes each position once per run, so the
    extra cost does not recur.

    **Limits.** Padding: pixels of the zero padding do not exist, so boxes near the border are
    clipped to the image (that is the truth: nothing else can influence the unit). Functional
    activations that saturate (``F.relu6``, ``F.hardtanh``, ``torch.sigmoid`` far out) cannot be
    bypassed and can block. Functional max-pooling (``F.max_pool2d``) and dilated or
    index-returning max-pool modules pass gradient to the argmax only, so the box can come out too
    small; ``trials > 1`` takes the union over several random inputs. Layers that subtract
    data-dependent means (LayerNorm, GroupNorm) can make values negative, so an ``F.relu`` can
    block and gradients can cancel; again ``trials`` helps. Normalization with batch statistics or
    global operations (attention, global pooling) make every pixel count: the box is the whole
    image, which is correct.

    Args:
        model: the network (left exactly as it was).
        layer: layer reference; output ``(N, C, H, W)`` or ``(N, C)`` (then position ``None`` and
            the box is the support of the whole layer).
        input_shape: ``(C, H, W)`` of the model's input.
        positions: ``(y, x)`` in the feature map per unit (``None`` for a 2-D layer).
        batch_size: the most positions per forward/backward, fewer for large inputs
            (:mod:`~featurewatch.core.batching`; half its bound: the inputs are float64).
        trials: random inputs whose supports are united (see Limits).
        call_counts: from :func:`layer_call_counts`, to skip the counting forward.

    Returns:
        One :class:`Box` ``(top, left, bottom, right)`` per position (bottom/right exclusive).

    Raises:
        ValueError: unknown layer, bad input shape, a position outside the feature map (the
            message gives its size), or a unit that does not depend on the input at all.

    Example:
        >>> # conv 3x3 (pad 1), 2x2 max-pool, conv 3x3 (pad 1) on 16x16 inputs: 8x8 px fields
        >>> receptive_fields(small_cnn, "features.6", (1, 16, 16), [(0, 0), (3, 3)])
        [(0, 0, 5, 5), (3, 3, 11, 11)]
    """
    shape = _shape3(input_shape)
    pos = list(positions)

    def units(ref: str, out: torch.Tensor, chunk: list[Any]) -> torch.Tensor:
        return unit_values(ref, out, None, chunk)

    supports = _supports(model, layer, shape, pos, units, batch_size, trials, call_counts)
    return [_bounding_box(str(parse_layer(layer)), s, p) for s, p in zip(supports, pos)]


def _supports(
    model: nn.Module,
    layer: str,
    shape: tuple[int, ...],
    pos: list[Any],
    units_of: Callable[[str, torch.Tensor, list[Any]], torch.Tensor],
    batch_size: int,
    trials: int,
    call_counts: Mapping[str, int] | None,
) -> list[torch.Tensor]:
    """Per position, the boolean ``shape[1:]`` support of the unit's gradient with respect to the
    input under the stand-in forward (the method of :func:`receptive_fields`); ``units_of(layer,
    output, positions)`` reads the ``(n,)`` units of a batch out of the layer's output."""
    check_int("batch_size", batch_size)
    check_int("trials", trials)
    ref = parse_layer(layer)
    resolve_layer(model, ref)
    if not pos:
        return []
    with isolated(model):
        device, _ = model_device_dtype(model)
        dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
        state = _surrogate_state(model, dtype)

        def forward(x: torch.Tensor) -> Any:
            return functional_call(model, state, (x,))

        gen = torch.Generator().manual_seed(0)
        example = torch.ones(1, *shape, dtype=dtype, device=device)
        supports: list[torch.Tensor] = []
        # float64 stand-in inputs: twice the bytes of an image per position
        batch_size = bounded_batch(batch_size, shape, BACKWARD_PIXELS // 2)
        with _whole_window_pools(model), _activations_pass_through(model):
            counts = resolve_call_counts(forward, model, [ref], example, call_counts)
            with layer_reader(model, ref, counts, forward) as read:
                for lo in range(0, len(pos), batch_size):
                    chunk = pos[lo : lo + batch_size]
                    support = torch.zeros(len(chunk), *shape[1:], dtype=torch.bool)
                    for _ in range(trials):
                        x = (0.5 + torch.rand(len(chunk), *shape, generator=gen, dtype=dtype)).to(
                            device
                        )
                        x.requires_grad_(True)
                        out = read(x)
                        units = units_of(str(ref), out, chunk)
                        if not units.requires_grad:
                            raise ValueError(
                                f"the units of layer {str(ref)!r} do not depend on the "
                                "input through autograd (is its output detached or computed "
                                "without grad?)"
                            )
                        (g,) = torch.autograd.grad(units.sum(), x)
                        support |= (g.detach().abs().sum(1) > 0).cpu()
                    supports.extend(support)
    return supports


def _bounding_box(layer: str, support: torch.Tensor, position: tuple[int, int] | None) -> Box:
    rows = torch.nonzero(support.any(1)).flatten()
    cols = torch.nonzero(support.any(0)).flatten()
    if rows.numel() == 0:
        raise ValueError(
            f"the unit of layer {layer!r} at position {position} does not depend on the input"
        )
    return (int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)


def receptive_field(
    model: nn.Module,
    layer: str,
    input_shape: Sequence[int],
    position: tuple[int, int] | None = None,
) -> Box:
    """The input box ``(top, left, bottom, right)`` one unit can depend on.

    See :func:`receptive_fields` (method and limits); compute many positions there in one pass.

    Example:
        >>> receptive_field(small_cnn, "features.6", (1, 16, 16), (3, 3))
        (3, 3, 11, 11)
    """
    return receptive_fields(model, layer, input_shape, [position])[0]
