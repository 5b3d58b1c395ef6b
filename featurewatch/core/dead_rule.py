"""The death rule: a call site's window statistics, and which channels are dead, dying, dormant.

:class:`ChannelSummary` is what :class:`~featurewatch.core.stats.ChannelStatsRecorder` hands over
at the end of a window (on the CPU, reduced over processes under DDP); :func:`judge_channels`
turns it into a :class:`ChannelVerdict`. Kept apart from the recorder's hooks so that the rule can
be read, tested and reused (e.g. on statistics loaded from a checkpoint) without any model.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["ChannelSummary", "ChannelVerdict", "judge_channels"]


@dataclass(frozen=True)
class ChannelSummary:
    """Statistics of one call site over one window, on the CPU.

    Attributes:
        on_rate: ``(C,)`` float64 in ``[0, 1]``, fraction of values above the threshold (in the
            forwards whose rates were measured).
        max_abs: ``(C,)`` float32, maximum magnitude (every forward).
        mean_abs: ``(C,)`` float64, mean magnitude (rate forwards).
        silent_steps: ``(C,)`` int64, how many of the window's last updates (forwards) the channel
            went without firing; ``updates`` if it never fired (every forward).
        positions: values per channel in the rate forwards.
        updates: forwards (tensors) in the window.
    """

    on_rate: torch.Tensor
    max_abs: torch.Tensor
    mean_abs: torch.Tensor
    silent_steps: torch.Tensor
    positions: int
    updates: int

    @classmethod
    def from_totals(
        cls,
        count_on: torch.Tensor,
        sum_mag: torch.Tensor,
        max_mag: torch.Tensor,
        last_on: torch.Tensor,
        positions: int,
        updates: int,
    ) -> ChannelSummary:
        n = max(int(positions), 1)
        return cls(
            on_rate=(count_on.detach().double().cpu() / n).clamp_(0.0, 1.0),
            max_abs=max_mag.detach().float().cpu(),
            mean_abs=sum_mag.detach().double().cpu() / n,
            silent_steps=(int(updates) - 1 - last_on.detach().cpu().long()).clamp_(0, int(updates)),
            positions=int(positions),
            updates=int(updates),
        )

    @property
    def channels(self) -> int:
        return int(self.on_rate.numel())

    @property
    def fired(self) -> torch.Tensor:
        """``(C,)`` bool: the channel was above the threshold at least once, in any forward."""
        return (self.silent_steps < self.updates) | (self.on_rate > 0)

    @property
    def dead(self) -> list[int]:
        """Channels that never fired in the window."""
        return [int(c) for c in torch.nonzero(~self.fired).flatten()]

    def silent(self, patience: int | None) -> list[int]:
        """Dead channels plus those that did not fire in the window's last ``patience`` updates.

        A filter killed half way through a window fired before, so it is not in :attr:`dead`; it is
        here once it has been silent for ``patience`` forwards. ``None``: same as :attr:`dead`.
        """
        mask = ~self.fired
        if patience is not None:
            mask |= self.silent_steps >= int(patience)
        return [int(c) for c in torch.nonzero(mask).flatten()]

    def dying(self, rate: float) -> list[int]:
        """Channels that fired, but on fewer than ``rate`` of their values (dead ones excluded)."""
        return [int(c) for c in torch.nonzero(self.fired & (self.on_rate < rate)).flatten()]

    @property
    def dormancy(self) -> torch.Tensor:
        """``(C,)`` ReDo score: mean magnitude / its mean over the layer's channels (0 if all are
        0)."""
        layer_mean = self.mean_abs.mean()
        if float(layer_mean) <= 0.0:
            return torch.zeros_like(self.mean_abs)
        return self.mean_abs / layer_mean

    def dormant(self, tau: float) -> list[int]:
        """ReDo's tau-dormant channels: dormancy score ``<= tau``."""
        return [int(c) for c in torch.nonzero(self.dormancy <= tau).flatten()]

    def to_state(self) -> dict[str, Any]:
        """Plain values and compact tensors (loads with ``torch.load(weights_only=True)``).

        Stored in float32/int32 (16 bytes per channel per evaluation): an on-rate of exactly 0
        stays 0, and a positive one stays positive.
        """
        return {
            "on_rate": self.on_rate.float(),
            "max_abs": self.max_abs.float(),
            "mean_abs": self.mean_abs.float(),
            "silent_steps": self.silent_steps.int(),
            "positions": self.positions,
            "updates": self.updates,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ChannelSummary:
        on_rate = torch.as_tensor(state["on_rate"], dtype=torch.float64)
        updates = int(state.get("updates", 0))
        silent = state.get("silent_steps")
        return cls(
            on_rate=on_rate,
            max_abs=torch.as_tensor(state["max_abs"], dtype=torch.float32),
            mean_abs=torch.as_tensor(state["mean_abs"], dtype=torch.float64),
            silent_steps=torch.as_tensor(silent, dtype=torch.int64)
            if silent is not None
            else torch.where(on_rate > 0, 0, updates),
            positions=int(state["positions"]),
            updates=updates,
        )


@dataclass(frozen=True)
class ChannelVerdict:
    """Which channels of one call site are dead, dying and dormant over one window.

    Made by :func:`judge_channels`; every list holds channel indices in increasing order.

    Attributes:
        channels: how many channels the site has.
        dead: the channels judged dead (see :func:`judge_channels`).
        dying: the live channels that fired on fewer than ``dying_rate`` of their values.
        dormant: ReDo's tau-dormant channels (dead ones included: their score is 0).
    """

    channels: int
    dead: list[int]
    dying: list[int]
    dormant: list[int]

    @property
    def dead_fraction(self) -> float:
        return len(self.dead) / self.channels

    @property
    def dying_fraction(self) -> float:
        return len(self.dying) / self.channels

    @property
    def dormant_fraction(self) -> float:
        return len(self.dormant) / self.channels


def judge_channels(
    summary: ChannelSummary,
    *,
    patience: int | None,
    dying_rate: float,
    dormancy_threshold: float,
    previous_updates: int | None = None,
    previously_dead: Collection[int] = (),
    final: bool = False,
) -> ChannelVerdict:
    """Judge one call site's channels over one window: the death rule, in one place.

    A channel is *dead* if it never fired in the window, or did not fire in its last ``patience``
    forwards (:meth:`ChannelSummary.silent`: a filter killed half way through a window is reported
    at that window's evaluation). The *final* window (the leftover between the last scheduled
    evaluation and the end of training) is often shorter than a regular one, and a few silent
    forwards there are no evidence: when it has fewer forwards than the previous window
    (``previous_updates``), a channel is dead only if it was dead at the previous evaluation
    (``previously_dead``) and stayed silent, or has been silent for ``patience`` forwards all the
    same. *Dying*: fired, but on fewer than ``dying_rate`` of its values (dead ones excluded).
    *Dormant*: ReDo score ``<= dormancy_threshold`` (Sokar et al., 2023).

    Args:
        summary: the site's statistics over the window (reduced over processes under DDP, so every
            rank judges alike).
        patience: silent forwards at the end of the window that make a channel dead; ``None``:
            only channels silent for the whole window.
        dying_rate: on-rate below which a live channel is dying.
        dormancy_threshold: ReDo's tau.
        previous_updates: forwards in this site's previous window (``None``: no previous one).
        previously_dead: the channels judged dead at the previous evaluation.
        final: whether this is the end-of-training window.

    Returns:
        The verdict.

    Example:
        >>> v = judge_channels(summary, patience=20, dying_rate=0.01, dormancy_threshold=0.025)
        >>> v.dead, v.dead_fraction
        ([3], 0.125)
    """
    dead = summary.silent(patience)
    if final and previous_updates is not None and summary.updates < previous_updates:
        was_dead = set(previously_dead)
        # silent for `patience` forwards counts only if the window is at least that long
        enough = patience if patience is not None and summary.updates >= patience else None
        dead = [
            c
            for c in dead
            if c in was_dead or (enough is not None and int(summary.silent_steps[c]) >= enough)
        ]
    dead_set = set(dead)
    return ChannelVerdict(
        channels=summary.channels,
        dead=dead,
        dying=[c for c in summary.dying(dying_rate) if c not in dead_set],
        dormant=summary.dormant(dormancy_threshold),
    )
