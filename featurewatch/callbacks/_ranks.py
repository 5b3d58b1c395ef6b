"""Work shared across DDP ranks: each rank computes its share of a call, every rank gets the whole.

Under a DDP strategy a callback with ``all_ranks`` runs its call on every rank (see
:class:`~featurewatch.callbacks.base.FeatureWatchCallback`); the parts that are independent per
element (renders of units, classes and variants; dataset-example maxima of pool images) are split
into contiguous shares, computed where they fall, and gathered: the call's wall time falls with the
number of ranks, and the results are those of one process, which the core functions guarantee (a
render's element or a pool image's maxima do not depend on which others share its batch).

Every rank must reach every :func:`gather` of a call, also when its own share failed: a share that
raises is gathered as its error text and every rank then raises it, so no rank waits forever in a
collective that another rank skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from featurewatch.core.examples import TopExamples, merge_top_examples, top_examples_multi
from featurewatch.core.projection import Projection, project_detailed

T = TypeVar("T")


class ShareFailedError(RuntimeError):
    """The share of a split call failed on some rank (the message names the rank)."""


#: ``(rank, world_size)`` of the trainer whose all-ranks call is running; ``(0, 1)`` elsewhere.
_WORLD: ContextVar[tuple[int, int]] = ContextVar("featurewatch_world", default=(0, 1))


@contextmanager
def ranks_of(global_rank: int, world_size: int) -> Iterator[None]:
    """Split the work of the call inside among ``world_size`` ranks (the trainer's: its
    strategy has set up the process group). Outside such a call nothing is split, so a process
    group that something else initialized never makes featurewatch wait for processes that do
    not run the call."""
    size = world_size if dist.is_available() and dist.is_initialized() else 1
    token = _WORLD.set((global_rank, size) if size > 1 else (0, 1))
    try:
        yield
    finally:
        _WORLD.reset(token)


def world() -> tuple[int, int]:
    """``(rank, world_size)`` inside :func:`ranks_of`; ``(0, 1)`` elsewhere."""
    return _WORLD.get()


def share(n: int, rank: int, size: int, group: int = 1) -> tuple[int, int]:
    """The contiguous ``[lo, hi)`` of ``n`` elements that ``rank`` of ``size`` computes.

    Whole groups of ``group`` elements stay on one rank; the first ranks take one group more when
    they do not divide evenly. A rank may get an empty share (``lo == hi``) when there are fewer
    groups than ranks.
    """
    groups = n // group
    base, extra = divmod(groups, size)
    lo = rank * base + min(rank, extra)
    hi = lo + base + (1 if rank < extra else 0)
    return lo * group, hi * group


def gather(compute: Callable[[], T]) -> list[T]:
    """Run ``compute`` (this rank's share) and return every rank's result, in rank order.

    Without a process group this is ``[compute()]``. With one, the results travel as pickled
    objects (``all_gather_object``: CPU tensors, small); a failure on any rank raises
    :class:`ShareFailedError` on every rank after the collective.
    """
    _, size = world()
    if size == 1:
        return [compute()]
    result: Any = None
    error: str | None = None
    try:
        result = compute()
    except Exception as err:  # noqa: BLE001 - gathered, then raised on every rank
        error = f"{type(err).__name__}: {err}"
    parts: list[Any] = [None] * size
    dist.all_gather_object(parts, (result, error))
    failed = [(r, e) for r, (_, e) in enumerate(parts) if e is not None]
    if failed:
        r, e = failed[0]
        raise ShareFailedError(f"rank {r} of {size} failed its share of the call: {e}")
    return [p for p, _ in parts]


def broadcast(value: T) -> T:
    """Rank zero's ``value`` on every rank (unchanged without a process group)."""
    _, size = world()
    if size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class SharedTensor:
    """Rank zero's tensor on every rank, sent again only when it changed (a pool fixed once is
    sent once): its shape and sum travel first, the tensor itself only when they differ from
    what this rank holds."""

    def __init__(self) -> None:
        self._held: tuple[Any, torch.Tensor] | None = None

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        rank, size = world()
        if size == 1:
            return tensor
        total = float(tensor.sum(dtype=torch.float64))  # without a float64 copy of the pool
        mark = broadcast((tuple(tensor.shape), tensor.dtype, total))
        if self._held is not None and self._held[0] == mark:
            return self._held[1]
        out = (
            tensor.detach().cpu().contiguous() if rank == 0 else torch.empty(mark[0], dtype=mark[1])
        )
        dist.broadcast(out, src=0)
        self._held = (mark, out)
        return out


def split_top_examples(
    model: nn.Module,
    pool: torch.Tensor,
    wanted: Mapping[str, Sequence[int]],
    **options: Any,
) -> dict[str, TopExamples]:
    """:func:`top_examples_multi` with each rank searching its share of the pool (the same
    ``pool`` on every rank, see :class:`SharedTensor`), merged into the whole pool's result."""
    rank, size = world()
    if size == 1:
        return top_examples_multi(model, pool, wanted, **options)
    lo, hi = share(len(pool), rank, size)
    found = gather(
        lambda: (lo, top_examples_multi(model, pool[lo:hi], wanted, **options)) if hi > lo else None
    )
    parts = [p for p in found if p is not None]
    k = int(options.get("k", 9))
    return {key: merge_top_examples([(o, t[key]) for o, t in parts], k) for key in parts[0][1]}


def split_projection(
    model: nn.Module,
    x: torch.Tensor,
    layer: str,
    channels: Sequence[int],
    positions: Sequence[Any] | None,
    **options: Any,
) -> Projection:
    """:func:`project_detailed` with each rank projecting its share of the images, gathered."""
    rank, size = world()
    if size == 1:
        return project_detailed(model, x, layer, list(channels), positions, **options)
    lo, hi = share(len(x), rank, size)

    def mine() -> Projection | None:
        if hi <= lo:
            return None
        where = None if positions is None else list(positions)[lo:hi]
        return project_detailed(model, x[lo:hi], layer, list(channels)[lo:hi], where, **options)

    parts = [p for p in gather(mine) if p is not None]
    return Projection(
        gradients=torch.cat([p.gradients for p in parts]),
        rule=parts[0].rule,
        rule_calls=max(p.rule_calls for p in parts),
    )


__all__ = [
    "ShareFailedError",
    "SharedTensor",
    "broadcast",
    "gather",
    "ranks_of",
    "share",
    "split_projection",
    "split_top_examples",
    "world",
]
