"""Dataset examples: which real inputs excite a unit most (top-k over a fixed pool).

Zeiler & Fergus (2014), "Visualizing and Understanding Convolutional Networks", show a channel by
the inputs of a dataset that excite it most, the patch of each input the unit can see (its
*receptive field*), and a projection of the activation back to pixel space. Unlike a rendered
image (:mod:`featurewatch.core.render`) these are real data: they answer "what does this channel
fire on in *my* data", and they cost a few forward passes over a fixed pool plus one backward.

* :func:`top_examples` / :func:`top_examples_multi` - per channel, the ``k`` pool images with the
  highest spatial maximum of the channel, their values and the ``(y, x)`` of that maximum. Batched
  over the pool; one forward per pool batch serves every layer and stops right after the deepest.
  On 1-D signals (``(N, C, L)`` pool, ``(N, C, L)`` layer: a ``Conv1d`` net over audio or sensor
  series) the maximum is over time and the position is its time index ``(t,)``.

The rest of Zeiler & Fergus's picture lives in a module per mechanism:

* :mod:`featurewatch.core.receptive_field` - the input box (on 1-D signals: the interval of
  samples) a feature-map position can depend on, measured exactly as the support of a gradient;
* :mod:`featurewatch.core.projection` - the gradient of one unit with respect to the input under
  the guided-backprop (Springenberg et al., 2015), deconvnet (Zeiler & Fergus, 2014) or
  plain-gradient rule;
* :mod:`featurewatch.core.drawing` - :func:`~featurewatch.core.drawing.examples_grid`, one picture:
  per channel a row of top images | receptive-field crops | projections;
  :func:`~featurewatch.core.signal_examples.signal_examples_grid` its 1-D counterpart: per channel
  a row of small waveform plots with the receptive-field interval shaded;
* :mod:`featurewatch.core.calls` - :func:`~featurewatch.core.calls.layer_call_counts`, how often one
  forward calls each layer's module; pass it as ``call_counts`` to skip the single-image counting
  forward each function otherwise runs.

Every function runs inside :func:`~featurewatch.core.hygiene.isolated` (eval mode, parameters do
not require grad, RNG restored), differentiates with ``torch.autograd.grad`` with respect to the
*input only* (parameter ``.grad`` is never touched) and removes every hook in a ``finally`` block.

Example:
    >>> top = top_examples(model, pool, "features.6", channels=range(4), k=6)
    >>> positions = top.positions.flatten(0, 1).tolist()
    >>> boxes = receptive_fields(model, "features.6", pool.shape[1:], positions)
    >>> proj = project(model, pool[top.indices.flatten()], "features.6",
    ...                channel=[c for c in top.channels for _ in range(top.k)],
    ...                position=top.positions.flatten(0, 1))
    >>> rows = [boxes[r * top.k : (r + 1) * top.k] for r in range(4)]
    >>> picture = examples_grid(pool, top, boxes=rows,
    ...                         projections=proj.reshape(4, top.k, *proj.shape[1:]))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from featurewatch.core.batching import FORWARD_PIXELS, bounded_batch
from featurewatch.core.calls import layers_reader, resolve_call_counts
from featurewatch.core.hygiene import isolated, model_device_dtype
from featurewatch.core.layers import LayerRef, parse_layer, resolve_layer
from featurewatch.core.units import check_unit_channels, first_argmax
from featurewatch.core.validation import check_channel_list, check_inputs, check_int

__all__ = [
    "TopExamples",
    "top_examples",
    "top_examples_multi",
]


@dataclass(frozen=True)
class TopExamples:
    """What :func:`top_examples` returns (all tensors on the CPU).

    Attributes:
        layer: the layer reference.
        channels: the channels, in the order of the rows below.
        indices: ``(len(channels), k)`` long, pool indices, highest activation first.
        values: ``(len(channels), k)`` float32, the spatial maximum of the channel for each image.
        positions: ``(len(channels), k, 2)`` long ``(y, x)`` of that maximum in the feature map;
            on a 1-D ``(N, C, L)`` layer ``(len(channels), k, 1)`` long ``(t,)``, its time index;
            ``None`` for a fully-connected (2-D) layer.
        map_size: ``(H, W)`` of the feature map (``(L,)`` on a 1-D layer), ``None`` for a 2-D
            layer.
        pool_size: number of pool images searched.
    """

    layer: str
    channels: list[int]
    indices: torch.Tensor
    values: torch.Tensor
    positions: torch.Tensor | None
    map_size: tuple[int, ...] | None
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
    map by the first position in row-major order (on a 1-D layer: the earliest time). NaN
    activations rank last.

    Args:
        model: the network (left exactly as it was).
        images: ``(N, C, H, W)`` pool of images, or ``(N, C, L)`` of 1-D signals, as the model
            takes it (normalized); any device.
        layer: layer reference (``"features.6"``, ``"layer1.0.relu@0"``); its output must be
            ``(N, C, H, W)``, ``(N, C, L)`` on a pool of signals (the position is then ``(t,)``)
            or ``(N, C)`` (fully connected: no position). A 3-D output on images is a token
            layer ``(N, T, D)``, not channels over time, and is refused.
        channels: channel index or indices.
        k: examples per channel; capped at the pool size.
        batch_size: the most pool images per forward, fewer for large images
            (:mod:`~featurewatch.core.batching`); results do not depend on it.
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
        images: ``(N, C, H, W)`` or ``(N, C, L)`` pool, as the model takes it; any device.
        channels: ``{layer reference: channel index or indices}``; one result per entry.
        k: examples per channel; capped at the pool size.
        batch_size: the most pool images per forward, fewer for large images
            (:mod:`~featurewatch.core.batching`); results do not depend on it.
        call_counts: from :func:`layer_call_counts`, to skip the counting forward.

    Returns:
        ``{str(layer reference): TopExamples}`` in the order of ``channels``.

    Raises:
        ValueError: as :func:`top_examples`, for the first layer that fails (no result for any).

    Example:
        >>> wanted = {"features.2": range(8), "features.6": [0, 3]}
        >>> tops = top_examples_multi(model, pool, wanted, k=6)
        >>> tops["features.6"].indices.shape
        torch.Size([2, 6])
    """
    check_inputs("images", images)
    if not isinstance(channels, Mapping):
        raise TypeError(
            "`channels` must be a mapping {layer: channel or channels}, got "
            f"{type(channels).__name__}"
        )
    if not channels:
        raise ValueError("`channels` must name at least one layer, got an empty mapping")
    check_int("k", k)
    check_int("batch_size", batch_size)
    wanted: dict[str, tuple[LayerRef, list[int]]] = {}
    for layer, chans in channels.items():
        ref = parse_layer(layer)
        resolve_layer(model, ref)
        wanted[str(ref)] = (ref, check_channel_list("channels", chans))
    refs = [ref for ref, _ in wanted.values()]
    n = images.shape[0]
    maxima: dict[str, list[torch.Tensor]] = {key: [] for key in wanted}
    where: dict[str, list[torch.Tensor]] = {key: [] for key in wanted}
    map_size: dict[str, tuple[int, ...] | None] = {}
    with isolated(model):
        device, dtype = model_device_dtype(model)
        with _shape_hint(images):
            counts = resolve_call_counts(
                model, model, refs, images[:1].to(device=device, dtype=dtype), call_counts
            )
        index = {key: torch.tensor(chans, device=device) for key, (_, chans) in wanted.items()}
        batch_size = bounded_batch(batch_size, images.shape[1:], FORWARD_PIXELS)
        with torch.no_grad(), layers_reader(model, refs, counts) as read:
            for lo in range(0, n, batch_size):
                batch = images[lo : lo + batch_size].to(device=device, dtype=dtype)
                if lo == 0:
                    with _shape_hint(images):
                        outs = read(batch)
                else:
                    outs = read(batch)
                for key, (_, chans) in wanted.items():
                    out = outs[key]
                    if lo == 0:
                        _check_output(key, out, chans, images.dim())
                        map_size[key] = tuple(int(s) for s in out.shape[2:]) or None
                    sel = out.index_select(1, index[key].to(out.device)).float()
                    if sel.dim() == 2:
                        maxima[key].append(sel.cpu())
                    else:
                        v, i = first_argmax(sel.flatten(2))
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
            if len(size) == 1:
                positions = flat[..., None]  # (C, k, 1): the time index
            else:
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


