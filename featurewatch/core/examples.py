"""Dataset examples: which real inputs excite a unit, where, and through which pixels.

Zeiler & Fergus (2014), "Visualizing and Understanding Convolutional Networks", show a channel by
the inputs of a dataset that excite it most, the patch of each input the unit can see (its
*receptive field*), and a projection of the activation back to pixel space. Unlike a rendered
image (:mod:`featurewatch.core.render`) these are real data: they answer "what does this channel
fire on in *my* data", and they cost a few forward passes over a fixed pool plus one backward.

* :func:`top_examples` / :func:`top_examples_multi` - per channel, the ``k`` pool images with the
  highest spatial maximum of the channel, their values and the ``(y, x)`` of that maximum. Batched
  over the pool; one forward per pool batch serves every layer and stops right after the deepest.
* :func:`receptive_fields` / :func:`receptive_field` - the input box a feature-map position can
  depend on, measured exactly as the support of a gradient (see there for how activations and
  max-pooling are kept from hiding pixels).
* :func:`project` / :func:`project_detailed` - the gradient of one unit with respect to the input
  under the guided-backprop (Springenberg et al., 2015), deconvnet (Zeiler & Fergus, 2014) or
  plain-gradient rule.
* :func:`examples_grid` - one picture: per channel a row of top images | receptive-field crops |
  projections.
* :func:`layer_call_counts` - how often one forward calls each layer's module; pass it as
  ``call_counts`` to skip the single-image counting forward each function otherwise runs.

Every function runs inside :func:`~featurewatch.core.hygiene.isolated` (eval mode, parameters do
not require grad, RNG restored), differentiates with ``torch.autograd.grad`` with respect to the
*input only* (parameter ``.grad`` is never touched) and removes every hook in a ``finally`` block.

Example:
    >>> top = top_examples(model, pool, "features.6", channels=range(4), k=6)
    >>> boxes = receptive_fields(model, "features.6", pool.shape[1:], top.positions.flatten(0, 1).tolist())
    >>> proj = project(model, pool[top.indices.flatten()], "features.6",
    ...                channel=[c for c in top.channels for _ in range(top.k)],
    ...                position=top.positions.flatten(0, 1))
    >>> picture = examples_grid(pool, top, boxes=[boxes[r * top.k : (r + 1) * top.k] for r in range(4)],
    ...                         projections=proj.reshape(4, top.k, *proj.shape[1:]))
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from featurewatch.core.hygiene import isolated, model_device_dtype
from featurewatch.core.images import grid, scale_each, to_display_channels
from featurewatch.core.layers import (
    ACTIVATION_TYPES,
    LayerRef,
    LayerNotReachedError,
    StopForward,
    capture,
    module_calls,
    not_reached_message,
    parse_layer,
    resolve_layer,
)

__all__ = [
    "PROJECTION_RULES",
    "RULE_MODULE_TYPES",
    "Box",
    "Projection",
    "ProjectionRule",
    "TopExamples",
    "examples_grid",
    "layer_call_counts",
    "project",
    "project_detailed",
    "receptive_field",
    "receptive_fields",
    "top_examples",
    "top_examples_multi",
]

#: ``(top, left, bottom, right)`` in input pixels; ``bottom``/``right`` exclusive, so
#: ``image[..., top:bottom, left:right]`` is the patch.
Box = tuple[int, int, int, int]
ProjectionRule = Literal["guided", "deconvnet", "gradient"]
PROJECTION_RULES: tuple[str, ...] = ("guided", "deconvnet", "gradient")

Forward = Callable[[torch.Tensor], Any]


# ---------------------------------------------------------------------- argument checks
def _check_images(images: Any, what: str = "images") -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"`{what}` must be an (N, C, H, W) tensor, got {type(images).__name__}")
    if images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(
            f"`{what}` must be a non-empty (N, C, H, W) tensor, got shape {tuple(images.shape)}"
        )
    return images


def _check_positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive int, got {value!r}")
    return value


def _channel_list(channels: int | Sequence[int], what: str = "channels") -> list[int]:
    values = (
        [channels] if isinstance(channels, int) and not isinstance(channels, bool) else channels
    )
    try:
        out = list(values)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"`{what}` must be an int or a sequence of ints, got {type(channels).__name__}"
        ) from None
    if not out or any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in out):
        raise ValueError(f"`{what}` must be a non-empty list of non-negative ints, got {out!r}")
    return out


def _check_channels(layer: str, out: torch.Tensor, channels: Sequence[int]) -> None:
    if out.dim() not in (2, 4):
        raise ValueError(
            f"layer {layer!r} outputs shape {tuple(out.shape)}; dataset examples need a conv-like (N, C, H, W) "
            "or fully-connected (N, C) output: name a conv, activation or linear layer"
        )
    n = out.shape[1]
    bad = max(channels)
    if bad >= n:
        raise ValueError(
            f"channel {bad} out of range for layer {layer!r} with {n} channels (valid: 0..{n - 1})"
        )


# ---------------------------------------------------------------------- truncated forward
def _count_calls(
    forward: Forward, model: nn.Module, example: torch.Tensor, names: Sequence[str]
) -> dict[str, int]:
    """How often one forward of ``example[:1]`` calls each named module.

    If the model fails after every named module was reached (a head that wants another input
    size), the count up to there is used; if it fails before one of them, the failure is raised.
    """
    failure: Exception | None = None

    def run() -> None:
        nonlocal failure
        try:
            forward(example[:1])
        except Exception as err:  # noqa: BLE001 - fine if the layers ran before it
            failure = err

    with torch.no_grad():
        counts = module_calls(model, run, list(names))
    if failure is not None and any(counts[n] == 0 for n in names):
        raise failure
    return counts


def _call_counts(
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
        counts.update(_count_calls(forward, model, example, missing))
    for ref in refs:
        if ref.call is None and counts[ref.name] == 0:
            raise ValueError(f"layer {str(ref)!r} is not called in the model's forward pass")
    return counts


def layer_call_counts(
    model: nn.Module, example: torch.Tensor, layers: Sequence[str]
) -> dict[str, int]:
    """How often one forward pass calls the module of each layer reference (keyed by module name).

    Every function here needs it for references without ``@k`` (they mean the module's *last*
    call) and otherwise runs one untruncated single-image forward to find it; compute it once per
    input shape and pass it as ``call_counts`` to skip those forwards. A module that is never
    called counts 0 (the functions then raise for that layer).

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
    example = _check_images(example, "example")
    refs = [parse_layer(la) for la in layers]
    for ref in refs:
        resolve_layer(model, ref)
    names = sorted({r.name for r in refs})
    with isolated(model):
        device, dtype = model_device_dtype(model)
        return _count_calls(model, model, example[:1].to(device=device, dtype=dtype), names)


