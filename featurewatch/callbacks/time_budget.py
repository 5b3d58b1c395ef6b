"""A time budget that every featurewatch callback of a trainer shares.

:class:`TimeBudget` keeps featurewatch's own time within a fraction of the training time so far, by
*deferring* calls: a call that is due while featurewatch is over its budget does not run, and the
callback's next due call (with the images of that later step) takes its place. No image is ever
made cheaper or smaller to fit: a call either runs exactly as it would without the budget, or it
does not run and that is logged.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl

from featurewatch.callbacks._arguments import check_number
from featurewatch.loggers import Event, Sink, sinks_for

if TYPE_CHECKING:  # pragma: no cover - types only (base.py imports this module)
    from featurewatch.callbacks.base import FeatureWatchCallback

__all__ = ["TimeBudget"]

#: the budget's own key prefix: ``featurewatch/budget/...``
PREFIX = "featurewatch/budget"


class _Account:
    """One callback's standing with the budget (plain values: it goes into the checkpoint)."""

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        state = state or {}
        #: calls of this callback deferred so far in the run (resumes included)
        self.deferred: int = int(state.get("deferred", 0))
        #: the steps deferred since its last call (said in the next call's text)
        self.pending: list[int] = [int(s) for s in state.get("pending", [])]
        #: the decision number of its oldest deferred call since it last ran (None: not waiting)
        self.waiting_since: int | None = state.get("waiting_since")
        #: the seconds of its last call (None: it has not run yet)
        self.expected: float | None = state.get("expected")
        #: the step of its last call
        self.last_run: int | None = state.get("last_run")

    def state(self) -> dict[str, Any]:
        return {**vars(self), "pending": list(self.pending)}


