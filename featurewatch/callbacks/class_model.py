"""ClassModelVisualization: one image per class that the network scores highest for that class."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from featurewatch.callbacks._ranks import world
from featurewatch.callbacks.rendering import RenderCallback, image_header
from featurewatch.core.hygiene import model_device_dtype
from featurewatch.core.images import normalizer
from featurewatch.core.objectives import CLASS_SCORES, class_score
from featurewatch.core.outputs import OutputKey, check_output_key, class_scores
from featurewatch.core.render import unit_seed
from featurewatch.core.validation import (
    check_channel_list,
    check_image_inputs,
    check_int,
    out_of_range_message,
)
from featurewatch.loggers import Event

__all__ = ["ClassModelVisualization"]

_NAME_ATTRS = ("class_names", "classes")
_WHO = "class model visualization"  # starts the messages about the model's output


def _names_from(obj: object) -> list[str] | None:
    for attr in _NAME_ATTRS:
        value = getattr(obj, attr, None)
        if isinstance(value, dict):
            return [str(value[k]) for k in sorted(value)]
        if (
            isinstance(value, (list, tuple))
            and value
            and all(isinstance(v, (str, int)) for v in value)
        ):
            return [str(v) for v in value]
    return None


class _Logits(nn.Module):
    """``model`` seen through ``output_key``: its forward returns the ``(N, classes)`` logits.

    The render loop maximizes a score in *the* model output (the capture of a tuple output keeps
    only its first element), so a model returning ``{"logits": ..., "aux": ...}`` is rendered
    through this view. It holds the user's model as its only child and adds nothing: isolation,
    hooks and gradients reach the same modules and parameters, and the wrapper is dropped after
    each call.
    """

    def __init__(self, model: nn.Module, output_key: OutputKey) -> None:
        super().__init__()
        self.model = model
        self.output_key = output_key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return class_scores(self.model(x), self.output_key, _WHO)


class ClassModelVisualization(RenderCallback):
    """Render, at every call, an image per class that maximizes the class's score.

    The class model visualization of Simonyan et al. (2014), with a spectral parametrization and
    transformation robustness (Olah et al., 2017). The score is the pre-softmax logit plus the
    log-probability by default: the logit alone also rewards evidence that several classes share,
    and its images of some classes then raise another class more than their own. Early in training
    the images are noise the network happens to like; as it learns, each becomes a recognizable
    prototype of its class (a digit's strokes). The fraction of images the network classifies as
    their own class is logged.

    Args:
        classes: class indices to render. Default: every output of the model (up to
            ``max_classes``).
        class_names: names for the captions. Default: ``class_names`` or ``classes`` of the
            datamodule, of the LightningModule, or of the training dataset, when one has them.
        max_classes: cap when ``classes`` is not given.
        output_key: where the logits are in the model's output, as in
            :class:`~featurewatch.callbacks.AttributionMaps`: ``None`` (``forward`` returns them),
            an index (``0`` for a model returning ``(logits, features)``), a dict key
            (``"logits"`` for ``{"logits": ..., "aux": ...}``) or a function ``output -> logits``.
            The images maximize the selected logits. Checked with one forward pass at the first
            batch.
        score: what each image maximizes: ``"logit+log_probability"`` (default), ``"logit"``
            (Simonyan et al.'s pre-softmax score) or ``"log_probability"``; see
            :func:`~featurewatch.core.objectives.class_score`.
        redirect_steps: steps of ReLU-gradient redirect at the start (default 0 here;
            ``ChannelVisualization``'s is 8).
        **settings: the other render settings (``size``, ``steps``, ``lr``, ``normalize``,
            ``fit_stats``, ``transforms``, ``polish_steps``, ``batch_size``, ``time_budget``,
            ``seed``, ``min_size``, ``input_key``, ``filmstrip_every``): see
            :class:`~featurewatch.callbacks.rendering.RenderCallback`; and the schedule keywords
            ``every_n_epochs``, ``every_n_train_steps``, ``at_start``, ``at_end``, ``strict``: see
            :class:`~featurewatch.callbacks.base.FeatureWatchCallback`.

    Logged keys:
        - ``featurewatch/class_model/output``: image, one tile per class (row-major), each under
          a title strip with its index and name ("3 · three"; the index alone without names, for
          names that are the index itself, or where the name does not fit the tile), under the
          header
          "class model · epoch E · step S"; the caption lists index and name of each class.
        - ``featurewatch/class_model/output/mean_logit``: scalar, mean logit of the images' own
          classes (the model's score of the logged images, whatever ``score`` they maximized).
        - ``featurewatch/class_model/output/self_classified``: scalar, fraction of images the
          model classifies as the class they were rendered for.
        - ``featurewatch/class_model/output/filmstrip``: image, at the end of training (and every
          ``filmstrip_every`` calls): one row per class (``index: name``), one column per call (at
          most 12, evenly spread, titled with epoch and step), with an animated GIF where the
          logger shows animations; see :class:`~featurewatch.callbacks.rendering.Filmstrips` for
          the memory bound (thumbnails of at most 64 px, 24 calls, kept in checkpoints).
        - ``featurewatch/class_model/seconds``: wall time of the call.

    Under DDP every rank renders a contiguous share of the classes and the images are gathered
    (those of one process; rank zero logs them), so a call's wall time falls with the ranks.

    Example:
        >>> ClassModelVisualization(class_names=[str(d) for d in range(10)], steps=64)
        >>> ClassModelVisualization(output_key="logits")  # forward returns {"logits": ..., ...}
    """

    default_name = "class_model"
    all_ranks = True  # each rank renders its share of the classes (see RenderCallback._render)

    def __init__(
        self,
        classes: Sequence[int] | None = None,
        class_names: Sequence[str] | None = None,
        *,
        max_classes: int = 16,
        output_key: int | str | Callable[[Any], torch.Tensor] | None = None,
        score: str = "logit+log_probability",
        redirect_steps: int = 0,
        **settings: Any,
    ) -> None:
        super().__init__(redirect_steps=redirect_steps, **settings)
        if score not in CLASS_SCORES:
            raise ValueError(
                f"`score` must be one of {', '.join(map(repr, CLASS_SCORES))}, got {score!r}"
            )
        self.score = score
        if classes is not None:
            classes = check_channel_list("classes", classes, allow_int=False)
        if class_names is not None and (
            isinstance(class_names, str) or not all(isinstance(n, str) for n in class_names)
        ):
            raise TypeError(f"`class_names` must be a list of strings, got {class_names!r}")
        check_int("max_classes", max_classes, 1)
        check_output_key(output_key)
        self.output_key = output_key
        self.classes = classes
        self.class_names = list(class_names) if class_names is not None else None
        self.max_classes = max_classes
        self._num_outputs: int | None = None

    def check_input(self, pl_module: pl.LightningModule, x: torch.Tensor) -> None:
        check_image_inputs("ClassModelVisualization", x)
        self._learn_input(x)
        with torch.no_grad():
            out = pl_module(x[:1])
        try:
            scores = class_scores(out, self.output_key, _WHO)
        except ValueError as err:  # a dict/tuple without `output_key`, or a wrong one: say which
            raise ValueError(f"ClassModelVisualization: {err}") from err
        self._num_outputs = int(scores.shape[1])
        if self.classes is not None and max(self.classes) >= self._num_outputs:
            raise ValueError(
                "ClassModelVisualization: "
                + out_of_range_message(max(self.classes), self._num_outputs)
            )
        if self.class_names is not None and len(self.class_names) != self._num_outputs:
            raise ValueError(
                f"ClassModelVisualization: `class_names` has {len(self.class_names)} names but the "
                f"model scores {self._num_outputs} classes; pass one name per class, in the order "
                "of the model's outputs (name i is class i)"
            )

    def _logits_model(self, pl_module: pl.LightningModule) -> nn.Module:
        """The module whose output is the logits: the model itself, or a view through
        ``output_key``."""
        return pl_module if self.output_key is None else _Logits(pl_module, self.output_key)

    def _classes(self) -> list[int]:
        if self.classes is not None:
            return list(self.classes)
        assert self._num_outputs is not None
        return list(range(min(self.max_classes, self._num_outputs)))

    def _names(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> list[str] | None:
        if self.class_names is not None:
            return self.class_names
        sources: list[object] = [getattr(trainer, "datamodule", None), pl_module]
        loader = getattr(trainer, "train_dataloader", None)
        sources.append(getattr(loader, "dataset", None))
        for source in sources:
            if source is not None and (names := _names_from(source)) is not None:
                return names
        return None

    def visualize(self, trainer: pl.Trainer, pl_module: pl.LightningModule, event: Event) -> None:
        self._ensure_input(trainer, pl_module)
        if self._num_outputs is None:
            with torch.no_grad():
                x = torch.zeros(
                    1,
                    *self._input_shape,
                    device=pl_module.device,
                    dtype=model_device_dtype(pl_module)[1],
                )  # type: ignore[misc]
                self._num_outputs = int(class_scores(pl_module(x), self.output_key, _WHO).shape[1])
        classes = self._classes()
        model = self._logits_model(pl_module)
        self.progress(f"{len(classes)} classes, {self.steps} steps")
        result = self._render(
            model,
            class_score(classes, self.score),
            [unit_seed(self.seed, c) for c in classes],
            self.time_budget,
        )
        if world()[0] != 0:  # the other DDP ranks only share the renders; rank zero draws
            return
        names = self._names(trainer, pl_module)
        label = [
            f"{c}: {names[c]}" if names is not None and c < len(names) else str(c) for c in classes
        ]
        titles = [  # the index alone where the name does not fit: never lose the index
            (f"{c} · {names[c]}", str(c))
            if names is not None and c < len(names) and str(names[c]) != str(c)
            else str(c)  # no name, or a name that only repeats the index (digits)
            for c in classes
        ]
        images = result.images.to(pl_module.device)
        images = normalizer(self._norm, images.shape[1], images.device)(images)
        with torch.no_grad():
            logits = model(images.to(next(pl_module.parameters()).dtype)).float().cpu()
        predicted = logits.argmax(1)
        own = predicted == torch.tensor(classes)
        # the logit itself, whatever the images maximized (its sum with the log-probability)
        picked = logits[torch.arange(len(classes)), torch.tensor(classes)]
        caption = (
            f"epoch {event.epoch}, step {event.step}: class model images (row-major), classes "
            + ", ".join(label)
            + f"; classified as their class: {int(own.sum())}/{len(classes)}"
            + (
                f"; time budget cut steps to {int(result.steps.min())}"
                if result.budget_exceeded
                else ""
            )
        )
        key = f"featurewatch/{self.name}/output"
        header = image_header("class model", event)
        event.add_image(key, self._display(result.images, titles, header=header), caption=caption)
        event.add_scalar(f"{key}/mean_logit", float(picked.mean()))
        event.add_scalar(f"{key}/self_classified", float(own.float().mean()))
        self.keep(
            event,
            key,
            result.images,
            label,
            part="output",
            title="class model images: classes (rows) over calls (columns)",
        )
        self.add_due_filmstrips(event)

    def extra_state(self) -> dict[str, Any]:
        state = super().extra_state()
        if self._num_outputs is not None:
            state["num_outputs"] = self._num_outputs
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        if "num_outputs" in state:
            self._num_outputs = int(state["num_outputs"])