@contextmanager
def _layers_reader(
    model: nn.Module,
    refs: Sequence[LayerRef],
    counts: dict[str, int] | None,
    forward: Forward | None = None,
) -> Iterator[Callable[[torch.Tensor], dict[str, torch.Tensor]]]:
    """Yield ``read(x)``: ``{str(ref): output}`` for ``x``; the forward stops right after the
    deepest layer, so each module up to there runs once per ``read`` and none after it.

    One layer is not cloned (nothing runs after the capture, so a later in-place op cannot
    overwrite it, and the autograd graph is kept for :func:`project`); several are (a later
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
def _layer_reader(
    model: nn.Module, ref: LayerRef, counts: dict[str, int] | None, forward: Forward | None = None
) -> Iterator[Callable[[torch.Tensor], torch.Tensor]]:
    """:func:`_layers_reader` for one layer: ``read(x)`` returns its output."""
    with _layers_reader(model, [ref], counts, forward) as read_all:
        yield lambda x: read_all(x)[str(ref)]


def _first_argmax(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Max over the last dim and the *first* index reaching it (deterministic on ties)."""
    values = flat.amax(-1)
    length = flat.shape[-1]
    ar = torch.arange(length, device=flat.device).expand_as(flat)
    index = torch.where(flat == values.unsqueeze(-1), ar, length).amin(-1).clamp_max(length - 1)
    return values, index


# ---------------------------------------------------------------------- top examples
@dataclass(frozen=True)
class TopExamples:
    """What :func:`top_examples` returns (all tensors on the CPU).

    Attributes:
        layer: the layer reference.
        channels: the channels, in the order of the rows below.
        indices: ``(len(channels), k)`` long, pool indices, highest activation first.
        values: ``(len(channels), k)`` float32, the spatial maximum of the channel for each image.
        positions: ``(len(channels), k, 2)`` long ``(y, x)`` of that maximum in the feature map,
            or ``None`` for a fully-connected (2-D) layer.
        map_size: ``(H, W)`` of the feature map, ``None`` for a 2-D layer.
        pool_size: number of pool images searched.
    """

    layer: str
    channels: list[int]
    indices: torch.Tensor
    values: torch.Tensor
    positions: torch.Tensor | None
    map_size: tuple[int, int] | None
    pool_size: int

    @property
    def k(self) -> int:
        """Examples per channel (``min(k asked, pool size)``)."""
        return int(self.indices.shape[1])


