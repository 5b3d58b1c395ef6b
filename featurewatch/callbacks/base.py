"""The contract every featurewatch callback shares.

A featurewatch callback is *thin*: it says when to run (a schedule), what to check against the model
before training starts, and how to fill an :class:`~featurewatch.loggers.Event` from the core. This
base class owns everything else, once, for all of them:

* **schedule** - ``every_n_epochs`` or ``every_n_train_steps`` (exclusive), an optional run at the
  start, and a final run at the end of training; nothing during the sanity check or
  ``fast_dev_run``; never twice at one global step;
* **isolation** - the work runs inside :func:`featurewatch.core.hygiene.isolated`, so parameters,
  ``.grad``, ``requires_grad``, train/eval flags, BatchNorm statistics and the global RNG streams
  are exactly as they would be without featurewatch;
* **failure isolation** - an exception inside the work becomes one warning and a logged text entry,
  and training goes on; ``strict=True`` re-raises;
* **one key prefix** - every key a callback logs (its content, its wall time
  ``featurewatch/<name>/seconds``, its errors ``featurewatch/<name>/error``) starts with
  ``featurewatch/<name>/``; ``name`` defaults to the callback's :attr:`default_name` and two
  callbacks of one trainer may not share it (``name=`` tells two instances apart);
* **distributed** - work and logging on global rank zero only, unless a subclass needs every rank
  (collectives), in which case every rank runs the work and only rank zero logs;
* **time budget** - with a :class:`~featurewatch.callbacks.time_budget.TimeBudget` among the
  trainer's callbacks, each call asks it first and may be deferred to the next due call (logged);
  without one, every due call runs;
* **resume, reuse** - ``state_dict``/``load_state_dict`` keep the cadence and any fixed probe
  images; a callback object reused for another ``fit`` starts that fit as fresh as when it was
  constructed (a resumed fit then loads its checkpointed state). ``state_key`` is ``name=`` when
  given (stable when other arguments change between runs), otherwise the configuration, so several
  instances of one callback coexist.

**One schedule, declared once.** The five keywords every callback takes (``every_n_epochs``,
``every_n_train_steps``, ``at_start``, ``at_end``, ``strict``) are declared in one place, the
signature of :meth:`FeatureWatchCallback.__init__`, which validates them into a :class:`Schedule`
(a frozen dataclass that also answers "is a call due now?", as Lightning's ``ModelCheckpoint``
groups its trigger checks). A subclass declares only the arguments that are its own and passes the
rest on unchanged::

    def __init__(self, layer: str | None = None, *, min_size: int = 32, **schedule: Any) -> None:
        super().__init__(**schedule)

Users still write ``ChannelVisualization(["conv1"], every_n_epochs=2, at_start=True)``. Why plain
``**schedule: Any`` and not ``**schedule: Unpack[ScheduleKwargs]`` (a ``TypedDict``):

* **LightningCLI** (jsonargparse) reads a ``**kwargs`` that is forwarded to ``super().__init__``
  from the source and adds the parent's parameters with their types, defaults and docstrings, along
  the whole chain (``ChannelVisualization`` -> ``RenderCallback`` -> this class). With ``Unpack`` it
  takes the ``TypedDict``'s keys instead: their types survive, but a ``TypedDict`` has no defaults
  (they vanish from ``--help`` and ``--print_config``) and the chain stops there, so every render
  setting would have to be re-declared in a second ``TypedDict``. The CLI test checks every
  callback's schedule keywords and their defaults through jsonargparse.
* **Type checkers** accept every valid call (the forwarded keywords are ``Any``), and the signatures
  that define the keywords are fully typed. What they cannot flag statically, a misspelled or
  ill-typed keyword, fails at construction: ``every_n_epoch=2`` is Python's "unexpected keyword
  argument", ``every_n_epochs="2"`` a ``ValueError`` naming the argument.
"""

from __future__ import annotations

import time
import traceback
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn

