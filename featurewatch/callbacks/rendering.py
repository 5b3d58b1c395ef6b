"""RenderCallback: the shared base of the callbacks that render images by optimization; and
:class:`Filmstrips`, the filmstrip logging that these and :class:`DatasetExamples` share."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from featurewatch.callbacks._ranks import broadcast, gather, share, world
from featurewatch.callbacks.base import FeatureWatchCallback
from featurewatch.core.filmstrip import (
    COLUMNS,
    ThumbnailStore,
    animation_frames,
    draw_filmstrip,
    encode_gif,
)
from featurewatch.core.fit_stats import ImageStats, fit_image_stats
from featurewatch.core.images import Normalize
from featurewatch.core.labels import labelled_grid
from featurewatch.core.objectives import Objective
from featurewatch.core.param import ImageSpec
from featurewatch.core.render import RenderResult, render
from featurewatch.core.validation import check_int, check_positive_float
from featurewatch.loggers import Event, add_animation

__all__ = [
    "Filmstrips",
    "NormalizeArg",
    "RenderCallback",
    "check_normalize",
    "image_header",
    "input_normalization",
]

#: Calls whose thumbnails a filmstrip keeps at most (thinned evenly beyond; see ThumbnailStore).
FILMSTRIP_CALLS = 2 * COLUMNS
#: Longest side of a stored thumbnail, in pixels.
THUMBNAIL_SIZE = 64

#: ``(mean, std)``, ``"data"`` (fitted from the first batch) or ``None`` (the model sees [0, 1]).
NormalizeArg = Normalize | str | None


def image_header(what: str, event: Event) -> str:
    """The short line drawn above a logged picture: ``"net.features.6 · epoch 3 · step 240"``
    (the full explanation stays in the caption)."""
    return f"{what} · epoch {event.epoch} · step {event.step}"


def check_normalize(normalize: Any) -> None:
    """Validate a ``normalize`` argument: ``(mean, std)``, ``"data"`` or ``None``.

    Raises:
        ValueError: for anything else.
    """
    if normalize is None or normalize == "data":
        return
    if (
        isinstance(normalize, str)
        or not isinstance(normalize, (tuple, list))
        or len(normalize) != 2
    ):
        raise ValueError(f"`normalize` must be (mean, std), 'data' or None, got {normalize!r}")


def input_normalization(
    normalize: NormalizeArg, x: torch.Tensor
) -> tuple[list[float], list[float]] | None:
    """The model's input normalization as plain lists, from ``normalize`` and a real batch ``x``.

    ``"data"`` fits it to ``x`` (exact for any per-channel affine normalization); a given
    ``(mean, std)`` is checked against the channels of ``x``; ``None`` stays ``None``.

    Raises:
        ValueError: if ``normalize`` is none of these, or a given mean or std has neither 1 value
            nor one per input channel.
    """
    check_normalize(normalize)
    if normalize is None:
        return None
    if isinstance(normalize, str):  # "data", the only string check_normalize lets through
        return fit_image_stats(x.detach().float().cpu()).normalize
    mean, std = normalize
    norm = ([float(v) for v in mean], [float(v) for v in std])
    for name, values in (("mean", norm[0]), ("std", norm[1])):
        if len(values) not in (1, x.shape[1]):
            raise ValueError(
                f"`normalize` {name} has {len(values)} values; the inputs have {x.shape[1]} "
                "channels"
            )
    return norm


class Filmstrips(FeatureWatchCallback):
    """Filmstrips of a callback's per-unit pictures: how each unit changed over the run.

    A subclass hands, at every call, one picture per unit of each image key to :meth:`keep`
    (stored as ``uint8`` thumbnails of at most 64 px in a
    :class:`~featurewatch.core.filmstrip.ThumbnailStore`: at most 24 calls per key, evenly thinned
    beyond, so at most ``24 * units * 3 * 64 * 64`` bytes per key, 4.7 MB for 16 units, in memory
    and in checkpoints). At the end of training (``on_train_end``, after the ``at_end`` call if
    there is one), and every ``filmstrip_every`` calls if set, it logs ``<key>/filmstrip``: rows =
    units, columns = calls (at most 12, evenly spread, first and last included, titled with epoch
    and step), with an animated GIF of every stored call for the sinks that show animations (see
    :mod:`featurewatch.loggers`). A filmstrip that cannot be drawn is reported (warning and
    ``featurewatch/<name>/<part>/filmstrip/error`` text), never raised unless ``strict``.

    Subclasses call :meth:`init_filmstrips` in ``__init__`` and include :meth:`filmstrip_state`
    in their ``extra_state`` (and :meth:`load_filmstrip_state` in ``load_extra_state``).
    """

    filmstrip_every: int | None = None

    def init_filmstrips(self, filmstrip_every: int | None, min_size: int) -> None:
        """Validate ``filmstrip_every`` (``None``: at the end of training only) and set up."""
        check_int("filmstrip_every", filmstrip_every, 1, allow_none=True)
        self.filmstrip_every = filmstrip_every
        self._film_min_size = max(int(min_size), 32)
        self._films: dict[str, ThumbnailStore] = {}
        self._film_titles: dict[str, str] = {}
        self._film_parts: dict[str, str] = {}
        self._film_drawn: dict[str, int] = {}  # key -> store.calls when last logged

    def keep(
        self,
        event: Event,
        key: str,
        images: torch.Tensor,
        labels: list[str],
        *,
        part: str,
        title: str,
    ) -> None:
        """Store this call's ``(units, C, H, W)`` pictures in ``[0, 1]`` of image ``key``.

        Args:
            event: this call's event (its epoch and step title the column).
            key: the image key; the filmstrip is logged as ``<key>/filmstrip``.
            images: one picture per unit, rows in this order.
            labels: one row label per unit.
            part: the key segment naming this part in error keys (a layer name).
            title: the filmstrip's heading.
        """
        store = self._films.setdefault(key, ThumbnailStore(FILMSTRIP_CALLS, THUMBNAIL_SIZE))
        store.add(images, epoch=event.epoch, step=event.step, labels=labels)
        self._film_titles[key], self._film_parts[key] = title, part

    def add_due_filmstrips(self, event: Event) -> None:
        """Every ``filmstrip_every`` calls, add every key's filmstrip to this call's event."""
        if self.filmstrip_every is not None and self.calls % self.filmstrip_every == 0:
            self._add_filmstrips(event, list(self._films))

    def _add_filmstrips(self, event: Event, keys: list[str]) -> None:
        for key in keys:
            store = self._films[key]
            if not store.frames:
                continue
            try:
                self._add_filmstrip(event, key, store)
                self._film_drawn[key] = store.calls
            except Exception as err:  # noqa: BLE001 - reported (re-raised if strict)
                part = self._film_parts.get(key, "output")
                self.report_failure(event, f"{part}/filmstrip", f"filmstrip of {key!r}", err)

    def _add_filmstrip(self, event: Event, key: str, store: ThumbnailStore) -> None:
        title = self._film_titles.get(key, key)
        still = draw_filmstrip(
            store.frames, store.labels, title=title, min_size=self._film_min_size
        )
        gif = encode_gif(
            animation_frames(store.frames, store.labels, title=title, min_size=self._film_min_size)
        )
        shown = store.columns()
        first, last = shown[0], shown[-1]
        caption = (
            f"{title}: rows {', '.join(store.labels)}; columns: {len(shown)} of {store.calls} "
            f"calls, evenly spread, from epoch {first.epoch} step {first.step} to epoch "
            f"{last.epoch} step {last.step}"
        )
        add_animation(event, f"{key}/filmstrip", still, gif, caption=caption)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)  # the at_end call, if due
        keys = [
            k for k, s in self._films.items() if s.frames and self._film_drawn.get(k) != s.calls
        ]
        if not keys or self._skip(trainer):
            return
        latest = max((self._films[k].frames[-1] for k in keys), key=lambda f: f.step)
        event = Event(step=latest.step, epoch=latest.epoch)
        self._part_failed = False
        self._add_filmstrips(event, keys)
        if self._part_failed:
            self._failures += 1
        if event:
            self._emit(event)

    def filmstrip_state(self) -> dict[str, Any]:
        """The thumbnails, for the checkpoint (bounded, see the class docstring)."""
        if not self._films:
            return {}
        return {
            "filmstrips": {
                key: {
                    **store.state_dict(),
                    "title": self._film_titles.get(key, key),
                    "part": self._film_parts.get(key, "output"),
                }
                for key, store in self._films.items()
            }
        }

    def load_filmstrip_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`filmstrip_state`: a resumed run's filmstrips go on from its calls."""
        for key, saved in (state.get("filmstrips") or {}).items():
            store = ThumbnailStore(FILMSTRIP_CALLS, THUMBNAIL_SIZE)
            store.load_state_dict(saved)
            self._films[key] = store
            self._film_titles[key] = str(saved.get("title", key))
            self._film_parts[key] = str(saved.get("part", "output"))