def top_examples(
    model: nn.Module,
    images: torch.Tensor,
    layer: str,
    channels: int | Sequence[int],
    k: int = 9,
    *,
    batch_size: int = 64,
    call_counts: Mapping[str, int] | None = None,
) -> TopExamples:
    """The ``k`` pool images that excite each channel most (Zeiler & Fergus, 2014, Fig. 2).

    An image's score for a channel is the channel's maximum over the feature map (one strongly
    responding location is what a detector is for; the mean would favour large, diffuse responses).
    The pool is processed in batches and every forward stops right after ``layer``: nothing deeper
    in the network runs. One extra single-image forward counts the layer's calls when the reference
    has no ``@k`` (unless ``call_counts`` has them). For several layers use
    :func:`top_examples_multi`: one pass over the pool serves them all.

    Ties are broken deterministically: between images by the lower pool index, inside a feature
    map by the first position in row-major order. NaN activations rank last.

    Args:
        model: the network (left exactly as it was).
        images: ``(N, C, H, W)`` pool, as the model takes it (normalized); any device.
        layer: layer reference (``"features.6"``, ``"layer1.0.relu@0"``); its output must be
            ``(N, C, H, W)`` or ``(N, C)`` (fully connected: no position).
        channels: channel index or indices.
        k: examples per channel; capped at the pool size.
        batch_size: pool images per forward (memory bound; results do not depend on it).
        call_counts: from :func:`layer_call_counts`, to skip the counting forward.

    Returns:
        A :class:`TopExamples`.

    Raises:
        ValueError: unknown layer, channel out of range (the message lists the valid range),
            unsupported output shape.

    Example:
        >>> top = top_examples(model, pool, "features.6", [0, 1, 2], k=6)
        >>> top.indices.shape, top.positions.shape
        (torch.Size([3, 6]), torch.Size([3, 6, 2]))
    """
    ref = parse_layer(layer)
    found = top_examples_multi(
        model, images, {str(ref): channels}, k, batch_size=batch_size, call_counts=call_counts
    )
    return found[str(ref)]