def merge_top_examples(parts: Sequence[tuple[int, TopExamples]], k: int) -> TopExamples:
    """The top examples of a whole pool from those of its consecutive parts.

    ``parts`` are ``(offset, top)``: ``top`` was found in ``pool[offset : offset + top.pool_size]``
    with at least ``k`` examples per channel (or all of that part). The result is what
    :func:`top_examples_multi` gives on the whole pool, to the same ties (lower pool index first,
    NaN last): each part's top ``k`` holds every image that can be in the whole pool's top ``k``.
    This is how a call split across DDP ranks (one part of the pool each) is put back together.

    Raises:
        ValueError: no parts, or parts of other layers or channels.
    """
    if not parts:
        raise ValueError("`parts` must hold at least one (offset, TopExamples)")
    first = parts[0][1]
    if any(t.layer != first.layer or t.channels != first.channels for _, t in parts):
        raise ValueError("every part must be of the same layer and channels")
    indices = torch.cat([t.indices + int(o) for o, t in parts], dim=1)
    values = torch.cat([t.values for _, t in parts], dim=1)
    positions = None
    if first.positions is not None:
        positions = torch.cat([t.positions for _, t in parts if t.positions is not None], dim=1)
    n = sum(t.pool_size for _, t in parts)
    # candidates in pool order first, so that the stable sort breaks ties by the lower index
    by_index = indices.argsort(dim=1, stable=True)
    indices, values = indices.gather(1, by_index), values.gather(1, by_index)
    key = torch.nan_to_num(values, nan=float("-inf"))
    order = torch.sort(key, dim=1, descending=True, stable=True).indices[:, : min(k, n)]
    if positions is not None:
        positions = positions.gather(1, by_index[..., None].expand_as(positions))
        positions = positions.gather(1, order[..., None].expand(-1, -1, positions.shape[-1]))
    return dataclasses.replace(
        first,
        indices=indices.gather(1, order),
        values=values.gather(1, order),
        positions=positions,
        pool_size=n,
    )