from featurewatch.callbacks._arguments import check_layer, check_layers, check_number
from featurewatch.callbacks._identity import (
    Pristine,
    check_name,
    check_unique_names,
    config_digest,
)
from featurewatch.callbacks._probe import ProbeImages
from featurewatch.callbacks._progress import Announcer
from featurewatch.callbacks._ranks import ranks_of
from featurewatch.callbacks.time_budget import TimeBudget
from featurewatch.core.hygiene import isolated
from featurewatch.core.validation import check_bool, check_int
from featurewatch.loggers import Event, Sink, sinks_for

__all__ = [
    "FeatureWatchCallback",
    "FeatureWatchWarning",
    "OfflineTrainer",
    "Schedule",
    "batch_input",
    "check_int",
    "check_layer",
    "check_layers",
    "check_number",
]


class FeatureWatchWarning(UserWarning):
    """A featurewatch visualization failed; training continued."""


def batch_input(batch: Any, input_key: int | str = 0) -> torch.Tensor:
    """Pick the model input out of a batch.

    A tensor batch is the input; a tuple/list batch gives ``batch[input_key]`` (default: the first
    element, as in ``(x, y)``); a dict batch gives ``batch[input_key]`` (with the default ``0``, the
    first tensor value).

    Raises:
        TypeError: if no tensor can be found.
    """
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, dict):
        if isinstance(input_key, str):
            if input_key not in batch:
                raise TypeError(
                    f"batch has no key {input_key!r} (keys: {sorted(map(str, batch))}); set "
                    "`input_key`"
                )
            found = batch[input_key]
        else:
            tensors = [v for v in batch.values() if isinstance(v, torch.Tensor)]
            if not tensors:
                raise TypeError(
                    "batch dict holds no tensor; set `input_key` to the key of the images"
                )
            found = tensors[input_key]
    elif isinstance(batch, (tuple, list)):
        if not isinstance(input_key, int):
            raise TypeError(
                f"batch is a {type(batch).__name__}; `input_key` must be an int index, got "
                f"{input_key!r}"
            )
        found = batch[input_key]
    else:
        found = batch
    if not isinstance(found, torch.Tensor):
        raise TypeError(
            f"expected the model input to be a tensor, got {type(found).__name__}; set `input_key` "
            "to where the images are in your batch"
        )
    if found.dim() < 2 or not (found.is_floating_point() or found.is_complex()):
        if isinstance(batch, dict):
            where = next(k for k, v in batch.items() if v is found)
            hint = f"the key of the inputs (keys: {sorted(map(str, batch))})"
            what = f"entry {where!r}"
        else:
            hint = f"the index of the inputs (the batch has {len(batch)} elements)"
            what = f"element {input_key}"
        raise TypeError(
            f"the batch's {what} (input_key={input_key!r}) is a {tuple(found.shape)} {found.dtype} "
            "tensor, which looks like labels, not model inputs (float (N, F), (N, C, L) or "
            f"(N, C, H, W)); pass input_key= with {hint}"
        )
    return found


def _raised_in_forward(err: BaseException, model: torch.nn.Module) -> bool:
    """Whether ``err`` came from inside ``model``'s own ``forward`` (not from featurewatch)."""
    code = getattr(type(model).forward, "__code__", None)
    tb, inside, last = err.__traceback__, False, None
    while tb is not None:
        inside = inside or tb.tb_frame.f_code is code
        last, tb = tb, tb.tb_next
    # featurewatch's own checks (in hooks during that forward) say what to do already
    return (
        last is not None
        and inside
        and not str(last.tb_frame.f_globals.get("__name__", "")).startswith("featurewatch")
    )