def top_examples_multi(
    model: nn.Module,
    images: torch.Tensor,
    channels: Mapping[str, int | Sequence[int]],
    k: int = 9,
    *,
    batch_size: int = 64,
    call_counts: Mapping[str, int] | None = None,
) -> dict[str, TopExamples]:
    """:func:`top_examples` for several layers at once, in one pass over the pool.

    Each pool batch runs through the model once; the outputs of every layer are captured in that
    forward, which stops right after the deepest of them: every module up to it runs once per pool
    batch, and no module after it runs at all. The cost is that of :func:`top_examples` for the
    deepest layer alone (plus one single-image counting forward unless ``call_counts`` is given or
    every reference names its call).

    Args:
        model: the network (left exactly as it was).
        images: ``(N, C, H, W)`` pool, as the model takes it; any device.
        channels: ``{layer reference: channel index or indices}``; one result per entry.
        k: examples per channel; capped at the pool size.
        batch_size: pool images per forward (results do not depend on it).
        call_counts: from :func:`layer_call_counts`, to skip the counting forward.

    Returns:
        ``{str(layer reference): TopExamples}`` in the order of ``channels``.

    Raises:
        ValueError: as :func:`top_examples`, for the first layer that fails (no result for any).

    Example:
        >>> tops = top_examples_multi(model, pool, {"features.2": range(8), "features.6": [0, 3]}, k=6)
        >>> tops["features.6"].indices.shape
        torch.Size([2, 6])
    """
    images = _check_images(images)
    if not isinstance(channels, Mapping):
        raise TypeError(
            "`channels` must be a mapping {layer: channel or channels}, got "
            f"{type(channels).__name__}"
        )
    if not channels:
        raise ValueError("`channels` must name at least one layer, got an empty mapping")
    _check_positive("k", k)
    _check_positive("batch_size", batch_size)
    wanted: dict[str, tuple[LayerRef, list[int]]] = {}
    for layer, chans in channels.items():
        ref = parse_layer(layer)
        resolve_layer(model, ref)
        wanted[str(ref)] = (ref, _channel_list(chans))
    refs = [ref for ref, _ in wanted.values()]
    n = images.shape[0]
    maxima: dict[str, list[torch.Tensor]] = {key: [] for key in wanted}
    where: dict[str, list[torch.Tensor]] = {key: [] for key in wanted}
    map_size: dict[str, tuple[int, int] | None] = {}
    with isolated(model):
        device, dtype = model_device_dtype(model)
        counts = _call_counts(
            model, model, refs, images[:1].to(device=device, dtype=dtype), call_counts
        )
        index = {key: torch.tensor(chans, device=device) for key, (_, chans) in wanted.items()}
        with torch.no_grad(), _layers_reader(model, refs, counts) as read:
            for lo in range(0, n, batch_size):
                outs = read(images[lo : lo + batch_size].to(device=device, dtype=dtype))
                for key, (_, chans) in wanted.items():
                    out = outs[key]
                    if lo == 0:
                        _check_channels(key, out, chans)
                        map_size[key] = (
                            (int(out.shape[2]), int(out.shape[3])) if out.dim() == 4 else None
                        )
                    sel = out.index_select(1, index[key].to(out.device)).float()
                    if sel.dim() == 2:
                        maxima[key].append(sel.cpu())
                    else:
                        v, i = _first_argmax(sel.flatten(2))
                        maxima[key].append(v.cpu())
                        where[key].append(i.cpu())
                del outs
    kk = min(k, n)
    result: dict[str, TopExamples] = {}
    for key, (_, chans) in wanted.items():
        values = torch.cat(maxima[key]).T.contiguous()  # (C, N)
        order = torch.sort(
            torch.nan_to_num(values, nan=float("-inf")), dim=1, descending=True, stable=True
        ).indices[:, :kk]
        size = map_size[key]
        positions = None
        if size is not None:
            flat = torch.cat(where[key]).T.gather(1, order)  # (C, k) flat index into the map
            positions = torch.stack([flat // size[1], flat % size[1]], dim=-1)
        result[key] = TopExamples(
            layer=key,
            channels=chans,
            indices=order,
            values=values.gather(1, order),
            positions=positions,
            map_size=size,
            pool_size=n,
        )
    return result


# ---------------------------------------------------------------------- receptive fields
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

    handles = []
    try:
        for m in model.modules():
            if isinstance(m, _MAX_POOLS):
                handles.append(m.register_forward_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


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


@contextmanager
def _activations_pass_through(model: nn.Module) -> Iterator[None]:
    """While active, every elementwise activation module returns its input unchanged.

    The receptive field depends only on connectivity; with the stand-in parameters every value is
    positive but residual sums double it block after block, so a ``ReLU6``/``Hardtanh`` would
    saturate (gradient 0) and hide every pixel. A forward pre-hook keeps the input and hands an
    in-place module a clone (so the kept input is not overwritten); a forward hook, prepended so a
    capture at the activation itself sees it, returns the kept input (the very tensor for an
    in-place module, which aliases its input; a copy otherwise, which does not). Pre- and post-hook
    of one call are adjacent, so a module called several times is handled call by call.
    """
    kept: dict[int, torch.Tensor] = {}
    handles = []

    def pre(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if not args or not isinstance(args[0], torch.Tensor):
            return None
        kept[id(module)] = args[0]
        if getattr(module, "inplace", False):
            return (args[0].clone(), *args[1:])
        return None

    def post(module: nn.Module, args: tuple[Any, ...], out: Any) -> Any:
        x = kept.pop(id(module), None)
        if x is None:
            return None
        return x if getattr(module, "inplace", False) else x.clone()

    try:
        for m in model.modules():
            if isinstance(m, _ELEMENTWISE_ACTIVATIONS):
                handles.append(m.register_forward_pre_hook(pre))
                handles.append(m.register_forward_hook(post, prepend=True))
        yield
    finally:
        for h in handles:
            h.remove()
        kept.clear()


def _shape3(input_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 4 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"`input_shape` must be (C, H, W), got {tuple(input_shape)!r}")
    return shape


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
        batch_size: positions per forward/backward.
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
    _check_positive("batch_size", batch_size)
    _check_positive("trials", trials)
    ref = parse_layer(layer)
    resolve_layer(model, ref)
    pos = list(positions)
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
        boxes: list[Box] = []
        with _whole_window_pools(model), _activations_pass_through(model):
            counts = _call_counts(forward, model, [ref], example, call_counts)
            with _layer_reader(model, ref, counts, forward) as read:
                for lo in range(0, len(pos), batch_size):
                    chunk = pos[lo : lo + batch_size]
                    support = torch.zeros(len(chunk), shape[1], shape[2], dtype=torch.bool)
                    for _ in range(trials):
                        x = (0.5 + torch.rand(len(chunk), *shape, generator=gen, dtype=dtype)).to(
                            device
                        )
                        x.requires_grad_(True)
                        out = read(x)
                        units = _units(str(ref), out, None, chunk)
                        if not units.requires_grad:
                            raise ValueError(
                                f"the units of layer {str(ref)!r} do not depend on the input through "
                                "autograd (is its output detached or computed without grad?)"
                            )
                        (g,) = torch.autograd.grad(units.sum(), x)
                        support |= (g.detach().abs().sum(1) > 0).cpu()
                    boxes.extend(_bounding_box(str(ref), s, p) for s, p in zip(support, chunk))
    return boxes


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


def _units(
    layer: str,
    out: torch.Tensor,
    channels: Sequence[int] | None,
    positions: Sequence[tuple[int, int] | None] | None,
) -> torch.Tensor:
    """``(N,)`` unit values: element ``i`` is channel ``channels[i]`` (all channels summed when
    ``None``) at ``positions[i]`` (the channel's first maximum when ``None``).

    Vectorized: positions are Python ints checked on the host, maxima found in one batched argmax
    on the tensor's device (no per-image device-to-host synchronization).
    """
    n = out.shape[0]
    rows = torch.arange(n, device=out.device)
    if out.dim() == 2:
        if positions is not None and any(p is not None for p in positions):
            raise ValueError(
                f"layer {layer!r} is fully connected (output {tuple(out.shape)}); its units have no position"
            )
        return (
            out.sum(1)
            if channels is None
            else out[rows, torch.tensor(list(channels), device=out.device)]
        )
    if out.dim() != 4:
        raise ValueError(
            f"layer {layer!r} outputs shape {tuple(out.shape)}; expected (N, C, H, W) or (N, C)"
        )
    h, w = int(out.shape[2]), int(out.shape[3])
    given: list[tuple[int, int] | None] = [None] * n if positions is None else list(positions)
    flat_given: list[int] = []
    for p in given:
        if p is None:
            if channels is None:
                raise ValueError(
                    f"layer {layer!r} has an {h}x{w} feature map: give a (y, x) position"
                )
            flat_given.append(0)
            continue
        y, x = (int(v) for v in p)
        if not (0 <= y < h and 0 <= x < w):
            raise ValueError(
                f"position {(y, x)} outside the {h}x{w} feature map of layer {layer!r} (valid: y 0..{h - 1}, x 0..{w - 1})"
            )
        flat_given.append(y * w + x)
    if channels is None:
        maps = out.sum(1).flatten(1)  # (N, H*W)
    else:
        maps = out[rows, torch.tensor(list(channels), device=out.device)].flatten(1)
    flat = torch.tensor(flat_given, device=out.device)
    missing = [p is None for p in given]
    if any(missing):
        _, first = _first_argmax(maps.detach())
        flat = torch.where(torch.tensor(missing, device=out.device), first, flat)
    return maps[rows, flat]


# ---------------------------------------------------------------------- projections
#: Activation modules a projection rule rewrites: ``nn.ReLU``, ``nn.ReLU6`` and any ``nn.Hardtanh``
#: with ``min_val == 0`` (a capped ReLU), ``nn.LeakyReLU`` with a non-negative slope.
RULE_MODULE_TYPES: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU)


def _rule_params(module: nn.Module) -> tuple[float, float | None] | None:
    """``(negative slope, cap)`` of a rectifier the rules rewrite, or ``None`` for other modules."""
    if isinstance(module, nn.ReLU):
        return 0.0, None
    if isinstance(module, nn.Hardtanh):  # nn.ReLU6 is Hardtanh(0, 6)
        if float(module.min_val) == 0.0 and float(module.max_val) > 0.0:
            return 0.0, float(module.max_val)
        return None
    if isinstance(module, nn.LeakyReLU) and float(module.negative_slope) >= 0.0:
        return float(module.negative_slope), None
    return None


class _RuleReLU(torch.autograd.Function):
    """A rectifier ``f`` (ReLU, capped ReLU, leaky ReLU) whose backward follows a visualization
    rule instead of the chain rule ``grad * f'(x)``:

    * guided backprop (Springenberg et al., 2015): ``relu(grad) * f'(x)`` - only positive
      evidence, only through units that were on (for a ReLU ``f'(x) = [x > 0]``; for ReLU6
      ``[0 < x < 6]``; for a leaky ReLU 1 or the slope);
    * deconvnet (Zeiler & Fergus, 2014): ``relu(grad)`` - the forward is ignored: the deconvnet's
      "unpooling + rectification" reconstructs with a ReLU of its own.

    For guided backprop only the boolean mask ``f(x) > 0`` (and ``f(x) < cap``) computed in the
    forward is saved - neither the input nor the output - so a model that edits either in place
    afterwards (legal in PyTorch for the input, whose ReLU saves its output) is unaffected.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, masked: bool, slope: float, cap: float | None
    ) -> torch.Tensor:
        out = x.clamp_min(0) if slope == 0.0 else F.leaky_relu(x, slope)
        if cap is not None:
            out = out.clamp_max(cap)
        ctx.masked, ctx.slope = masked, slope
        if masked:
            on = out > 0
            if cap is not None:
                on &= out < cap
            ctx.save_for_backward(on)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        out = grad.clamp_min(0)
        if ctx.masked:
            (on,) = ctx.saved_tensors
            off = torch.zeros_like(out) if ctx.slope == 0.0 else out * ctx.slope
            out = torch.where(on, out, off)
        return out, None, None, None


@contextmanager
def _relu_rule(model: nn.Module, rule: str) -> Iterator[list[int]]:
    """While active, every rectifier module's output (see :data:`RULE_MODULE_TYPES`) carries the
    backward of ``rule``. Yields a one-element counter of the module calls rewritten so far.

    A forward pre-hook keeps the module's input and hands an in-place module a clone (so the input
    survives, and the graph of the layer before stays valid); a forward hook, prepended so that a
    capture at the module itself sees it, replaces the output by :class:`_RuleReLU` applied to that
    kept input. Pre- and post-hook of one call are adjacent, so a module called several times in
    one forward is handled call by call. ``F.relu`` calls cannot be hooked: they keep the plain
    gradient. ``"gradient"`` installs nothing.
    """
    calls = [0]
    if rule == "gradient":
        yield calls
        return
    masked = rule == "guided"
    kept: dict[int, torch.Tensor] = {}
    params: dict[int, tuple[float, float | None]] = {}
    handles = []

    def pre(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if not args or not isinstance(args[0], torch.Tensor):
            return None
        x = args[0]
        kept[id(module)] = x
        if getattr(module, "inplace", False):
            return (x.clone(), *args[1:])
        return None

    def post(module: nn.Module, args: tuple[Any, ...], out: Any) -> Any:
        x = kept.pop(id(module), None)
        if x is None:
            return None
        calls[0] += 1
        slope, cap = params[id(module)]
        return _RuleReLU.apply(x, masked, slope, cap)

    try:
        for m in model.modules():
            found = _rule_params(m)
            if found is not None:
                params[id(m)] = found
                handles.append(m.register_forward_pre_hook(pre))
                handles.append(m.register_forward_hook(post, prepend=True))
        yield calls
    finally:
        for h in handles:
            h.remove()
        kept.clear()


def _positions_list(position: Any, n: int) -> list[tuple[int, int] | None]:
    if position is None:
        return [None] * n
    if isinstance(position, torch.Tensor):
        position = position.tolist()
    if (
        isinstance(position, (tuple, list))
        and len(position) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in position)
    ):
        return [(int(position[0]), int(position[1]))] * n
    out = list(position)
    if len(out) != n:
        raise ValueError(
            f"`position` must be None, one (y, x) or one per image ({n}), got {len(out)} entries"
        )
    result: list[tuple[int, int] | None] = []
    for p in out:
        if p is None:
            result.append(None)
            continue
        if not isinstance(p, (tuple, list)) or len(p) != 2:
            raise ValueError(f"each position must be (y, x) or None, got {p!r}")
        result.append((int(p[0]), int(p[1])))
    return result


@dataclass(frozen=True)
class Projection:
    """What :func:`project_detailed` returns.

    Attributes:
        gradients: ``(N, C, H, W)`` float32 projections on the CPU (what :func:`project` returns).
        rule: the rule asked for.
        rule_calls: rectifier-module calls (:data:`RULE_MODULE_TYPES`) the rule rewrote in one
            forward up to the layer (the most over the batches). ``0`` with ``"guided"`` or
            ``"deconvnet"`` means no such module ran - the network uses ``F.relu`` or other
            activations - and ``gradients`` is the plain gradient.
    """

    gradients: torch.Tensor
    rule: str
    rule_calls: int

    @property
    def plain(self) -> bool:
        """``True`` when ``gradients`` is the plain gradient (asked for, or no module rewritten)."""
        return self.rule == "gradient" or self.rule_calls == 0


def project(
    model: nn.Module,
    x: torch.Tensor,
    layer: str,
    channel: int | Sequence[int],
    position: Any = None,
    *,
    rule: ProjectionRule = "guided",
    batch_size: int = 64,
    call_counts: Mapping[str, int] | None = None,
) -> torch.Tensor:
    """Project one unit's activation per image back to pixel space.

    Element ``i`` is the gradient of ``layer[i, channel[i], y_i, x_i]`` with respect to ``x[i]``,
    taken through every rectifier module (``nn.ReLU``, ``nn.ReLU6``/``nn.Hardtanh(0, m)``,
    ``nn.LeakyReLU``; see :data:`RULE_MODULE_TYPES`) with the chosen rule:

    * ``"guided"`` - guided backpropagation (Springenberg et al., 2015, "Striving for Simplicity"):
      at each rectifier only positive gradient passes, and only where the unit was on in the
      forward pass (``0 < x < 6`` for ReLU6; the slope scales it where a leaky ReLU was off).
      Sharp, positive evidence: the usual choice.
    * ``"deconvnet"`` - Zeiler & Fergus's deconvnet: each rectifier passes ``relu(grad)`` and
      ignores the forward (max-pool "switches" are the ordinary max-pool gradient). Noisier, less
      image-specific; the paper's method.
    * ``"gradient"`` - the plain gradient (Simonyan et al., 2014), signed.

    In-place modules and modules called several times in one forward are handled; ``F.relu``/
    ``torch.relu`` calls in ``forward`` keep the plain gradient. When no rectifier module runs
    before the layer, ``"guided"`` and ``"deconvnet"`` *are* the plain gradient: a ``UserWarning``
    says so (:func:`project_detailed` reports it instead). The forward stops right after
    ``layer``. Gradients are taken with ``torch.autograd.grad`` with respect to the input only,
    so the parameters' ``.grad`` and ``requires_grad`` are untouched.

    Args:
        model: the network (left exactly as it was).
        x: ``(N, C, H, W)`` images as the model takes them.
        layer: layer reference; output ``(N, C, H, W)`` or ``(N, C)``.
        channel: one channel for every image, or one per image.
        position: ``None`` - for each image the position of its channel's maximum (first in
            row-major order on ties); one ``(y, x)``; or one ``(y, x)`` per image (a sequence or an
            ``(N, 2)`` tensor). Must be ``None`` for a 2-D layer.
        rule: ``"guided"``, ``"deconvnet"`` or ``"gradient"``.
        batch_size: images per forward/backward (results do not depend on it).
        call_counts: from :func:`layer_call_counts`, to skip the counting forward.

    Returns:
        ``(N, C, H, W)`` float32 projections on the CPU (signed; see :func:`examples_grid` for
        display).

    Raises:
        ValueError: unknown rule or layer, channel or position out of range (listing the valid
            range), mismatched lengths.

    Example:
        >>> proj = project(model, images, "features.6", channel=3, rule="guided")
    """
    result = project_detailed(
        model,
        x,
        layer,
        channel,
        position,
        rule=rule,
        batch_size=batch_size,
        call_counts=call_counts,
    )
    if result.plain and rule != "gradient":
        warnings.warn(
            f"project(rule={rule!r}): no nn.ReLU/ReLU6/LeakyReLU module runs before layer {layer!r} "
            f"in {type(model).__name__} (F.relu calls cannot be rewritten), so the result is the "
            "plain gradient",
            UserWarning,
            stacklevel=2,
        )
    return result.gradients


def project_detailed(
    model: nn.Module,
    x: torch.Tensor,
    layer: str,
    channel: int | Sequence[int],
    position: Any = None,
    *,
    rule: ProjectionRule = "guided",
    batch_size: int = 64,
    call_counts: Mapping[str, int] | None = None,
) -> Projection:
    """:func:`project`, also saying whether the rule was applied at all (never warns).

    Returns:
        A :class:`Projection`: the gradients and how many rectifier-module calls the rule
        rewrote (``0``: the gradients are the plain gradient).

    Example:
        >>> result = project_detailed(model, images, "features.6", channel=3)
        >>> result.gradients.shape, result.plain
        (torch.Size([8, 3, 64, 64]), False)
    """
    x = _check_images(x, "x")
    if rule not in PROJECTION_RULES:
        raise ValueError(
            f"`rule` must be one of {', '.join(map(repr, PROJECTION_RULES))}, got {rule!r}"
        )
    _check_positive("batch_size", batch_size)
    n = x.shape[0]
    chans = _channel_list(channel, "channel")
    if len(chans) == 1:
        chans = chans * n
    if len(chans) != n:
        raise ValueError(f"`channel` must be one int or one per image ({n}), got {len(chans)}")
    positions = _positions_list(position, n)
    ref = parse_layer(layer)
    resolve_layer(model, ref)
    results: list[torch.Tensor] = []
    rule_calls = 0
    with isolated(model):
        device, dtype = model_device_dtype(model)
        counts = _call_counts(
            model, model, [ref], x[:1].to(device=device, dtype=dtype), call_counts
        )
        with _relu_rule(model, rule) as rewritten, _layer_reader(model, ref, counts) as read:
            for lo in range(0, n, batch_size):
                hi = min(n, lo + batch_size)
                xi = x[lo:hi].to(device=device, dtype=dtype).clone().requires_grad_(True)
                rewritten[0] = 0
                out = read(xi.clone())  # not the leaf: a first in-place op of the model stays legal
                rule_calls = max(rule_calls, rewritten[0])
                _check_channels(str(ref), out, chans[lo:hi])
                units = _units(str(ref), out, chans[lo:hi], positions[lo:hi])
                if units.requires_grad:
                    (g,) = torch.autograd.grad(units.sum(), xi)
                else:  # the unit does not depend on the input through autograd (e.g. a constant)
                    g = torch.zeros_like(xi)
                results.append(g.detach().float().cpu())
                del out, units, xi, g
    return Projection(gradients=torch.cat(results), rule=rule, rule_calls=rule_calls)


# ---------------------------------------------------------------------- the picture
def _rgb(images: torch.Tensor) -> torch.Tensor:
    images = to_display_channels(images)
    return images.repeat(1, 3, 1, 1) if images.shape[1] == 1 else images


def _fit_tile(patch: torch.Tensor, size: tuple[int, int], fill: float) -> torch.Tensor:
    """Resize ``(3, h, w)`` to fit ``size`` keeping its aspect ratio (nearest neighbour, so
    pixels stay visible), centred on a ``fill`` background."""
    th, tw = size
    h, w = patch.shape[-2:]
    scale = min(th / h, tw / w)
    nh, nw = max(1, min(th, round(h * scale))), max(1, min(tw, round(w * scale)))
    resized = F.interpolate(patch[None], size=(nh, nw), mode="nearest")[0]
    tile = torch.full((patch.shape[0], th, tw), fill, dtype=patch.dtype)
    top, left = (th - nh) // 2, (tw - nw) // 2
    tile[:, top : top + nh, left : left + nw] = resized
    return tile


def _outline(
    tile: torch.Tensor, box: Box, factor: int, colour: tuple[float, float, float]
) -> torch.Tensor:
    top, left, bottom, right = (v * factor for v in box)
    bottom, right = bottom - 1, right - 1
    c = torch.tensor(colour, dtype=tile.dtype).reshape(3, 1)
    tile = tile.clone()
    tile[:, top, left : right + 1] = c
    tile[:, bottom, left : right + 1] = c
    tile[:, top : bottom + 1, left] = c
    tile[:, top : bottom + 1, right] = c
    return tile


def examples_grid(
    images: torch.Tensor,
    top: TopExamples,
    *,
    boxes: Sequence[Sequence[Box]] | None = None,
    projections: torch.Tensor | None = None,
    min_size: int = 32,
    outline: bool = True,
) -> torch.Tensor:
    """One picture of a layer's dataset examples: a row per channel.

    Each row shows, left to right, separated by white gaps:

    1. the ``k`` top images, highest activation first, each min-max scaled for display, with the
       receptive field of the maximal unit outlined in red (when ``boxes`` are given);
    2. the receptive-field crops (when ``boxes`` are given), cut from the display-scaled image and
       resized to the tile size keeping their aspect ratio (nearest neighbour);
    3. the projections (when given), each scaled symmetrically so that zero is mid-grey, cropped
       to the same receptive field as in Zeiler & Fergus's Fig. 2 when ``boxes`` are given.

    Tiles are the input size enlarged by an integer factor to at least ``min_size`` pixels.

    Args:
        images: ``(N, C, H, W)`` pool the examples index into.
        top: from :func:`top_examples`.
        boxes: ``boxes[c][j]`` the receptive field of ``top``'s example ``j`` of row ``c``.
        projections: ``(rows, k, C, H, W)`` from :func:`project`.
        min_size: minimum tile size in pixels.
        outline: draw the receptive field on the top images.

    Returns:
        ``(3, H', W')`` image in ``[0, 1]``.
    """
    images = _check_images(images)
    rows, k = top.indices.shape
    if boxes is not None and (len(boxes) != rows or any(len(b) != k for b in boxes)):
        raise ValueError(f"`boxes` must hold {rows} rows of {k} boxes")
    if projections is not None and tuple(projections.shape[:2]) != (rows, k):
        raise ValueError(
            f"`projections` must be ({rows}, {k}, C, H, W), got {tuple(projections.shape)}"
        )
    h, w = images.shape[-2:]
    factor = max(1, -(-int(min_size) // max(h, w)))
    tile_size = (h * factor, w * factor)
    picked = _rgb(scale_each(images[top.indices.flatten()].detach().float().cpu())).reshape(
        rows, k, 3, h, w
    )
    proj = None
    if projections is not None:
        p = projections.detach().float().cpu()
        proj = _rgb(scale_each(p.flatten(0, 1), symmetric=True)).reshape(rows, k, 3, *p.shape[-2:])

    def up(t: torch.Tensor) -> torch.Tensor:
        return F.interpolate(t[None], scale_factor=factor, mode="nearest")[0] if factor > 1 else t

    gap = 6
    row_images = []
    for r in range(rows):
        groups: list[list[torch.Tensor]] = [[], [], []]
        for j in range(k):
            img = picked[r, j]
            box = boxes[r][j] if boxes is not None else None
            tile = up(img)
            if box is not None and outline:
                tile = _outline(tile, box, factor, (1.0, 0.15, 0.15))
            groups[0].append(tile)
            if box is not None:
                t, le, b, ri = box
                groups[1].append(_fit_tile(img[:, t:b, le:ri], tile_size, 1.0))
            if proj is not None:
                pj = proj[r, j]
                if box is not None:
                    t, le, b, ri = box
                    groups[2].append(_fit_tile(pj[:, t:b, le:ri], tile_size, 1.0))
                else:
                    groups[2].append(up(pj))
        parts = [grid(torch.stack(g), nrow=k, padding=1, pad_value=1.0) for g in groups if g]
        spacer = torch.ones(3, parts[0].shape[1], gap)
        joined: list[torch.Tensor] = []
        for i, part in enumerate(parts):
            joined.extend([spacer, part] if i else [part])
        row_images.append(torch.cat(joined, dim=2))
    return grid(torch.stack(row_images), nrow=1, padding=4, pad_value=1.0)