class RenderCallback(Filmstrips):
    """Shared machinery of the callbacks that render images by optimization.

    Owns the render settings, the input normalization (given, or fitted from the first batch),
    optional image statistics fitted from the first batch, and the render size (default: the
    training input size). Subclasses (:class:`~featurewatch.callbacks.ChannelVisualization`,
    :class:`~featurewatch.callbacks.ClassModelVisualization`) declare their own arguments and
    forward the rest, these and the schedule keywords, with ``**settings`` (see
    :mod:`featurewatch.callbacks.base`).

    Args:
        size: rendered image size in pixels. Default: the training input size (never upsampled).
        steps: optimization steps per call (64: ~0.3 s for 16 channels of a small CNN on 32 px,
            2 CPU cores; raise to 256-512 on a GPU or for ImageNet-size models).
        lr: Adam learning rate.
        normalize: the model's input normalization ``(mean, std)``; ``"data"`` fits it from the
            first batch (maps each channel's observed range to [0, 1], exact for inputs normalized
            with any per-channel affine map); ``None``: the model sees [0, 1] images.
        fit_stats: what to fit from the first batch: ``"color"`` the colour-decorrelation matrix
            (any channel count, instead of ImageNet's RGB matrix) with a ``1/f`` spectrum;
            ``"all"`` also the spectrum profile (natural-looking, but smoother and lower
            activations on blurry data such as upsampled digits); ``"none"``.
        transforms: ``"standard"`` (jitter, zoom, rotation scaled to the image size) or ``"none"``.
        redirect_steps: steps of ReLU-gradient redirect at the start (weak units get a signal).
        polish_steps: final steps without transforms (sharper, more specific images); default
            ``steps // 4``.
        batch_size: render at most this many units at once (memory cap for big layers / GPUs).
        time_budget: seconds per call for all the renders of the call; steps are cut short when
            exceeded (logged).
        seed: base seed of the initial noise and transforms.
        min_size: tiles are enlarged (nearest neighbour, display only) to at least this size.
        input_key: where the images are in a batch (index for tuples, key for dicts).
        filmstrip_every: also log the filmstrips every this many calls (``None``: only at the
            end of training); see :class:`Filmstrips`.
        **schedule: ``every_n_epochs``, ``every_n_train_steps``, ``at_start``, ``at_end``,
            ``strict``: see :class:`~featurewatch.callbacks.base.FeatureWatchCallback`.
    """

    def __init__(
        self,
        *,
        size: int | None = None,
        steps: int = 64,
        lr: float = 0.1,
        normalize: NormalizeArg = "data",
        fit_stats: str = "color",
        transforms: str | None = "standard",
        redirect_steps: int = 8,
        polish_steps: int | None = None,
        batch_size: int | None = None,
        time_budget: float | None = None,
        seed: int = 0,
        min_size: int = 64,
        input_key: int | str = 0,
        filmstrip_every: int | None = None,
        **schedule: Any,
    ) -> None:
        super().__init__(**schedule)
        check_int("min_size", min_size, 1)
        self.init_filmstrips(filmstrip_every, min_size)
        check_int("size", size, 8, allow_none=True)
        check_int("steps", steps, 1)
        check_int("redirect_steps", redirect_steps, 0)
        if polish_steps is None:
            polish_steps = steps // 4
        check_int("polish_steps", polish_steps, 0)
        check_int("seed", seed, 0)
        check_int("min_size", min_size, 1)
        if polish_steps > steps:
            raise ValueError(f"`polish_steps` ({polish_steps}) cannot exceed `steps` ({steps})")
        check_positive_float("lr", lr)
        check_int("batch_size", batch_size, 1, allow_none=True)
        check_normalize(normalize)
        if fit_stats not in ("color", "all", "none"):
            raise ValueError(f"`fit_stats` must be 'color', 'all' or 'none', got {fit_stats!r}")
        if transforms not in ("standard", "none", None):
            raise ValueError(f"`transforms` must be 'standard', 'none' or None, got {transforms!r}")
        self.size = size
        self.steps = steps
        self.lr = float(lr)
        self.normalize = normalize
        self.fit_stats = fit_stats
        self.transforms = transforms
        self.redirect_steps = redirect_steps
        self.polish_steps = polish_steps
        self.batch_size = batch_size
        self.time_budget = check_positive_float("time_budget", time_budget, allow_none=True)
        self.seed = seed
        self.min_size = min_size
        self.input_key = input_key
        self._stats: ImageStats | None = None
        self._norm: tuple[list[float], list[float]] | None = None
        self._input_shape: tuple[int, int, int] | None = None  # (C, H, W) of the training input
        self._synced = False  # the fitted statistics are rank zero's on every rank (DDP)

    # ------------------------------------------------------------------ input-derived settings
    def _learn_input(self, x: torch.Tensor) -> None:
        x = x.detach().float().cpu()
        self._input_shape = (int(x.shape[1]), int(x.shape[2]), int(x.shape[3]))
        fit = self.fit_stats != "none"
        if self.normalize == "data":  # one fit gives the normalization and the statistics
            stats: ImageStats | None = fit_image_stats(x)
            self._norm = stats.normalize  # type: ignore[union-attr]
        else:
            self._norm = input_normalization(self.normalize, x)
            stats = fit_image_stats(x, normalize=self._norm) if fit else None
        self._stats = stats if fit else None

    def _ensure_input(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The input size and statistics come from the first batch Lightning feeds the model.

        The base class runs even the ``at_start`` call after that batch has been seen, so this only
        fails if the callback is driven by hand before any batch. We never draw a batch from the
        user's dataloader ourselves: that would advance its sampler and change the run.
        """
        if self._input_shape is None:
            raise RuntimeError(f"{type(self).__name__} has not seen an input batch yet")

    def _spec(self) -> ImageSpec:
        if self._input_shape is None:
            raise RuntimeError(f"{type(self).__name__} has not seen an input batch yet")
        c, h, w = self._input_shape
        size = (self.size, self.size) if self.size is not None else (h, w)
        return ImageSpec(
            channels=c, size=size, stats=self._stats, fitted_spectrum=self.fit_stats == "all"
        )

    def _render(
        self,
        model: nn.Module,
        objective: Objective,
        seeds: list[int],
        budget: float | None,
    ) -> RenderResult:
        """Render ``objective`` on ``model`` (the LightningModule, or a view of it).

        With ``all_ranks`` under DDP, each rank renders its share of the elements (whole groups)
        and every rank gets them all, as one process would render them: the fitted input
        statistics are rank zero's (each rank saw other batches).
        """
        rank, size = world() if self.all_ranks else (0, 1)
        if size > 1 and not self._synced:
            self._norm, self._stats = broadcast((self._norm, self._stats))
            self._synced = True
        spec = self._spec()

        def part(elements: tuple[int, int] | None) -> RenderResult:
            return render(
                model,
                objective,
                spec,
                seeds=seeds,
                steps=self.steps,
                lr=self.lr,
                transforms=self.transforms,
                normalize=self._norm,
                batch_size=self.batch_size,
                elements=elements,
                time_budget=budget,
                redirect_steps=self.redirect_steps,
                polish_steps=self.polish_steps,
            )

        if size == 1:
            return part(None)
        lo, hi = share(len(seeds), rank, size, objective.group or 1)
        parts = [p for p in gather(lambda: part((lo, hi)) if hi > lo else None) if p is not None]
        return RenderResult(
            images=torch.cat([p.images for p in parts]),
            values=torch.cat([p.values for p in parts]),
            initial_values=torch.cat([p.initial_values for p in parts]),
            steps=torch.cat([p.steps for p in parts]),
            seconds=max(p.seconds for p in parts),
            budget_exceeded=any(p.budget_exceeded for p in parts),
        )

    def _display(
        self,
        images: torch.Tensor,
        titles: Sequence[str | Sequence[str]],
        *,
        group: int = 1,
        header: str | None = None,
    ) -> torch.Tensor:
        """The logged picture: each tile under its title (:func:`labelled_grid`), enlarged to
        ``min_size`` (nearest neighbour, integer factor), in a near-square grid under ``header``;
        groups of ``group`` consecutive images (the variants of one unit) stay together on one
        row. The filmstrips keep the unlabelled images (see :meth:`keep`)."""
        nrow = None if group == 1 else group * math.ceil(math.sqrt(images.shape[0] / group**2))
        return labelled_grid(images, titles, ncol=nrow, min_tile=self.min_size, header=header)

    def extra_state(self) -> dict[str, Any]:
        if self._input_shape is None:
            return {}
        state: dict[str, Any] = {
            "input_shape": list(self._input_shape),
            "norm": self._norm,
            **self.filmstrip_state(),
        }
        if self._stats is not None:
            s = self._stats
            state["stats"] = {
                "low": s.low,
                "high": s.high,
                "color": s.color,
                "freqs": s.freqs,
                "amplitude": s.amplitude,
            }
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.load_filmstrip_state(state)
        if "input_shape" in state:
            self._input_shape = tuple(int(v) for v in state["input_shape"])  # type: ignore[assignment]
            self._norm = state.get("norm")
            st = state.get("stats")
            self._stats = ImageStats(**st) if isinstance(st, dict) else None
            self._checked_input = True
