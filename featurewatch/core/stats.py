"""Per-channel activation statistics, accumulated on the device during training forwards.

The building block of dead-filter detection. For every monitored *call site* of a layer (a module
called twice in one forward has two sites, ``name@0`` and ``name@1``, whose tensors are never
mixed) and every channel ``c`` (dim 1 of the output, or the last dim for channels-last layouts and
for linear layers applied to ``(N, L, C)`` sequences), a :class:`ChannelStats` keeps, over a window:

* ``count_on[c]``: how many values (samples x positions) were above ``threshold``;
* ``sum_mag[c]`` and ``max_mag[c]``: sum and maximum of the channel's magnitude (see below);
* ``positions``: how many values each channel saw (``numel / channels``, a host-side int).

Each update is a handful of reductions over the activation, launched without reading anything back
(no ``.item()``, no ``.cpu()``, no data-dependent Python branch), so a CUDA stream never waits on
the host; memory is ``O(channels)`` per site whatever the window length.

*Magnitude* is ``|a|`` for activation modules (their output itself for ``ReLU``/``ReLU6``, which are
never negative). A layer that is not an activation module (a conv or BatchNorm whose output feeds a
functional ``F.relu``) is a *pre-activation*: "on" means ``a > threshold``, exactly when the ReLU
it feeds outputs a positive value (for ``threshold >= 0``), and the magnitude is ``relu(a)``, the
output of that ReLU, so a channel pushed far below zero has magnitude 0, not a large ``|a|``.

From the window, :class:`~featurewatch.core.dead_rule.ChannelSummary` derives the on-rate,
whether the channel fired at all, its mean/max magnitude and the ReDo dormancy score
``s_c = mean_c / mean_k(mean_k)`` (Sokar et al., "The Dormant Neuron Phenomenon in Deep
Reinforcement Learning", ICML 2023). A channel is *dead* over the window if it never fired;
:func:`~featurewatch.core.dead_rule.judge_channels` applies the full rule (silent for
``patience`` forwards, the short final window) and gives the dead, dying and dormant channels of a
site.

**Cost.** The per-step work is memory-bound: every pass reads the whole activation. Whether a
channel fired, when it last fired and its maximum need one pass (a max) and are measured on
*every* forward. The on-rate and the magnitude sums need three more passes and a temporary; with
``rates_every=n`` they are measured on every n-th forward of the window only (all of that forward's
values), which divides their cost by n while dead-channel detection stays exact.

Example:
    >>> recorder = ChannelStatsRecorder(model)           # every nn.ReLU and nn.ReLU6
    >>> with recorder:                                   # hooks removed on exit, even on error
    ...     for x, y in loader:
    ...         F.cross_entropy(model(x), y).backward(); opt.step(); opt.zero_grad()
    >>> {key: s.dead for key, s in recorder.summaries().items()}
    {'features.2': [3], 'layer1.0.relu@0': [], 'layer1.0.relu@1': [5]}
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from featurewatch.core.dead_rule import ChannelSummary
from featurewatch.core.hooks import Observer
from featurewatch.core.hygiene import in_isolation
from featurewatch.core.layers import (
    ACTIVATION_TYPES,
    LayerRef,
    not_reached_message,
    parse_layer,
    resolve_layer,
)

__all__ = [
    "NONNEGATIVE_TYPES",
    "RECTIFIER_TYPES",
    "ChannelStats",
    "ChannelStatsRecorder",
    "default_dead_layers",
]

#: Activation modules monitored by default: those whose units can *die*. Below zero a ReLU or ReLU6
#: outputs exactly 0 and passes no gradient, so a unit whose input stays negative never learns
#: again. LeakyReLU, ELU, GELU, SiLU, Mish and Hardswish keep passing a gradient for negative inputs
#: (their units can be "never positive", which they recover from), so they are only monitored when
#: named in ``layers``.
RECTIFIER_TYPES: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)
#: Activation modules whose output is never negative: the magnitude is the output itself.
NONNEGATIVE_TYPES: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)

_EXACT_F32_COUNT = 2**24  # float32 counts integers exactly up to here


def default_dead_layers(model: nn.Module) -> list[str]:
    """Names of the ReLU and ReLU6 modules (:data:`RECTIFIER_TYPES`) of ``model``, in order."""
    return [name for name, m in model.named_modules() if name and isinstance(m, RECTIFIER_TYPES)]


def _no_rectifier_message(model: nn.Module) -> str:
    """Why ``layers=None`` finds nothing in ``model``, and which names would work instead."""
    kinds: dict[str, list[str]] = {}
    norms: list[str] = []
    for name, m in model.named_modules():
        if not name:
            continue
        if isinstance(m, ACTIVATION_TYPES):
            kinds.setdefault(type(m).__name__, []).append(name)
        elif isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)):
            norms.append(name)
    msg = (
        f"{type(model).__name__} has no nn.ReLU or nn.ReLU6 module, the units that can die, to "
        "monitor by default."
    )
    if kinds:
        found = ", ".join(f"{len(v)} {k}" for k, v in kinds.items())
        example = next(iter(kinds.values()))[:3]
        msg += (
            f" It has {found}: those units keep a gradient below zero, so they cannot die; to "
            f"track how often they are positive anyway, name them, e.g. layers={example!r}."
        )
    if norms:
        msg += (
            " If its forward calls F.relu, name the layers whose outputs feed it (the "
            f"pre-activations), e.g. layers={norms[:3]!r}."
        )
    elif not kinds:
        msg += " If its forward calls F.relu, name the conv/linear layers whose outputs feed it."
    return msg


def _mode(module: nn.Module) -> str:
    if isinstance(module, NONNEGATIVE_TYPES):
        return "nonnegative"
    if isinstance(module, (*RECTIFIER_TYPES, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.Hardtanh)):
        return "activation"
    return "preactivation"


class ChannelStats:
    """Running statistics of one tensor stream (one call site of one layer), per channel.

    Args:
        channels: size of dim 1 of the tensors that will be fed.
        device: where the accumulators live (the activations' device).
        threshold: a value is "on" when it is ``> threshold``.
        mode: ``"nonnegative"`` (ReLU outputs: magnitude = value), ``"activation"`` (magnitude =
            ``|a|``) or ``"preactivation"`` (magnitude = ``relu(a)``, the output of the ReLU the
            layer feeds).
        rates_every: measure the on-rate and the magnitude sums on the window's forwards 0, n,
            2n, ... only (1: every forward). Firing, last firing and maxima use every forward.
        channel_dim: ``1`` (``(N, C, ...)``, PyTorch's usual layout) or ``-1`` (``(..., C)``:
            channels-last blocks such as ConvNeXt's MLP, or ``(N, L, C)`` sequences).

    Attributes:
        count_on: ``(C,)`` float64, values above the threshold (exact integers below 2**53).
        sum_mag: ``(C,)`` float64, sum of magnitudes.
        max_mag: ``(C,)`` float32, maximum magnitude (0 before any update).
        last_on: ``(C,)`` int64, index (0-based, within the window) of the last update in which
            the channel fired; -1 if it has not fired in this window.
        positions: int, values per channel (samples x spatial positions) in the forwards whose
            rates were measured: the denominator of the on-rate and the mean magnitude.
        updates: int, tensors fed since the last reset.
    """

    def __init__(
        self,
        channels: int,
        device: torch.device | str,
        *,
        threshold: float = 0.0,
        mode: str = "nonnegative",
        rates_every: int = 1,
        channel_dim: int = 1,
    ) -> None:
        if channel_dim not in (1, -1):
            raise ValueError(f"channel_dim must be 1 or -1, got {channel_dim!r}")
        if mode not in ("nonnegative", "activation", "preactivation"):
            raise ValueError(
                f"mode must be 'nonnegative', 'activation' or 'preactivation', got {mode!r}"
            )
        if isinstance(rates_every, bool) or not isinstance(rates_every, int) or rates_every < 1:
            raise ValueError(f"rates_every must be a positive int, got {rates_every!r}")
        self.channels = int(channels)
        self.threshold = float(threshold)
        self.mode = mode
        self.rates_every = rates_every
        self.channel_dim = channel_dim
        # Accumulators may be created during a validation forward under inference mode; they must
        # stay normal tensors so that later in-place updates outside it are allowed.
        with torch.inference_mode(False):
            self.count_on = torch.zeros(self.channels, dtype=torch.float64, device=device)
            self.sum_mag = torch.zeros(self.channels, dtype=torch.float64, device=device)
            self.max_mag = torch.zeros(self.channels, dtype=torch.float32, device=device)
            self.last_on = torch.full((self.channels,), -1, dtype=torch.int64, device=device)
        self.positions = 0
        self.updates = 0

    def update(self, a: torch.Tensor) -> None:
        """Add one output tensor ``(N, C, *)`` to the window; no host synchronization.

        Every forward: one pass over ``a`` (its per-channel max; ``aminmax`` for ``|a|``), which
        updates the maximum magnitude and the last forward each channel fired in. On rate
        forwards (see ``rates_every``) also the magnitude sum and the count of values above the
        threshold: three more passes and one temporary the size of ``a``. ``a`` is not modified.

        Raises:
            ValueError: if ``a`` has fewer than 2 dims or not ``channels`` channels.
        """
        if a.dim() < 2 or a.shape[self.channel_dim] != self.channels:
            where = (
                "(N, {c}, ...) tensor (channels on dim 1)"
                if self.channel_dim == 1
                else "(..., {c}) tensor (channels last)"
            )
            raise ValueError(
                f"expected an {where.format(c=self.channels)}, got shape {tuple(a.shape)}"
            )
        a = a.detach()  # no graph is recorded for anything below
        per_channel = a.numel() // self.channels
        if self.channel_dim == -1 and a.dim() > 2:
            a = a.reshape(-1, self.channels)  # (positions, C): a view of a contiguous tensor
        elif a.dim() > 2 and a.is_contiguous():
            # (N, C, L) view: reducing the contiguous last dim, then N, is about twice as fast on
            # CPU as one reduction over dims (0, 2, 3, ...).
            a = a.view(a.shape[0], self.channels, -1)
        dims = [0, *range(2, a.dim())]

        def total(t: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
            return t.sum(-1, dtype=dtype).sum(0) if t.dim() == 3 else t.sum(dims, dtype=dtype)

        def extremes(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if t.dim() == 2:
                low, high = torch.aminmax(t, dim=0)
                return low, high
            if t.dim() == 3:
                low, high = torch.aminmax(t, dim=-1)
                return low.amin(0), high.amax(0)
            flat = t.movedim(1, 0).reshape(self.channels, -1)
            low, high = torch.aminmax(flat, dim=1)
            return low, high

        # 1. every forward: the per-channel maximum of `a` decides whether the channel fired
        if self.mode == "activation":
            low, peak = extremes(a)
            magnitude = torch.maximum(peak, -low)
        else:
            peak = a.amax(-1).amax(0) if a.dim() == 3 else a.amax(dims)
            magnitude = peak if self.mode == "nonnegative" else peak.clamp(min=0.0)
        torch.maximum(self.max_mag, magnitude.float(), out=self.max_mag)
        rates = self.updates % self.rates_every == 0
        if rates:
            # 2. rate forwards: magnitude sum and the count of values above the threshold
            acc: torch.dtype | None = None  # float64 past float32's exact-integer range
            if per_channel >= _EXACT_F32_COUNT:
                acc = torch.float64
            elif a.dtype in (torch.float16, torch.bfloat16):
                acc = torch.float32
            tmp = torch.empty_like(a)
            if self.mode == "nonnegative":
                mag = a
            elif self.mode == "activation":
                mag = torch.abs(a, out=tmp)
            else:
                mag = torch.clamp(a, min=0.0, out=tmp)
            self.sum_mag += total(mag, acc)
            above = torch.gt(a, self.threshold, out=tmp)  # 1.0 where a > threshold; NaN is off
            self.count_on += total(above, acc)
            self.positions += per_channel
        # A NaN is not silence: a channel with NaNs counts as having fired (the same on every
        # forward, whatever ``rates_every`` is; a NaN maximum would otherwise read as "off").
        self.last_on.masked_fill_((peak > self.threshold) | torch.isnan(peak), self.updates)
        self.updates += 1

    def reset(self) -> None:
        """Start a new window (in place, on the device)."""
        self.count_on.zero_()
        self.sum_mag.zero_()
        self.max_mag.zero_()
        self.last_on.fill_(-1)
        self.positions = 0
        self.updates = 0


AllReduce = Callable[[torch.Tensor, str], torch.Tensor]
GatherObjects = Callable[[Any], list[Any]]


class ChannelStatsRecorder:
    """Hooks that feed a :class:`ChannelStats` per call site of the monitored layers.

    Only forwards run while :attr:`enabled` is true and outside featurewatch's own work
    (:func:`~featurewatch.core.hygiene.in_isolation`) are counted. Call sites are numbered per
    *outermost* forward: pre-hooks on the ancestors of the monitored modules reset the call counters
    when a forward enters the outermost one, so ``model(x)`` and ``model.net(x)`` both number a
    ReLU reused twice as calls 0 and 1. Code that calls submodules from a plain method (not through
    a module's ``forward``) enters no ancestor: call :meth:`new_forward` before each such forward,
    or the numbering runs on (``act@2``, ``act@3``, ...). Layers no counted forward reached are
    absent from :meth:`summaries` and listed by :meth:`unreached`.

    Args:
        model: the network.
        layers: layer references. ``None``: every ReLU and ReLU6 module (:data:`RECTIFIER_TYPES`). A
            plain ``"name"`` follows every call site of that module (reported as ``"name"`` if it
            runs once per forward, else ``"name@0"``, ``"name@1"``, ...); ``"name@k"`` only the
            k-th. A non-activation module (conv, BatchNorm, linear) is treated as the
            pre-activation of a ReLU.
        threshold: a value is "on" when it is ``> threshold``.
        rates_every: on-rate and magnitude sums on every n-th forward of a window only (see
            :class:`ChannelStats`); firing and maxima on every forward. 1: everything, every
            forward.
        channel_dim: where the channels are in every monitored output: ``1`` (``(N, C, ...)``) or
            ``-1`` (``(..., C)``: channels-last blocks such as ConvNeXt's, transformer MLPs on
            ``(N, L, C)``). ``None``: the last dim for ``nn.Linear`` layers (their features), dim 1
            otherwise; an output that looks channels-last then gets a warning.

    Raises:
        ValueError: if a layer does not exist, or ``layers=None`` and the model has no ReLU or
            ReLU6 module (the message names the layers that could be monitored instead).
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str | LayerRef] | None = None,
        *,
        threshold: float = 0.0,
        rates_every: int = 1,
        channel_dim: int | None = None,
    ) -> None:
        if isinstance(rates_every, bool) or not isinstance(rates_every, int) or rates_every < 1:
            raise ValueError(f"rates_every must be a positive int, got {rates_every!r}")
        if channel_dim not in (None, 1, -1):
            raise ValueError(f"channel_dim must be 1, -1 or None, got {channel_dim!r}")
        self.model = model
        self.threshold = float(threshold)
        self.rates_every = rates_every
        if layers is None:
            names = default_dead_layers(model)
            if not names:
                raise ValueError(_no_rectifier_message(model))
            refs = [LayerRef(n) for n in names]
        else:
            refs = [parse_layer(r) for r in layers]
        self.wanted: dict[str, set[int] | None] = {}
        for ref in refs:
            resolve_layer(model, ref)
            if ref.name == "":
                raise ValueError(
                    "the whole model cannot be monitored as a layer; name one of its submodules"
                )
            if ref.call is None:
                self.wanted[ref.name] = None
            elif ref.name not in self.wanted or self.wanted[ref.name] is not None:
                self.wanted.setdefault(ref.name, set()).add(ref.call)  # type: ignore[union-attr]
        self.modes = {name: _mode(model.get_submodule(name)) for name in self.wanted}
        self.channel_dims = {
            name: channel_dim
            if channel_dim is not None
            else (-1 if isinstance(model.get_submodule(name), nn.Linear) else 1)
            for name in self.wanted
        }
        self.guess_layout = channel_dim is None
        self.notes: dict[str, str] = {}
        self.enabled = True
        self.sites: dict[str, dict[int, ChannelStats]] = {name: {} for name in self.wanted}
        self.reused: set[str] = set()
        self.problems: dict[str, str] = {}
        self._calls: dict[str, int] = {}
        self.calls_per_forward: dict[
            str, int
        ] = {}  # most calls of each monitored module in one forward
        self._depth = 0
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._observers: list[Observer] = []

    # ------------------------------------------------------------------ hooks
    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def attach(self) -> None:
        """Register the hooks (idempotent)."""
        if self._handles:
            return
        try:
            ancestors: list[str] = []
            for name in self.wanted:
                parts = name.split(".")
                for i in range(len(parts)):
                    parent = ".".join(parts[:i])
                    if parent not in ancestors:
                        ancestors.append(parent)
            # Observers: under torch.compile the hooks' bodies run as they are, at run time, and
            # the user's graph is traced once (see featurewatch.core.hooks.Observer)
            enter, leave = Observer(self._enter), Observer(self._leave)
            self._observers += [enter, leave]
            for parent in ancestors:
                module = self.model.get_submodule(parent) if parent else self.model
                self._handles.append(module.register_forward_pre_hook(lambda m, i: enter()))
                self._handles.append(
                    module.register_forward_hook(lambda m, i, o: leave(), always_call=True)
                )
            for name in self.wanted:
                observe = Observer(self._make_hook(name))
                self._observers.append(observe)
                self._handles.append(
                    self.model.get_submodule(name).register_forward_hook(
                        lambda m, i, out, observe=observe: observe(_first_tensor(out))
                    )
                )
        except BaseException:
            self.detach()
            raise

    def detach(self) -> None:
        """Remove every hook (idempotent); accumulated statistics are kept."""
        handles, self._handles = self._handles, []
        for handle in handles:
            handle.remove()
        observers, self._observers = self._observers, []
        for observer in observers:
            observer.release()
        self.new_forward()

    def __enter__(self) -> ChannelStatsRecorder:  # noqa: PYI034 - Python 3.10 has no typing.Self
        self.attach()
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Temporarily stop counting (hooks stay registered)."""
        before, self.enabled = self.enabled, False
        try:
            yield
        finally:
            self.enabled = before

    def new_forward(self) -> None:
        """Forget the call numbering (e.g. after a forward that raised half way)."""
        self._depth = 0
        self._calls.clear()

    def _enter(self, _: Any = None) -> None:
        if self._depth == 0:
            self._calls.clear()
        self._depth += 1

    def _leave(self, _: Any = None) -> None:
        self._depth = max(self._depth - 1, 0)

    def _make_hook(self, name: str) -> Callable[[Any], None]:
        wanted = self.wanted[name]
        sites = self.sites[name]
        mode = self.modes[name]
        cdim = self.channel_dims[name]
        calls = self._calls

        def hook(tensor: Any) -> None:
            if not self.enabled or in_isolation():
                return
            k = calls.get(name, 0)
            calls[name] = k + 1
            if k:
                self.reused.add(name)
            if k >= self.calls_per_forward.get(name, 0):
                self.calls_per_forward[name] = k + 1
            if wanted is not None and k not in wanted:
                return
            if name in self.problems:
                return
            stats = sites.get(k)
            if stats is None:
                if (
                    not isinstance(tensor, torch.Tensor)
                    or tensor.dim() < 2
                    or not tensor.is_floating_point()
                ):
                    self.problems[name] = (
                        f"layer {name!r} outputs {_describe(tensor)}; expected a floating "
                        "(N, C, ...) or channels-last (..., C) tensor"
                    )
                    return
                if (
                    self.guess_layout
                    and cdim == 1
                    and _looks_channels_last(tensor.shape)
                    and name not in self.notes
                ):
                    self.notes[name] = (
                        f"layer {name!r} outputs shape {tuple(tensor.shape)}, which looks "
                        f"channels-last ({tensor.shape[-1]} channels, not {tensor.shape[1]}); if "
                        "so, pass channel_dim=-1"
                    )
                    warnings.warn(self.notes[name], UserWarning, stacklevel=2)
                stats = sites[k] = ChannelStats(
                    tensor.shape[cdim],
                    tensor.device,
                    threshold=self.threshold,
                    mode=mode,
                    rates_every=self.rates_every,
                    channel_dim=cdim,
                )
            elif tensor.dim() < 2 or tensor.shape[cdim] != stats.channels:
                self.problems[name] = (
                    f"layer {name!r} call {k} changed from {stats.channels} channels to "
                    f"{_describe(tensor)}; its statistics are no longer updated"
                )
                return
            try:
                stats.update(tensor)
            except Exception as err:  # noqa: BLE001 - never break the user's training step
                self.problems[name] = f"layer {name!r}: {type(err).__name__}: {err}"

        return hook

    # ------------------------------------------------------------------ results
    def unreached(self) -> dict[str, str]:
        """``{layer: why}`` for requested layers or call sites that no counted forward went through.

        They are absent from :meth:`summaries`; a caller should say so rather than report nothing.
        A module that runs, but fewer times per forward than a requested ``"name@k"``, is told apart
        from one that never runs.
        """
        out: dict[str, str] = {}
        for name, wanted in self.wanted.items():
            if name in self.problems:
                continue
            calls = self.calls_per_forward.get(name, 0)
            if calls == 0:
                out[name] = not_reached_message(name, 0).replace(
                    "the forward pass", "any counted forward"
                )
                continue
            for k in sorted(wanted or ()):
                if k >= calls:
                    out[f"{name}@{k}"] = (
                        not_reached_message(f"{name}@{k}", calls)
                        + " (a plain name follows every call)"
                    )
        return out

    def key(self, name: str, call: int) -> str:
        """Reported name of a call site: ``name`` for a module run once per forward, else
        ``name@k``."""
        if self.wanted.get(name) is not None or name in self.reused:
            return f"{name}@{call}"
        return name

    def layout(self) -> list[tuple[str, int, int]]:
        """``(module name, call, channels)`` of every site seen so far, in a fixed order."""
        return sorted(
            (name, k, s.channels) for name, sites in self.sites.items() for k, s in sites.items()
        )

    def reset(self) -> None:
        """Start a new window for every site (in place; no host sync)."""
        for sites in self.sites.values():
            for stats in sites.values():
                stats.reset()

    def summaries(
        self,
        *,
        all_reduce: AllReduce | None = None,
        gather: GatherObjects | None = None,
        device: torch.device | None = None,
    ) -> dict[str, ChannelSummary]:
        """Per-site statistics of the current window, optionally reduced over processes.

        With ``all_reduce``, **every process must call this** (it runs collectives): ``gather``
        (``obj -> [obj of each rank]``) first agrees on the union of the sites all ranks saw (and
        on how often each module ran, so that :meth:`unreached` then agrees too), then
        ``all_reduce(tensor, "sum")`` adds counts, sums and positions, and ``all_reduce(tensor,
        "max")`` takes the maximum of the maxima, so N processes report exactly what one process
        sees on the union of their data (up to float rounding of the magnitude sums).

        Returns:
            ``{site key: ChannelSummary}`` for sites that saw at least one value, in layout order.
        """
        layout = self.layout()
        if gather is not None:
            names = set(self.wanted)
            ranks = gather((layout, dict(self.calls_per_forward)))
            seen = {tuple(site) for rank, _ in ranks for site in rank if site[0] in names}
            layout = sorted(seen)  # type: ignore[arg-type]
            # every rank must judge unreached layers and call sites (``unreached``) alike: a branch
            # may run on one rank's data only
            for _, calls in ranks:
                for name, n in calls.items():
                    self.calls_per_forward[name] = max(self.calls_per_forward.get(name, 0), int(n))
        if not layout:
            return {}
        # Every process must pack its tensors on the same kind of device for the collective, even a
        # process that never reached a site (pass the strategy's root device under DDP).
        if device is None:
            device = next(
                (s.count_on.device for sites in self.sites.values() for s in sites.values()),
                torch.device("cpu"),
            )
        for sites in self.sites.values():
            for stat in sites.values():
                if stat.count_on.device != device:
                    raise ValueError(
                        f"statistics live on {stat.count_on.device}, but `device` is {device}"
                    )
        for name, k, channels in layout:
            if k not in self.sites[name]:
                self.sites[name][k] = ChannelStats(
                    channels,
                    device,
                    threshold=self.threshold,
                    mode=self.modes[name],
                    rates_every=self.rates_every,
                    channel_dim=self.channel_dims[name],
                )
            if len({self.sites[name][k].channels, channels}) != 1:
                raise ValueError(
                    f"layer {name!r} call {k} has different channel counts on different processes"
                )
        stats = [self.sites[name][k] for name, k, _ in layout]
        # Two packed tensors, two collectives: sums (counts, magnitudes, positions) and maxima
        # (magnitudes, last firing update, updates), all float64 (integers exact below 2**53).
        totals = torch.cat(
            [torch.cat([s.count_on, s.sum_mag]) for s in stats]
            + [
                torch.tensor(
                    [float(s.positions) for s in stats], dtype=torch.float64, device=device
                )
            ]
        )
        maxima = torch.cat(
            [torch.cat([s.max_mag.double(), s.last_on.double()]) for s in stats]
            + [torch.tensor([float(s.updates) for s in stats], dtype=torch.float64, device=device)]
        )
        if all_reduce is not None:
            totals = all_reduce(totals, "sum")
            maxima = all_reduce(maxima, "max")
        totals, maxima = totals.cpu(), maxima.cpu()
        positions = totals[-len(stats) :]
        updates = maxima[-len(stats) :]
        out: dict[str, ChannelSummary] = {}
        offset = 0
        for i, (name, k, channels) in enumerate(layout):
            count, total = (
                totals[offset : offset + channels],
                totals[offset + channels : offset + 2 * channels],
            )
            maximum, last_on = (
                maxima[offset : offset + channels],
                maxima[offset + channels : offset + 2 * channels],
            )
            offset += 2 * channels
            if int(positions[i]) > 0:
                out[self.key(name, k)] = ChannelSummary.from_totals(
                    count, total, maximum, last_on, int(positions[i]), int(updates[i])
                )
        return out


def _first_tensor(output: Any) -> Any:
    """What the statistics read of a module's output: the output, or the first of a tuple."""
    return output[0] if isinstance(output, (tuple, list)) and output else output


def _looks_channels_last(shape: torch.Size) -> bool:
    """``(N, H, W, C)`` with a square map and more channels than rows: ConvNeXt-style blocks."""
    return len(shape) == 4 and shape[1] == shape[2] and shape[3] > shape[1]


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"