class TimeBudget(pl.Callback):
    """Keep featurewatch's own time within ``fraction`` of the training time so far.

    Add one to the trainer next to the featurewatch callbacks; they find it at ``setup`` and ask
    it before each call. Without a ``TimeBudget`` every call runs, exactly as before.

    **What is measured.** *Training time* is the wall time of the trainer's steps, from
    ``on_train_batch_start`` to ``on_train_batch_end`` (forward, backward, optimizer step, the
    step's logging and the other callbacks' batch hooks), plus the validation loops of ``fit``
    (``on_validation_start`` to ``on_validation_end``; not the sanity check). Featurewatch calls
    that run inside those windows are subtracted. Data loading between steps, epoch-end hooks and
    checkpoint saving are not counted, so the budget errs on the small side. Per-step hooks that
    run *inside* the step (``DeadNeuronMonitor``'s statistics, ``DatasetExamples``' pool) count as
    training time. *Featurewatch's time* is the sum of the calls' seconds as each callback measures
    them (its ``last_seconds``: the work, PNG encoding and logger I/O).

    **The rule.** Before a call, with ``spent`` featurewatch's time and ``budget = fraction x
    training time``:

    * ``spent > budget``: the call is deferred;
    * else, if this callback's previous call took ``t`` seconds and ``spent + r + t <= budget``,
      where ``r`` is what the callbacks that have waited longer than it took in their previous
      calls: it runs (it fits, and leaves their share);
    * else (it does not fit, or it has not run yet): it runs if no other callback has waited
      longer (has an older deferred call), and is deferred otherwise - so the callbacks take
      turns, and a callback early in ``trainer.callbacks`` cannot starve the later ones.

    A call starts only within the budget, so featurewatch's total stays within ``fraction x
    training time`` plus at most one call. The first call of the run (typically ``at_start``,
    before any training) starts at ``0 <= 0`` and is that one call. **The final call**
    (``at_end``) follows the same rule: it is a call's worth like any other, and running every
    callback's final call regardless would overshoot by one call per callback. A skipped final
    call is logged with a text entry saying which step the callback's latest images are from.

    **Distributed.** Decisions are taken on global rank zero, from rank zero's measurements (it
    does all the work of the callbacks that run on rank zero only). For a callback that runs on
    every rank (``DeadNeuronMonitor``: collectives), rank zero's decision is broadcast, so every
    rank takes the same one.

    Logged keys (on the sinks of the trainer's loggers, rank zero):

    * ``featurewatch/<name>/deferred`` (scalar, by each callback): how many of its calls were
      deferred so far, at each deferred call and each call that ran from its first deferral on
      (a callback never deferred logs none: a chart of zeros says nothing);
    * ``featurewatch/<name>/budget`` (text, by each callback): in the first call after deferred
      ones, which steps were deferred and why; at a skipped final call, that it was skipped;
    * ``featurewatch/budget/fraction_used``: featurewatch's time / training time so far, at each
      step where a call ran or was deferred;
    * ``featurewatch/budget/training_seconds``, ``featurewatch/budget/featurewatch_seconds``: the
      two measurements.

    Args:
        fraction: featurewatch's share of the training time, in ``(0, 1]`` (``0.1``: featurewatch
            may add at most about 10% to the training time).

    Raises:
        TypeError: if ``fraction`` is not a number.
        ValueError: if it is not in ``(0, 1]``.

    Example::

        trainer = pl.Trainer(callbacks=[ChannelVisualization(["layer3"]), TimeBudget(0.1)])
    """

    def __init__(self, fraction: float = 0.1) -> None:
        try:
            self.fraction = check_number("fraction", fraction, 0.0, 1.0, low_open=True)
        except (TypeError, ValueError) as err:
            raise type(err)(
                f"TimeBudget: {err} (the share of the training time featurewatch may take, e.g. "
                "0.15 for 15%)"
            ) from None
        self._sinks: list[Sink] = []
        self._reset()

    def _reset(self) -> None:
        self._training = 0.0  # closed windows, featurewatch calls inside them taken out
        self.featurewatch_seconds: float = 0.0
        self._accounts: dict[str, _Account] = {}
        self._decisions = 0
        self._window_start: float | None = None
        self._window_depth = 0
        self._window_featurewatch = 0.0
        self._snapshot: tuple[int, int, dict[str, float]] | None = None

    # ------------------------------------------------------------------ public measurements
    @property
    def training_seconds(self) -> float:
        """The training time so far (the window of the current step included)."""
        if self._window_start is None:
            return self._training
        open_window = time.perf_counter() - self._window_start - self._window_featurewatch
        return self._training + max(open_window, 0.0)

    @property
    def fraction_used(self) -> float:
        """Featurewatch's time / training time so far (0 before both start, inf with no
        training time yet)."""
        training = self.training_seconds
        if training > 0:
            return self.featurewatch_seconds / training
        return 0.0 if self.featurewatch_seconds == 0 else math.inf

    @property
    def deferred(self) -> dict[str, int]:
        """Deferred calls per callback ``name`` so far."""
        return {name: a.deferred for name, a in self._accounts.items()}

    @staticmethod
    def of(trainer: pl.Trainer) -> TimeBudget | None:
        """The trainer's budget, or ``None``.

        Raises:
            ValueError: if the trainer has more than one.
        """
        found = [cb for cb in getattr(trainer, "callbacks", []) if isinstance(cb, TimeBudget)]
        if len(found) > 1:
            raise ValueError(
                f"the trainer has {len(found)} TimeBudget callbacks "
                f"(fractions {', '.join(f'{b.fraction:g}' for b in found)}); featurewatch's "
                "callbacks share one budget: keep one TimeBudget"
            )
        return found[0] if found else None

    # ------------------------------------------------------------------ asked by the callbacks
    def admit(
        self, callback: FeatureWatchCallback, trainer: pl.Trainer, event: Event, ending: bool
    ) -> bool:
        """Whether ``callback``'s call at ``event.step`` runs now.

        Every rank that calls this for a callback with ``all_ranks`` gets rank zero's answer (a
        broadcast: all of them must call it); other callbacks ask on rank zero only (elsewhere the
        answer is True and nothing is recorded: those ranks do not run the work).

        On a run, ``event`` gets the callback's ``deferred`` count and, after deferred calls, the
        text saying which; when deferred, it gets the count (and, for a final call, the text),
        for the caller to write.
        """
        if not (callback.all_ranks or trainer.is_global_zero):
            return True
        name = callback.name
        account = self._accounts.setdefault(name, _Account())
        # a callback whose calls are cheap and time-critical (DeadNeuronMonitor's alerts) is never
        # deferred; its time still counts
        exempt = getattr(callback, "budget_exempt", False)
        run = (exempt or self._decide(name, account)) if trainer.is_global_zero else False
        if callback.all_ranks and trainer.world_size > 1:
            run = bool(trainer.strategy.broadcast(run, src=0))
        self._decisions += 1
        counted = True
        if run:
            if account.pending:
                event.add_text(f"featurewatch/{name}/budget", self._deferred_note(account))
            account.pending, account.waiting_since = [], None
            account.last_run = event.step
        else:
            # a step whose call was deferred is counted once (the final call may ask again)
            counted = not account.pending or account.pending[-1] != event.step
            if counted:
                account.deferred += 1
                account.pending.append(event.step)
            if account.waiting_since is None:
                account.waiting_since = self._decisions
            if ending:
                event.add_text(f"featurewatch/{name}/budget", self._skipped_note(account, event))
        if counted and account.deferred:  # zeros until the first deferral would be clutter
            event.add_scalar(f"featurewatch/{name}/deferred", account.deferred)
        self._note_step(event)
        return run

    def spent(self, callback: FeatureWatchCallback, seconds: float) -> None:
        """Count one call of ``callback`` that took ``seconds``."""
        self.featurewatch_seconds += seconds
        if self._window_start is not None:
            self._window_featurewatch += seconds
        self._accounts.setdefault(callback.name, _Account()).expected = float(seconds)
        if self._snapshot is not None:
            self._note_step(Event(step=self._snapshot[0], epoch=self._snapshot[1]))

    def _decide(self, name: str, account: _Account) -> bool:
        budget, spent = self.fraction * self.training_seconds, self.featurewatch_seconds
        if spent > budget:
            return False
        mine = account.waiting_since
        older = [
            a
            for n, a in self._accounts.items()
            if n != name
            and a.waiting_since is not None
            and (mine is None or a.waiting_since < mine)
        ]
        reserved = sum(a.expected or 0.0 for a in older)  # what those who waited longer need
        if account.expected is not None and spent + reserved + account.expected <= budget:
            return True
        return not older

    def _deferred_note(self, account: _Account) -> str:
        steps = ", ".join(str(s) for s in account.pending)
        since = "" if account.last_run is None else f" (its previous call: step {account.last_run})"
        return (
            f"TimeBudget(fraction={self.fraction:g}) deferred {len(account.pending)} call(s) of "
            f"this callback before this one, at step(s) {steps}{since}: featurewatch's own time "
            f"was over {self.fraction:.0%} of the training time, or the call did not fit in what "
            f"was left while another callback had waited longer. {account.deferred} deferred in "
            f"this run so far; featurewatch has used {self.fraction_used:.1%} of the training time."
        )

    def _skipped_note(self, account: _Account, event: Event) -> str:
        latest = (
            "it has not run in this fit"
            if account.last_run is None
            else f"its latest images are from step {account.last_run}"
        )
        return (
            f"TimeBudget(fraction={self.fraction:g}): the final call at step {event.step} was "
            f"skipped ({self.featurewatch_seconds:.1f} s of featurewatch for "
            f"{self.training_seconds:.1f} s of training, {self.fraction_used:.1%}); {latest}."
        )

    # ------------------------------------------------------------------ measuring training
    def _open(self) -> None:
        if self._window_depth == 0:
            self._window_start, self._window_featurewatch = time.perf_counter(), 0.0
        self._window_depth += 1

    def _close_window(self) -> None:
        if self._window_depth == 0:
            return
        self._window_depth -= 1
        if self._window_depth == 0 and self._window_start is not None:
            self._training = self.training_seconds
            self._window_start = None

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._open()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._close_window()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._open()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._close_window()

    # ------------------------------------------------------------------ lifecycle, logging
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        TimeBudget.of(trainer)  # refuses a second budget
        if stage != "fit":
            return
        self._reset()  # a reused object starts fresh; a resumed fit loads its state after this
        self._sinks = sinks_for(trainer) if trainer.is_global_zero else []

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._flush()
        self._close()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._close()

    def _note_step(self, event: Event) -> None:
        """Keep the budget's figures for ``event``'s step; write the previous step's first."""
        if self._snapshot is not None and self._snapshot[0] != event.step:
            self._flush()
        scalars = {
            f"{PREFIX}/fraction_used": self.fraction_used,
            f"{PREFIX}/training_seconds": self.training_seconds,
            f"{PREFIX}/featurewatch_seconds": self.featurewatch_seconds,
        }
        self._snapshot = (event.step, event.epoch, scalars)

    def _flush(self) -> None:
        if self._snapshot is None:
            return
        step, epoch, scalars = self._snapshot
        self._snapshot = None
        _write(self._sinks, Event(step=step, epoch=epoch, scalars=dict(scalars)))

    def _close(self) -> None:
        for sink in self._sinks:
            try:
                sink.close()
            except Exception as err:  # noqa: BLE001  # pragma: no cover - defensive
                warnings.warn(f"featurewatch TimeBudget: closing {sink.destination} failed: {err}")
        self._sinks = []

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        return {
            "fraction": self.fraction,
            "training_seconds": self.training_seconds,
            "featurewatch_seconds": self.featurewatch_seconds,
            "decisions": self._decisions,
            "accounts": {name: a.state() for name, a in self._accounts.items()},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._training = float(state_dict.get("training_seconds", 0.0))
        self.featurewatch_seconds = float(state_dict.get("featurewatch_seconds", 0.0))
        self._decisions = int(state_dict.get("decisions", 0))
        self._accounts = {
            str(name): _Account(state) for name, state in state_dict.get("accounts", {}).items()
        }


def _write(sinks: Sequence[Sink], event: Event) -> None:
    for sink in sinks:
        try:
            sink.write(event)
        except Exception as err:  # noqa: BLE001 - logging the budget never stops training
            warnings.warn(
                f"featurewatch TimeBudget: writing to {sink.destination} failed at step "
                f"{event.step}: {type(err).__name__}: {err}",
                stacklevel=2,
            )
