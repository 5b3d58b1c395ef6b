"""DeadNeuronMonitor: find dead and dying filters while the network trains."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn

from featurewatch.callbacks.base import (
    FeatureWatchCallback,
    FeatureWatchWarning,
    check_layers,
    check_number,
)
from featurewatch.core.dead_rule import ChannelSummary, ChannelVerdict, judge_channels
from featurewatch.core.stats import ChannelStatsRecorder
from featurewatch.core.validation import check_bool, check_int
from featurewatch.loggers import Event

__all__ = ["DeadNeuronError", "DeadNeuronMonitor", "DeadNeuronWarning"]

_ON_DEAD = ("warn", "raise", "stop")
#: With ``heatmap="auto"``, a network with more monitored sites than this gets heatmaps only for the
#: layers that showed dead or dying channels (at most this many): each figure costs ~0.1 s to draw
#: and encode, a DenseNet-121 has 120 ReLU sites, and a healthy layer's heatmap is one flat colour.
AUTO_HEATMAP_LAYERS = 16


class DeadNeuronWarning(UserWarning):
    """A layer's fraction of dead channels went above ``dead_alert_fraction``."""


class DeadNeuronError(RuntimeError):
    """Raised by ``DeadNeuronMonitor(on_dead="raise")`` when too many channels of a layer died."""


def _gather_objects(obj: Any) -> list[Any]:
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _channel_list(channels: Sequence[int], limit: int = 64) -> str:
    shown = ", ".join(str(c) for c in channels[:limit])
    return f"[{shown}{', ...' if len(channels) > limit else ''}]"


