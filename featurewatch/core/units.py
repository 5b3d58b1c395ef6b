"""One unit of a layer - a channel at a position of its feature map - read out of its output.

Dataset examples rank images by a unit's maximum, receptive fields and projections differentiate a
unit's value; the three agree on what a unit is here:

* :func:`check_unit_channels` - the layer's output is ``(N, C, H, W)`` (conv-like) or ``(N, C)``
  (fully connected) and the channels exist (the message gives the valid range);
* :func:`unit_values` - the ``(N,)`` values of one unit per image (a given position, or the
  channel's maximum), vectorized on the tensor's device;
* :func:`first_argmax` - the maximum and the *first* index reaching it, so ties are broken the
  same way on every device and every run.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from featurewatch.core.validation import out_of_range_message

__all__ = ["check_unit_channels", "first_argmax", "unit_values"]


def first_argmax(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Max over the last dim and the *first* index reaching it (deterministic on ties)."""
    values = flat.amax(-1)
    length = flat.shape[-1]
    ar = torch.arange(length, device=flat.device).expand_as(flat)
    index = torch.where(flat == values.unsqueeze(-1), ar, length).amin(-1).clamp_max(length - 1)
    return values, index


def check_unit_channels(layer: str, out: torch.Tensor, channels: Sequence[int]) -> None:
    """Check that ``layer``'s output ``out`` has units (2-D or 4-D) and all of ``channels``.

    Raises:
        ValueError: for another output shape, or a channel out of range (with the valid range).
    """
    if out.dim() not in (2, 4):
        raise ValueError(
            f"layer {layer!r} outputs shape {tuple(out.shape)}; dataset examples need a conv-like "
            "(N, C, H, W) or fully-connected (N, C) output: name a conv, activation or linear layer"
        )
    if max(channels) >= out.shape[1]:
        raise ValueError(out_of_range_message(max(channels), out.shape[1], layer=layer))


def unit_values(
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
                f"layer {layer!r} is fully connected (output {tuple(out.shape)}); its units have "
                "no position"
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
                f"position {(y, x)} outside the {h}x{w} feature map of layer {layer!r} (valid: "
                f"y 0..{h - 1}, x 0..{w - 1})"
            )
        flat_given.append(y * w + x)
    if channels is None:
        maps = out.sum(1).flatten(1)  # (N, H*W)
    else:
        maps = out[rows, torch.tensor(list(channels), device=out.device)].flatten(1)
    flat = torch.tensor(flat_given, device=out.device)
    missing = [p is None for p in given]
    if any(missing):
        _, first = first_argmax(maps.detach())
        flat = torch.where(torch.tensor(missing, device=out.device), first, flat)
    return maps[rows, flat]