def _last_epoch(trainer: pl.Trainer) -> int:
    """The epoch the last training step belongs to, at ``on_train_end``.

    ``trainer.current_epoch`` has moved on to the next one there (a 1-epoch run ends "at epoch
    1"; ``max_steps`` ending an epoch half way moves it on too); the count of started epochs has
    not.
    """
    try:
        started = trainer.fit_loop.epoch_progress.current.started  # type: ignore[attr-defined]
        return max(int(started) - 1, 0)
    except AttributeError:  # a Lightning whose loops look different: the usual counter
        return int(trainer.current_epoch)


@dataclass(frozen=True)
class Schedule:
    """When a callback runs, and whether its failures stop training (validated on creation).

    Built by :class:`FeatureWatchCallback` from its keywords (see the module docstring); the trigger
    checks live here so that every callback runs on exactly the same rule.

    Attributes:
        every_n_epochs: run at the end of every n-th training epoch; exclusive with
            ``every_n_train_steps``.
        every_n_train_steps: run after every n-th optimizer step instead.
        at_start: also run once before the first optimizer step.
        at_end: run once more at the end of training, unless that step was just logged.
        strict: re-raise exceptions from the work instead of warning and going on.

    Raises:
        ValueError: if a period is not a positive int or ``None``, or both periods are set.
        TypeError: if a flag is not a bool.

    Example:
        >>> Schedule(every_n_epochs=None, every_n_train_steps=100).after_step(200)
        True
    """

    every_n_epochs: int | None = 1
    every_n_train_steps: int | None = None
    at_start: bool = False
    at_end: bool = True
    strict: bool = False

    def __post_init__(self) -> None:
        check_int("every_n_epochs", self.every_n_epochs, allow_none=True)
        check_int("every_n_train_steps", self.every_n_train_steps, allow_none=True)
        if self.every_n_train_steps is not None and self.every_n_epochs is not None:
            raise ValueError(
                "set either `every_n_epochs` or `every_n_train_steps`, not both (got "
                f"every_n_epochs={self.every_n_epochs}, every_n_train_steps="
                f"{self.every_n_train_steps}); pass every_n_epochs=None to schedule by steps"
            )
        for flag in ("at_start", "at_end", "strict"):
            check_bool(flag, getattr(self, flag))

    def after_step(self, global_step: int) -> bool:
        """Whether a call is due after the optimizer step that made ``global_step`` (> 0)."""
        n = self.every_n_train_steps
        return n is not None and global_step > 0 and global_step % n == 0

    def after_epoch(self, epoch: int) -> bool:
        """Whether a call is due at the end of training epoch ``epoch`` (0-based)."""
        n = self.every_n_epochs
        return n is not None and (epoch + 1) % n == 0