class DeadNeuronMonitor(FeatureWatchCallback):
    """Track, per layer and channel, how often each unit fires during training; flag dead filters.

    A ReLU unit whose input stays below zero for every sample gets no gradient and never recovers:
    it wastes capacity, and many of them at once usually mean a too-high learning rate or a bad
    initialization (Lu et al., "Dying ReLU and Initialization", 2019). Over each window (the
    training forwards between two evaluations: one epoch by default) the monitor counts, on the
    device and without any per-step host synchronization, for every channel of every monitored
    layer: the on-rate (fraction of samples x positions above ``threshold``), whether it fired at
    all, the max and mean magnitude, and the ReDo dormancy score (mean magnitude / layer mean;
    Sokar et al., ICML 2023). Memory is O(channels) per layer.

    * ``layers=None`` monitors every ``nn.ReLU`` and ``nn.ReLU6`` module: the units that can die
      (zero output *and* zero gradient below zero). GELU, SiLU, LeakyReLU, ELU, Hardswish keep a
      gradient for negative inputs; named in ``layers`` they are monitored too, and "dead" then
      means "never above ``threshold``", which they can recover from.
      For networks that call ``F.relu`` in ``forward``, name the conv/BatchNorm layers whose output
      feeds it: pre-activation ``<= threshold`` means a dead output, and the magnitude is that of
      the ReLU output.
    * A module called several times per forward (torchvision ResNet blocks reuse one ``relu``) is
      monitored per call site, reported as ``name@0``, ``name@1`` (a plain ``"name"`` in ``layers``
      follows all its sites); ``"name@k"`` picks one site. In-place ReLUs are fine. Channels are
      dim 1 of the output (``(N, C, ...)``: conv maps and ``(N, C)`` features), the last dim of an
      ``nn.Linear`` output (``(N, L, C)`` sequences), or the last dim everywhere with
      ``channel_dim=-1`` (channels-last blocks such as ConvNeXt's).
    * Only training forwards count: never featurewatch's own forwards, never the sanity check, and
      validation forwards only with ``include_validation=True``.
    * Under DDP the windows of all ranks are reduced (counts summed, maxima maxed) before anything
      is reported, so N processes report exactly what one process sees on the union of their data.
    * A channel is *dead* if it never fired in the window, or did not fire in any of the window's
      last ``patience`` training steps (so a filter killed half way through an epoch is reported at
      that epoch's evaluation, not one window later). The ``at_end`` evaluation's window is what is
      left after the last scheduled one; when it is shorter than that one, only channels that were
      already dead and stayed silent, or went silent for ``patience`` forwards, are reported dead.
      *Dying* if it fired on fewer than ``dying_rate`` of its values (dead ones excluded);
      *dormant* if its dormancy score is ``<= dormancy_threshold``. The rule is
      :func:`featurewatch.core.stats.judge_channels`.

    Args:
        layers: layer names as in ``model.named_modules()``, optionally ``"name@k"``; default every
            ``nn.ReLU`` and ``nn.ReLU6``.
        threshold: an activation is "on" when ``> threshold``.
        dying_rate: on-rate below which a (live) channel counts as dying, in ``(0, 1]``.
        patience: a channel silent for this many consecutive counted forwards at the end of the
            window counts as dead (forwards = training steps, unless a step calls the model several
            times or gradient checkpointing re-runs it); ``None``: only channels silent for the
            whole window.
        dead_alert_fraction: alert when a layer's fraction of dead channels exceeds this, in
            ``[0, 1)``.
        on_dead: what an alert does: ``"warn"`` (a :class:`DeadNeuronWarning`, once per layer),
            ``"raise"`` (:class:`DeadNeuronError`) or ``"stop"`` (sets ``trainer.should_stop``;
            the reason is warned, logged as text and kept in :attr:`stop_reason`).
        dormancy_threshold: ReDo's tau.
        include_validation: also count validation forwards (inside ``fit``) in the window.
        rates_every_n_steps: measure the on-rates and mean magnitudes (and so ``dying`` and
            ``dormant``) on the window's training forwards 0, n, 2n, ... only, over all their
            values.
            Whether a channel fired, when it last fired (so ``dead`` and ``patience``) and its
            maximum are measured on *every* forward whatever n is: one pass over each activation
            instead of four. Default 4, which keeps the per-step cost near 1-3% even on small CPU
            models whose steps are memory-bound; 1 measures everything on every forward.
        sample_every_n_steps: count only the forwards of every n-th training batch (``batch_idx %
            n == 0``), dividing the per-step cost by n; the window's statistics then come from those
            batches, and ``patience`` counts sampled steps. Default 1: every training forward.
        channel_dim: ``1``, ``-1`` or ``None`` (dim 1, except the last dim of ``nn.Linear``
            outputs; a layer whose output looks channels-last gets a warning).
        heatmap: log the channels x evaluations on-rate heatmap (one matplotlib figure per layer,
            ~0.1 s each): ``True`` for every layer, ``False`` for none, ``"auto"`` for every layer
            of a network with at most :data:`AUTO_HEATMAP_LAYERS` monitored sites, else only for the
            layers that have had dead or dying channels (the first that many to show them; once
            drawn, a layer keeps its heatmap).
        **schedule: ``every_n_epochs``, ``every_n_train_steps``, ``at_end``, ``strict``: see
            :class:`~featurewatch.callbacks.base.FeatureWatchCallback` (``at_start=True`` is
            refused: before the first step there is no window to evaluate).

    Logged keys (``<layer>`` is the name or ``name@k``):
        - ``featurewatch/dead/<layer>/dead_fraction``: scalar, fraction of dead channels (those in
          :attr:`dead_channels`).
        - ``featurewatch/dead/<layer>/dying_fraction``: scalar, fraction of live channels with
          on-rate below ``dying_rate``.
        - ``featurewatch/dead/<layer>/dormant_fraction``: scalar, fraction of ReDo-dormant channels.
        - ``featurewatch/dead/<layer>/on_rate``: histogram of the channels' on-rates.
        - ``featurewatch/dead/<layer>/heatmap``: image, on-rate of every channel (rows) at every
          evaluation so far (columns); red cells never fired.
        - ``featurewatch/dead/alerts``: text, the alerts raised at this evaluation.
        - ``featurewatch/dead/<layer>/error``: text, once, if a layer's output cannot be monitored.
        - ``featurewatch/dead/seconds``: wall time of the evaluation.

    Attributes:
        dead_channels: ``{layer: [channel, ...]}`` of the latest evaluation.
        latest: ``{layer: ChannelSummary}`` of the latest evaluation (since this process started).
        history: every evaluation (kept across resume, in the checkpoint): ``[{"step", "epoch",
            "layers": {layer: {"on_rate", "max_abs", "mean_abs", "silent_steps", "positions",
            "updates"}}}]`` (float32/int32 ``(C,)`` tensors and ints).
        stop_reason: why ``on_dead="stop"`` stopped training (``None`` if it did not).

    Two monitors in one Trainer must differ in what they measure (``layers``, ``threshold``,
    ``rates_every_n_steps``, ...): their checkpoint state is keyed by it, so a run resumed with
    another ``on_dead``, ``patience`` or alert fraction keeps its history.

    Example:
        >>> monitor = DeadNeuronMonitor(on_dead="stop", dead_alert_fraction=0.25)
        >>> pl.Trainer(callbacks=[monitor]).fit(model, loader)
        >>> monitor.dead_channels
        {'net.features.2': [], 'net.features.6': [3, 11]}
    """

    default_name = "dead"
    #: an evaluation summarizes statistics gathered during the steps (milliseconds), and a
    #: deferred one would only delay its alert: a TimeBudget never defers it
    budget_exempt = True
    all_ranks = True

    def __init__(
        self,
        layers: Sequence[str] | None = None,
        *,
        threshold: float = 0.0,
        dying_rate: float = 0.01,
        patience: int | None = 20,
        dead_alert_fraction: float = 0.1,
        on_dead: str = "warn",
        dormancy_threshold: float = 0.025,
        include_validation: bool = False,
        rates_every_n_steps: int = 4,
        sample_every_n_steps: int = 1,
        channel_dim: int | None = None,
        heatmap: bool | str = "auto",
        **schedule: Any,
    ) -> None:
        if schedule.get("at_start"):
            raise ValueError(
                "DeadNeuronMonitor: `at_start=True` has nothing to evaluate (no training forward "
                "has been counted before the first step); leave at_start unset"
            )
        super().__init__(**schedule)
        layers = check_layers(layers, allow_none=True)
        if on_dead not in _ON_DEAD:
            raise ValueError(
                f"`on_dead` must be one of {', '.join(repr(o) for o in _ON_DEAD)}, got {on_dead!r}"
            )
        check_int("patience", patience, allow_none=True)  # training steps
        check_int("sample_every_n_steps", sample_every_n_steps)
        check_int("rates_every_n_steps", rates_every_n_steps)
        if channel_dim not in (None, 1, -1):
            raise ValueError(f"`channel_dim` must be 1, -1 or None, got {channel_dim!r}")
        check_bool("include_validation", include_validation)
        self.patience = patience
        self.sample_every_n_steps = sample_every_n_steps
        self.rates_every_n_steps = rates_every_n_steps
        self.layers = list(layers) if layers is not None else None
        self.channel_dim = channel_dim
        self.threshold = check_number("threshold", threshold)
        self.dying_rate = check_number("dying_rate", dying_rate, 0, 1, low_open=True)
        self.dead_alert_fraction = check_number(
            "dead_alert_fraction", dead_alert_fraction, 0, 1, high_open=True
        )
        self.dormancy_threshold = check_number("dormancy_threshold", dormancy_threshold, 0)
        self.on_dead = on_dead
        self.include_validation = include_validation
        if heatmap not in (True, False, "auto"):
            raise ValueError(f"`heatmap` must be True, False or 'auto', got {heatmap!r}")
        self.heatmap = heatmap
        self._heatmap_keys: list[str] = []
        self.dead_channels: dict[str, list[int]] = {}
        self.latest: dict[str, ChannelSummary] = {}
        self.history: list[dict[str, Any]] = []
        self.stop_reason: str | None = None
        self._alerted: set[str] = set()
        self._pending: list[str] = []
        self._reported_problems: set[str] = set()
        self._recorder: ChannelStatsRecorder | None = None

    #: what is decided from the statistics, not how they are measured (see state_key_fields)
    decisions = frozenset(
        {
            "strict",
            "on_dead",
            "patience",
            "dying_rate",
            "dead_alert_fraction",
            "dormancy_threshold",
            "heatmap",
        }
    )

    # ------------------------------------------------------------------ configuration
    def state_key_fields(self) -> dict[str, Any]:
        # What is measured, not what is decided from it: two monitors measuring differently coexist,
        # and a run resumed with another `on_dead` or `patience` keeps its history.
        return {
            "layers": self.layers,
            "threshold": self.threshold,
            "include_validation": self.include_validation,
            "sample_every_n_steps": self.sample_every_n_steps,
            "rates_every_n_steps": self.rates_every_n_steps,
            "channel_dim": self.channel_dim,
        }

    @property
    def _legacy_state_key(self) -> Any:
        """The key earlier featurewatch versions saved the state under (layers and threshold
        only); Lightning looks a callback's state up under it when ``state_key`` is not in the
        checkpoint."""
        return self._generate_state_key(layers=self.layers, threshold=self.threshold)

    def check_model(self, pl_module: pl.LightningModule) -> None:
        self._detach()
        self._recorder = ChannelStatsRecorder(
            pl_module,
            self.layers,
            threshold=self.threshold,
            rates_every=self.rates_every_n_steps,
            channel_dim=self.channel_dim,
        )
        self._recorder.enabled = False
        if _compiled(pl_module):
            rank_zero_warn(
                "DeadNeuronMonitor on a torch.compile-d model: the model is compiled once with "
                "the monitor's hooks (they run as an opaque operator, so nothing recompiles), but "
                "with the inductor backend the run is not bit-identical to one without the "
                "monitor: an activation the monitor also reads is fused differently, which moves "
                "float32 results by rounding (measured: max |dw| 6e-8 after 8 steps of a small "
                "CNN). The eager and aot_eager backends are bit-identical.",
                category=FeatureWatchWarning,
            )

    # ------------------------------------------------------------------ hooks on the hot path
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if self._recorder is None or self._recorder.model is not pl_module:
            self.check_model(pl_module)
        if self._recorder is not None and not trainer.fast_dev_run:  # type: ignore[attr-defined]
            self._recorder.enabled = False
            self._recorder.attach()

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        if self._recorder is not None:
            self._recorder.new_forward()
            self._recorder.enabled = batch_idx % self.sample_every_n_steps == 0

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self._recorder is not None:
            self._recorder.enabled = False
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self._act(trainer)

    def on_validation_batch_start(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        super().on_validation_batch_start(trainer, pl_module, batch, batch_idx, dataloader_idx)
        if self._recorder is not None and self.include_validation and not trainer.sanity_checking:
            self._recorder.new_forward()
            self._recorder.enabled = True

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._recorder is not None:
            self._recorder.enabled = False

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._act(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._detach()
        self._act(trainer)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._detach()
        super().teardown(trainer, pl_module, stage)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._detach()
        super().on_exception(trainer, pl_module, exception)

    def _detach(self) -> None:
        if self._recorder is not None:
            self._recorder.detach()
            self._recorder.enabled = False

    # ------------------------------------------------------------------ evaluation
    def visualize(self, trainer: pl.Trainer, pl_module: pl.LightningModule, event: Event) -> None:
        recorder = self._recorder
        if recorder is None:
            return
        # Collectives first, reached by every rank whatever happens afterwards.
        summaries = self._summaries(trainer, recorder)
        recorder.reset()
        self._report_problems(trainer, recorder, event)
        if not summaries:
            return
        # Everything that decides alerts comes from the reduced statistics, identically on every
        # rank; rank-zero-only drawing (the heatmaps) happens afterwards and cannot change it.
        verdicts = self._judge(summaries, event)
        for key, v in verdicts.items():
            event.add_scalar(f"featurewatch/{self.name}/{key}/dead_fraction", v.dead_fraction)
            event.add_scalar(f"featurewatch/{self.name}/{key}/dying_fraction", v.dying_fraction)
            event.add_scalar(f"featurewatch/{self.name}/{key}/dormant_fraction", v.dormant_fraction)
            event.add_histogram(f"featurewatch/{self.name}/{key}/on_rate", summaries[key].on_rate)
        self._alert(event, verdicts)
        if self.heatmap and trainer.is_global_zero:
            self._draw_heatmaps(event, summaries)

    @staticmethod
    def _distributed(trainer: pl.Trainer) -> bool:
        return (
            trainer.world_size > 1
            and torch.distributed.is_available()
            and torch.distributed.is_initialized()
        )

    def _summaries(
        self, trainer: pl.Trainer, recorder: ChannelStatsRecorder
    ) -> dict[str, ChannelSummary]:
        """The window's statistics; under DDP reduced over every rank with Lightning's strategy
        (every rank must call this)."""
        if not self._distributed(trainer):
            return recorder.summaries()
        return recorder.summaries(
            all_reduce=lambda t, op: trainer.strategy.reduce(t, reduce_op=op),
            gather=_gather_objects,
            device=trainer.strategy.root_device,
        )

    def _report_problems(
        self, trainer: pl.Trainer, recorder: ChannelStatsRecorder, event: Event
    ) -> None:
        """Say once per layer which layers cannot be monitored; with ``strict``, raise on every
        rank together (a collective decides: a hook problem may be seen on some ranks only)."""
        # A layer that no training forward went through, on any rank (``summaries`` agreed on the
        # union of the sites): not called by ``forward``, or run by code that bypasses module hooks
        # (TorchScript). Without this, it would silently be absent from every report.
        problems = {**recorder.problems, **recorder.unreached()}
        failed = bool(problems)
        if self.strict and self._distributed(trainer):
            # the ranks that raise would otherwise leave the others waiting in the next collective
            flag = torch.tensor([float(failed)], device=trainer.strategy.root_device)
            failed = bool(trainer.strategy.reduce(flag, reduce_op="max").item())
        if self.strict and failed:
            raise ValueError(
                "DeadNeuronMonitor: "
                + ("; ".join(problems.values()) or "a layer failed on another process")
            )
        for name, problem in problems.items():
            if name not in self._reported_problems:
                self._reported_problems.add(name)
                rank_zero_warn(f"DeadNeuronMonitor skips {problem}", category=DeadNeuronWarning)
                event.add_text(f"featurewatch/{self.name}/{name}/error", problem)

    def _judge(
        self, summaries: dict[str, ChannelSummary], event: Event
    ) -> dict[str, ChannelVerdict]:
        """Apply the death rule to every site and record the evaluation (history, latest, dead)."""
        previous = self.history[-1]["layers"] if self.history else {}
        verdicts = {
            key: judge_channels(
                s,
                patience=self.patience,
                dying_rate=self.dying_rate,
                dormancy_threshold=self.dormancy_threshold,
                previous_updates=int(previous[key]["updates"]) if key in previous else None,
                previously_dead=self.dead_channels.get(key, ()),
                final=self.ending,
            )
            for key, s in summaries.items()
        }
        self.latest = summaries
        self.history.append(
            {
                "step": event.step,
                "epoch": event.epoch,
                "layers": {key: s.to_state() for key, s in summaries.items()},
            }
        )
        self.dead_channels = {key: v.dead for key, v in verdicts.items()}
        for key, v in verdicts.items():
            if (v.dead or v.dying) and key not in self._heatmap_keys:
                self._heatmap_keys.append(key)
        return verdicts

    def _alert(self, event: Event, verdicts: dict[str, ChannelVerdict]) -> None:
        """Alerts for the layers whose dead fraction went above the limit (once per layer); they
        act (warn, raise, stop) at the end of the step, in :meth:`_act`."""
        alerts = []
        for key, v in verdicts.items():
            if v.dead_fraction > self.dead_alert_fraction and key not in self._alerted:
                self._alerted.add(key)
                alerts.append(
                    f"layer {key!r}: {len(v.dead)} of {v.channels} channels "
                    f"({v.dead_fraction:.0%}) are dead (no activation above {self.threshold:g} in "
                    f"the window ending at step {event.step}, epoch {event.epoch}, or in its last "
                    f"{self.patience} steps), above dead_alert_fraction="
                    f"{self.dead_alert_fraction:g}; dead channels {_channel_list(v.dead)}"
                )
        if not alerts:
            return
        if self.on_dead == "stop":
            self.stop_reason = "DeadNeuronMonitor stopped training: " + "; ".join(alerts)
            alerts = [self.stop_reason]
        event.add_text(f"featurewatch/{self.name}/alerts", "\n".join(alerts))
        self._pending.extend(alerts)

    def _draw_heatmaps(self, event: Event, summaries: dict[str, ChannelSummary]) -> None:
        drawn = list(summaries)
        if self.heatmap == "auto" and len(drawn) > AUTO_HEATMAP_LAYERS:
            drawn = [k for k in self._heatmap_keys if k in summaries][:AUTO_HEATMAP_LAYERS]
        for key in drawn:
            try:
                event.add_figure(
                    f"featurewatch/{self.name}/{key}/heatmap",
                    self.heatmap_figure(key),
                    caption=f"step {event.step}, epoch {event.epoch}: on-rate of the "
                    f"{summaries[key].channels} channels of {key} at every evaluation; red = never "
                    "fired",
                )
            except Exception as err:
                if self.strict:
                    raise
                rank_zero_warn(
                    f"DeadNeuronMonitor: heatmap of {key!r} failed: {err}",
                    category=DeadNeuronWarning,
                )

    def _act(self, trainer: pl.Trainer) -> None:
        if not self._pending:
            return
        alerts, self._pending = self._pending, []
        if self.on_dead == "raise":
            raise DeadNeuronError("DeadNeuronMonitor: " + "; ".join(alerts))
        if self.on_dead == "stop":
            trainer.should_stop = True
        for alert in alerts:
            rank_zero_warn(
                alert if self.on_dead == "stop" else "DeadNeuronMonitor: " + alert,
                category=DeadNeuronWarning,
            )

    def heatmap_figure(self, key: str) -> Any:
        """The on-rate history of one layer as a matplotlib ``Figure`` (channels x evaluations)."""
        import numpy as np
        from matplotlib import colormaps
        from matplotlib.figure import Figure

        columns = [
            (e["step"], e["epoch"], ChannelSummary.from_state(e["layers"][key]))
            for e in self.history
            if key in e["layers"]
        ]
        if not columns:
            raise ValueError(
                f"no evaluation of layer {key!r} yet (layers: {sorted(self.dead_channels)})"
            )
        rates = torch.stack([c[2].on_rate for c in columns], 1).numpy()
        never = torch.stack([~c[2].fired for c in columns], 1).numpy()
        n_channels, n_cols = rates.shape
        width, height = min(3.0 + 0.3 * n_cols, 12.0), min(1.8 + 0.12 * n_channels, 9.0)
        fig = Figure(figsize=(width, height), dpi=80)
        # Fixed margins in inches (labels, ticks, title): tight_layout would lay all the text out
        # again, which is most of the drawing time, once per layer per evaluation.
        fig.subplots_adjust(
            left=0.75 / width, right=1 - 0.8 / width, bottom=0.6 / height, top=1 - 0.35 / height
        )
        ax = fig.add_subplot()
        cmap = colormaps["viridis"].with_extremes(bad="red")
        image = ax.imshow(
            np.ma.masked_array(rates, mask=never),
            aspect="auto",
            interpolation="nearest",
            cmap=cmap,
            vmin=0.0,
            vmax=1.0,
        )
        by_epoch = self.every_n_train_steps is None
        labels = [f"{c[1]}" if by_epoch else f"{c[0]}" for c in columns]
        ticks = list(range(0, n_cols, max(1, n_cols // 10)))
        ax.set_xticks(ticks, [labels[t] for t in ticks])
        ax.set_xlabel("epoch" if by_epoch else "global step")
        ax.set_ylabel("channel")
        ax.set_title(f"{key}: on-rate (red: never fired)", fontsize=9)
        fig.colorbar(image, ax=ax, label="on-rate", fraction=0.08, pad=0.03)
        return fig

    # ------------------------------------------------------------------ resume
    def extra_state(self) -> dict[str, Any]:
        return {
            "history": [
                {
                    "step": int(e["step"]),
                    "epoch": int(e["epoch"]),
                    "layers": {k: dict(v) for k, v in e["layers"].items()},
                }
                for e in self.history
            ],
            "alerted": sorted(self._alerted),
            "stop_reason": self.stop_reason,
            "heatmap_keys": list(self._heatmap_keys),
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.history = [
            {
                "step": int(e["step"]),
                "epoch": int(e["epoch"]),
                "layers": {
                    k: ChannelSummary.from_state(v).to_state() for k, v in e["layers"].items()
                },
            }
            for e in state.get("history", [])
        ]
        self._alerted = set(state.get("alerted", []))
        self._heatmap_keys = [str(k) for k in state.get("heatmap_keys", [])]
        self.stop_reason = state.get("stop_reason")
        if self.history:
            last = self.history[-1]["layers"]
            self.latest = {k: ChannelSummary.from_state(v) for k, v in last.items()}
            self.dead_channels = {k: s.silent(self.patience) for k, s in self.latest.items()}


def _compiled(module: torch.nn.Module) -> bool:
    """Whether Lightning unwrapped a ``torch.compile``-d module or one of its submodules is one."""
    if getattr(module, "_compiler_ctx", None):
        return True
    return any(isinstance(m, torch._dynamo.OptimizedModule) for m in module.modules())
