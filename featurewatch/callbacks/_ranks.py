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

from collections.abc import Callable
from typing import Any, TypeVar

import torch.distributed as dist

T = TypeVar("T")


class ShareFailedError(RuntimeError):
    """The share of a split call failed on some rank (the message names the rank)."""


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialized process group; ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


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


__all__ = ["ShareFailedError", "broadcast", "gather", "share", "world"]