class _LocalStrategy:
    """A single process's strategy: reductions return their input, the device is the CPU."""

    root_device = torch.device("cpu")

    def reduce(self, tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return tensor

    def barrier(self, *args: Any, **kwargs: Any) -> None:
        return None


class OfflineTrainer:
    """What a featurewatch call reads from a ``pl.Trainer``, for calls outside training.

    ``featurewatch replay`` runs the callbacks over saved checkpoints of a finished run: each call
    needs the step and epoch to log at, and the trainer's answers to "am I rank zero, is this a
    sanity check", nothing else. With this stand-in the callbacks' own ``check_model``,
    ``check_input`` and ``visualize`` run unchanged (see
    :meth:`FeatureWatchCallback.replay_setup`): one process, no sanity check, no logger, no
    dataloaders (sinks are given explicitly).

    Args:
        global_step: the step the call is logged at (a checkpoint's ``global_step``).
        current_epoch: its epoch.
    """

    is_global_zero = True
    global_rank = 0
    world_size = 1
    sanity_checking = False
    fast_dev_run = False
    should_stop = False
    datamodule = None
    train_dataloader = None
    logger = None
    loggers: tuple[Any, ...] = ()
    strategy = _LocalStrategy()

    def __init__(self, global_step: int = 0, current_epoch: int = 0) -> None:
        self.global_step = int(global_step)
        self.current_epoch = int(current_epoch)


class FeatureWatchCallback(pl.Callback, ABC):
    """Base class of every featurewatch callback (see the module docstring for the contract).

    Subclasses set :attr:`default_name`, and implement :meth:`visualize` (fill the event; runs
    isolated) and, when they have configuration to check against the model, :meth:`check_model`
    (called in ``setup``) and :meth:`check_input` (called once with the first real input batch,
    before the first training step). Their ``__init__`` declares their own arguments and forwards
    the schedule keywords with ``**schedule`` (see the module docstring).

    Args:
        every_n_epochs: run at the end of every n-th training epoch. Exclusive with
            ``every_n_train_steps``.
        every_n_train_steps: run after every n-th optimizer step instead.
        at_start: also run once before the first optimizer step (shows the network at init; runs
            when the first training batch arrives, so it can use that batch's size and images).
        at_end: run once more at the end of training, unless this step was just logged.
        strict: re-raise exceptions from the visualization instead of warning and going on.
        name: the key prefix of everything this instance logs, ``featurewatch/<name>/...``
            (default: the class's :attr:`default_name`, e.g. ``"channels"``). Give two
            instances of one trainer distinct names (``setup`` refuses two with one name); with a
            name, the checkpoint ``state_key`` is the name alone, so changed arguments keep the
            state on resume.

    Raises:
        ValueError, TypeError: if the schedule or the name is invalid (see :class:`Schedule`).
    """

    #: The key prefix when no ``name=`` is given: ``featurewatch/<default_name>/...``.
    default_name: ClassVar[str] = "callback"
    #: Arguments that only decide what to do with what is measured (``strict``, an alert's
    #: action): changing them between runs keeps the checkpointed state of an unnamed instance.
    decisions: ClassVar[frozenset[str]] = frozenset({"strict"})
    #: Never deferred by a :class:`~featurewatch.callbacks.time_budget.TimeBudget` (cheap calls
    #: whose timing matters, such as DeadNeuronMonitor's alerts); their time still counts.
    budget_exempt: ClassVar[bool] = False
    #: Run :meth:`visualize` on every rank (it contains collectives); logging stays on rank zero.
    all_ranks: ClassVar[bool] = False

    def __init__(
        self,
        *,
        every_n_epochs: int | None = 1,
        every_n_train_steps: int | None = None,
        at_start: bool = False,
        at_end: bool = True,
        strict: bool = False,
        name: str | None = None,
    ) -> None:
        try:
            self.schedule = Schedule(every_n_epochs, every_n_train_steps, at_start, at_end, strict)
        except (TypeError, ValueError) as err:
            raise type(err)(f"{type(self).__name__}: {err}") from None
        #: the key prefix of this instance: ``featurewatch/<name>/...``
        self.name: str = (
            type(self).default_name if name is None else check_name(type(self).__name__, name)
        )
        self._named = name is not None
        self._announcer = Announcer(type(self).__name__)
        self._pristine: Pristine | None = None
        self._fitted = False
        self._sinks: list[Sink] = []
        self._budget: TimeBudget | None = None
        self._last_step: int | None = None
        self._calls = 0
        self._failures = 0
        self._part_failed = False
        #: True during the ``at_end`` call (its window of steps may be a short leftover)
        self.ending = False
        self._checked_input = False
        self._start_pending = False
        self.last_seconds: float = 0.0
        self.total_seconds: float = 0.0

    # ------------------------------------------------------------------ the schedule, read-only
    @property
    def every_n_epochs(self) -> int | None:
        return self.schedule.every_n_epochs

    @property
    def every_n_train_steps(self) -> int | None:
        return self.schedule.every_n_train_steps

    @property
    def at_start(self) -> bool:
        return self.schedule.at_start

    @property
    def at_end(self) -> bool:
        return self.schedule.at_end

    @property
    def strict(self) -> bool:
        return self.schedule.strict

    # ------------------------------------------------------------------ subclass API
    def check_model(self, pl_module: pl.LightningModule) -> None:
        """Validate the configuration against the model's modules (raise ``ValueError``)."""

    def check_input(self, pl_module: pl.LightningModule, x: torch.Tensor) -> None:
        """Validate the configuration against one real input batch (raise ``ValueError``).

        Called once, isolated, with the first batch Lightning feeds the model.
        """

    @abstractmethod
    def visualize(self, trainer: pl.Trainer, pl_module: pl.LightningModule, event: Event) -> None:
        """Compute and add this callback's images/scalars to ``event`` (runs isolated)."""

    def observe_batch(self, batch: Any, split: str) -> None:
        """Look at a batch Lightning is about to feed (``split`` is ``"train"`` or ``"val"``).

        Must be cheap: it runs on every step. The default does nothing.
        """

    def state_key_fields(self) -> dict[str, Any]:
        """Configuration that distinguishes two instances of this callback in a checkpoint."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        """Subclass state to checkpoint: plain Python values and tensors only."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned."""

    # ------------------------------------------------------------------ Lightning hooks
    @property
    def state_key(self) -> str:
        if self._named:
            return self._generate_state_key(name=self.name)
        config = config_digest(self._as_constructed().config, ignore=self.decisions)
        return self._generate_state_key(**self.state_key_fields(), config=config)

    @property
    def _legacy_state_key(self) -> str:  # type: ignore[override]
        # Lightning looks a callback's state up under this key when ``state_key`` is not in the
        # checkpoint: the key of featurewatch versions before ``name=``, so their checkpoints
        # still resume
        return self._generate_state_key(**self.state_key_fields())

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._fresh_fit()
        check_unique_names(self, trainer.callbacks, FeatureWatchCallback)
        for probe in self._probes():
            probe.check_model(type(self).__name__, pl_module)
        self.check_model(pl_module)
        self._sinks = sinks_for(trainer) if trainer.is_global_zero else []
        self._budget = TimeBudget.of(trainer) if stage == "fit" else None

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._first_batch(pl_module, batch)
        self.observe_batch(batch, "train")
        if self._start_pending:
            # The "at start" run happens here, before the first optimizer step, rather than in
            # on_train_start: by now a real batch has been seen (input size, probe images), and
            # we never have to draw a batch from the user's dataloader ourselves (that would
            # advance its sampler's generator and change the run's data order).
            self._start_pending = False
            self._run(trainer, pl_module)

    def on_validation_batch_start(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._first_batch(pl_module, batch)
        self.observe_batch(batch, "val")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start_pending = self.schedule.at_start

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self.schedule.after_step(int(trainer.global_step)):
            self._run(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.schedule.after_epoch(int(trainer.current_epoch)):
            self._run(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.schedule.at_end:
            self._run(trainer, pl_module, ending=True)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._close()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._close()

    def state_dict(self) -> dict[str, Any]:
        return {
            "last_step": self._last_step,
            "calls": self._calls,
            "failures": self._failures,
            "total_seconds": self.total_seconds,
            **self.extra_state(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._last_step = state_dict.get("last_step")
        self._calls = int(state_dict.get("calls", 0))
        self._failures = int(state_dict.get("failures", 0))
        self.total_seconds = float(state_dict.get("total_seconds", 0.0))
        self.load_extra_state(state_dict)

    # ------------------------------------------------------------------ offline calls
    def replay_setup(
        self, pl_module: pl.LightningModule, x: torch.Tensor, sinks: Sequence[Sink]
    ) -> None:
        """Prepare for calls outside training (``featurewatch replay``), as ``setup`` and the
        first batch would: check the model, check ``x`` as the first input batch, write to
        ``sinks``.

        Args:
            pl_module: the model (any checkpoint of the run: only its architecture is checked).
            x: ``(N, C, H, W)`` inputs standing for the first batch Lightning would feed (the
                probe images: what ``"data"`` normalization and input sizes are learnt from).
            sinks: where calls write; the caller owns them (this callback never closes them).

        Raises:
            ValueError, TypeError: the callback's own messages, if its configuration does not fit
                the model or the inputs.
        """
        self.check_model(pl_module)
        self._sinks = list(sinks)
        self._checked_input = False
        self._first_batch(pl_module, x)
        self.observe_batch(x, "val")

    def replay_call(self, pl_module: pl.LightningModule, step: int, epoch: int) -> None:
        """One call outside training, logged at ``step`` and ``epoch`` (after
        :meth:`replay_setup`): the same isolation, failure reporting and timing as in training.
        A step already logged is skipped, as in training."""
        self._run(OfflineTrainer(step, epoch), pl_module)  # type: ignore[arg-type]

    def replay_end(self, pl_module: pl.LightningModule, step: int, epoch: int) -> None:
        """What the end of training logs (filmstrips), at the last replayed ``step``/``epoch``;
        then the sinks are let go (not closed: the caller owns them)."""
        try:
            self.on_train_end(OfflineTrainer(step, epoch), pl_module)  # type: ignore[arg-type]
        finally:
            self._sinks = []

    # ------------------------------------------------------------------ machinery
    def _as_constructed(self) -> Pristine:
        """The attributes before the first fit (taken at the first ``state_key`` or ``setup``)."""
        if self._pristine is None:
            self._pristine = Pristine({k: v for k, v in vars(self).items() if k != "_pristine"})
        return self._pristine

    def _fresh_fit(self) -> None:
        """Start a ``fit`` as constructed: a reused object carries nothing over (cadence, probe,
        input size, history); a resumed fit loads its checkpoint after this."""
        pristine = self._as_constructed()
        if self._fitted:
            pristine.restore(vars(self), keep=lambda key: key == "_pristine")
        self._fitted = True

    @property
    def calls(self) -> int:
        """How many times the work ran (successfully or not) in this run, resumes included."""
        return self._calls

    @property
    def failures(self) -> int:
        """How many of those calls raised (and were reported as warnings)."""
        return self._failures

    def _close(self) -> None:
        for sink in self._sinks:
            try:
                sink.close()
            except Exception as err:  # noqa: BLE001  # pragma: no cover - defensive
                warnings.warn(
                    f"featurewatch: closing {type(sink).__name__} failed: {err}",
                    FeatureWatchWarning,
                    stacklevel=2,
                )
        self._sinks = []

    def _first_batch(self, pl_module: pl.LightningModule, batch: Any) -> None:
        if self._checked_input:
            return
        self._checked_input = True
        probes = self._probes()
        if not probes and type(self).check_input is FeatureWatchCallback.check_input:
            return  # nothing to check: do not even look for images in the batch
        x = self.input_from_batch(batch)
        for probe in probes:
            probe.check_input(type(self).__name__, x)
        with isolated(pl_module):
            try:
                self.check_input(pl_module, x.clone())
            except Exception as err:
                if not _raised_in_forward(err, pl_module):
                    raise
                raise TypeError(
                    f"{type(self).__name__}: the model failed on the batch's input "
                    f"({type(err).__name__}: {err}). featurewatch calls the model as model(x) "
                    f"with x = the batch's input_key={getattr(self, 'input_key', 0)!r} entry, a "
                    f"{tuple(x.shape)} {x.dtype} tensor; pass input_key= to pick the model's "
                    "input, and give forward a tensor argument if it takes the whole batch"
                ) from err

    def _probes(self) -> list[ProbeImages]:
        return [v for v in vars(self).values() if isinstance(v, ProbeImages)]

    def input_from_batch(self, batch: Any) -> torch.Tensor:
        """The model input inside a batch (subclasses with an ``input_key`` override this)."""
        return batch_input(batch, getattr(self, "input_key", 0))

    def progress(self, detail: str) -> None:
        """Say which part of a call is being computed (e.g. ``"features.5 (2/4)"``) on the
        training progress bar, on an interactive terminal only; a no-op elsewhere."""
        self._announcer.say(detail)

    def report_failure(self, event: Event, part: str, what: str, err: BaseException) -> None:
        """Report that one part of this call failed while the other parts are still logged.

        For callbacks whose call has independent parts (a layer, a method): one that fails must
        not cost the others. Call it from inside the ``except`` block (the traceback is logged).
        It re-raises with ``strict``; otherwise it warns once, logs the text
        ``featurewatch/<name>/<part>/error``, and the call counts once in :attr:`failures`.

        Args:
            event: the event of this call.
            part: key segment of the failed part (a layer name, a method name).
            what: the part in words for the message, e.g. ``"method 'occlusion'"``.
            err: the exception.
        """
        if self.strict:
            raise err
        self._part_failed = True
        self._warn_and_log(
            event,
            f"featurewatch/{self.name}/{part}/error",
            f"featurewatch {type(self).__name__}: {what} failed at step {event.step}: "
            f"{type(err).__name__}: {err}. The rest of this call is still logged and training "
            "continues; pass strict=True to stop on such errors.",
        )

    def _warn_and_log(self, event: Event, key: str, message: str) -> None:
        """Warn (rank zero) and log ``message`` with the current traceback as text ``key``; call it
        from inside an ``except`` block."""
        rank_zero_warn(message, category=FeatureWatchWarning)
        event.add_text(key, message + "\n\n" + traceback.format_exc())

    def _skip(self, trainer: pl.Trainer) -> bool:
        # `fast_dev_run` is set on the Trainer at run time, not declared on the class
        return bool(trainer.sanity_checking or trainer.fast_dev_run)  # type: ignore[attr-defined]

    def _run(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *, ending: bool = False
    ) -> None:
        if self._skip(trainer):
            return
        step = int(trainer.global_step)
        if self._last_step == step:
            return
        event = Event(
            step=step, epoch=_last_epoch(trainer) if ending else int(trainer.current_epoch)
        )
        budget = self._budget
        if budget is not None and not budget.admit(self, trainer, event, ending):
            self._emit(event)  # the deferred call, counted (its step is not taken: no _last_step)
            return
        self._last_step = step
        if not (self.all_ranks or trainer.is_global_zero):
            return
        self.ending = ending
        start = time.perf_counter()
        self._calls += 1
        self._part_failed = False
        try:
            world = (trainer.global_rank, trainer.world_size) if self.all_ranks else (0, 1)
            with self._announcer.during(trainer), isolated(pl_module), ranks_of(*world):
                self.visualize(trainer, pl_module, event)
            if self._part_failed:
                self._failures += 1
        except Exception as err:
            if self.strict:
                raise
            self._failures += 1
            self._warn_and_log(
                event,
                f"featurewatch/{self.name}/error",
                f"featurewatch {type(self).__name__} failed at step {step}: "
                f"{type(err).__name__}: {err}. Training continues; pass strict=True to stop on "
                "such errors.",
            )
        event.add_scalar(f"featurewatch/{self.name}/seconds", time.perf_counter() - start)
        self._emit(event)
        # the logged scalar cannot include its own writing (PNG encoding, logger I/O); these do
        self.last_seconds = time.perf_counter() - start
        self.total_seconds += self.last_seconds
        if budget is not None:
            budget.spent(self, self.last_seconds)

    def _emit(self, event: Event) -> None:
        for sink in self._sinks:
            try:
                sink.write(event)
            except Exception as err:
                if self.strict:
                    raise
                rank_zero_warn(
                    f"featurewatch: writing to {type(sink).__name__} failed at step {event.step}: "
                    f"{type(err).__name__}: {err}",
                    category=FeatureWatchWarning,
                )


def describe_channels(channels: Sequence[int]) -> str:
    """Caption fragment listing tile order, e.g. ``"channels 0, 1, 2"``."""
    return "channels " + ", ".join(str(c) for c in channels)
