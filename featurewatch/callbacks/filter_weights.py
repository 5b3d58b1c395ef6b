"""FilterWeights: the first-layer filters as a grid (``Conv2d``) or as curves (``Conv1d``), the
classic sanity check of a CNN."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from featurewatch.callbacks._arguments import check_input_key
from featurewatch.callbacks.base import FeatureWatchCallback, check_layer
from featurewatch.core.inspect import filter_grid
from featurewatch.core.labels import with_header
from featurewatch.core.layers import CONV_TYPES, find_first_conv, resolve_layer
from featurewatch.core.signals import filter_curves
from featurewatch.core.validation import NON_IMAGE_ALTERNATIVES, check_int
from featurewatch.loggers import Event

__all__ = ["FilterWeights"]

#: The convolutions whose filters are drawn: 2-D as tiles, 1-D as curves.
DRAWN = (nn.Conv2d, nn.Conv1d)


class FilterWeights(FeatureWatchCallback):
    """Log the filters of a convolution that looks at the input: tiles (2-D) or curves (1-D).

    Well-trained first layers show oriented edges, colour blobs and Gabor-like patterns; filters
    that stay noisy or flat point to a too-low learning rate, too-strong weight decay or dead
    units (Krizhevsky et al., 2012; Yosinski et al., 2015). The filters of a ``Conv1d`` over
    signals are short waveforms, drawn as curves: one small plot per filter titled
    ``filter k``, a line per input channel, one y-scale for all with a zero line (see
    :func:`~featurewatch.core.signals.filter_curves`); a first layer over raw audio grows
    band-pass-like oscillations.

    Args:
        layer: name of a ``Conv2d`` or ``Conv1d`` whose input channels are the input's channels,
            as in ``model.named_modules()``. Default: the first convolution of the model.
        min_size: ``Conv2d`` tiles are enlarged (nearest neighbour) to at least this many pixels.
        max_filters: ``Conv1d`` curves: draw at most the first this many filters.
        input_key: where the inputs are in a batch (index for tuples, key for dicts); the first
            batch's inputs are checked against ``layer``'s input channels.
        **schedule: ``every_n_epochs``, ``every_n_train_steps``, ``at_start``, ``at_end``,
            ``strict``: see :class:`~featurewatch.callbacks.base.FeatureWatchCallback`.

    Logged keys:
        - ``featurewatch/filters/<layer>``: image, the grid of filters (``Conv2d``: each scaled so
          zero is grey; ``Conv1d``: the curves, titled with the layer, epoch and step).
        - ``featurewatch/filters/<layer>/weights``: histogram of the weights.
        - ``featurewatch/filters/seconds``: wall time of the call.

    Example:
        >>> trainer = pl.Trainer(callbacks=[FilterWeights()])
        >>> FilterWeights("net.0", max_filters=16)  # a Conv1d: 16 curve plots
    """

    default_name = "filters"

    def __init__(
        self,
        layer: str | None = None,
        *,
        min_size: int = 32,
        max_filters: int = 64,
        input_key: int | str = 0,
        **schedule: Any,
    ) -> None:
        super().__init__(**schedule)
        check_layer("layer", layer, allow_none=True)
        check_int("min_size", min_size)
        check_int("max_filters", max_filters)
        check_input_key(input_key)
        self.layer = layer
        self.min_size = min_size
        self.max_filters = max_filters
        self.input_key = input_key

    def state_key_fields(self) -> dict[str, Any]:
        return {"layer": self.layer}

    def _conv(self, pl_module: nn.Module) -> tuple[str, nn.Conv1d | nn.Conv2d]:
        if self.layer is None and not any(isinstance(m, CONV_TYPES) for m in pl_module.modules()):
            raise ValueError(
                f"FilterWeights draws the filters of a conv layer, and {type(pl_module).__name__} "
                f"has none; {NON_IMAGE_ALTERNATIVES}"
            )
        name = self.layer if self.layer is not None else find_first_conv(pl_module)
        module = resolve_layer(pl_module, name)
        weight = getattr(module, "weight", None)
        if not isinstance(module, DRAWN) or not isinstance(weight, torch.Tensor):
            drawn = [n for n, m in pl_module.named_modules() if isinstance(m, DRAWN)]
            instead = (
                f"the first nn.Conv2d/nn.Conv1d here is {drawn[0]!r}"
                if drawn
                else f"this model has neither; {NON_IMAGE_ALTERNATIVES}"
            )
            raise ValueError(  # noqa: TRY004 - a bad `layer` value, not a bad argument type
                f"FilterWeights(layer={name!r}) draws the filters of an nn.Conv2d (as tiles) or an "
                f"nn.Conv1d (as curves), but that layer is a {type(module).__name__}; {instead}"
            )
        return name, module

    def check_model(self, pl_module: pl.LightningModule) -> None:
        self._conv(pl_module)

    def check_input(self, pl_module: pl.LightningModule, x: torch.Tensor) -> None:
        name, conv = self._conv(pl_module)
        if self.layer is not None and conv.in_channels != x.shape[1]:
            what = "signals" if isinstance(conv, nn.Conv1d) else "images"
            raise ValueError(
                f"FilterWeights(layer={name!r}) shows filters that look at the input, but "
                f"{name!r} has {conv.in_channels} input channels and the {what} have "
                f"{x.shape[1]}; use the first convolution ({find_first_conv(pl_module)!r}) or "
                "leave layer=None"
            )

    def visualize(self, trainer: pl.Trainer, pl_module: pl.LightningModule, event: Event) -> None:
        name, conv = self._conv(pl_module)
        if isinstance(conv, nn.Conv1d):
            image = filter_curves(
                conv.weight,
                max_filters=self.max_filters,
                title=f"{name} · epoch {event.epoch} · step {event.step}",
            )
        else:
            image = with_header(
                filter_grid(conv, min_size=self.min_size),
                f"{name} · {conv.out_channels} filters · epoch {event.epoch} · step {event.step}",
                size=11,
            )
        event.add_image(
            f"featurewatch/{self.name}/{name}",
            image,
            caption=(
                f"epoch {event.epoch}, step {event.step}: {conv.out_channels} filters of {name}"
            ),
        )
        event.add_histogram(f"featurewatch/{self.name}/{name}/weights", conv.weight)