@contextmanager
def _shape_hint(images: torch.Tensor) -> Iterator[None]:
    """A model that refuses a pool that is not a batch of images (a single ``(C, H, W)`` image
    passed without its batch axis reads as ``(N, C, L)`` signals) fails with the shapes named."""
    try:
        yield
    except Exception as err:
        if images.dim() == 4:
            raise
        raise ValueError(
            f"the model fails on `images` of shape {tuple(images.shape)} ({err}); `images` must "
            "be an (N, C, H, W) batch of images, (N, C, L) of 1-D signals or (N, F) of features, "
            "as the model takes them (a single image: images[None])"
        ) from err


def _check_output(layer: str, out: torch.Tensor, channels: list[int], input_dims: int) -> None:
    """A layer output with units: ``(N, C, H, W)``, ``(N, C)``, or ``(N, C, L)`` on signals."""
    if out.dim() == 3 and input_dims == 3:  # channels over time: a (N, C, 1, L) map
        check_unit_channels(layer, out.unsqueeze(2), channels)
        return
    if out.dim() == 3:
        raise ValueError(
            f"layer {layer!r} outputs shape {tuple(out.shape)} on (N, C, H, W) images: tokens "
            "(N, T, D), not channels over time; dataset examples need a conv-like (N, C, H, W) "
            "or fully-connected (N, C) output on images, (N, C, L) on 1-D signals"
        )
    check_unit_channels(layer, out, channels)
