"""FeatureDrift: how much each layer's representation of fixed probe images changed (linear CKA)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch

from featurewatch.callbacks._probe import Normalize, ProbeImages
from featurewatch.callbacks.base import FeatureWatchCallback, check_int, check_layers
from featurewatch.core.drift import cka_from_grams, gram
from featurewatch.core.inspect import activation_maps
from featurewatch.core.layers import list_layers, parse_layer, resolve_layer
from featurewatch.loggers import Event

__all__ = ["FeatureDrift"]

#: The chart's x axis gets at most this many labelled ticks.
_MAX_TICKS = 8
#: The chart's smallest change ``1 - CKA`` (its log axis would go to minus infinity at CKA = 1).
_CHANGE_FLOOR = 1e-6


class FeatureDrift(FeatureWatchCallback):
    """Log, per layer, the linear CKA between its activations on fixed probe images now and at the
    previous and first calls: the curve that shows when a layer has settled.

    A layer whose ``cka_previous`` approaches 1 has stopped changing what it computes on the probe
    (up to rotations and scale of its feature space, to which CKA is blind); ``cka_first`` says how
    far it has moved from the network it was at the first call. Plotted for every layer, the curves
    typically show layers settling bottom-up, the first ones early in training (Raghu et al., 2017,
    "SVCCA"; CKA: Kornblith et al., 2019, "Similarity of Neural Network Representations
    Revisited"). Each call is one forward pass of the probe, truncated after the deepest layer.

    Memory: between calls only two ``N x N`` float64 Gram matrices per layer are kept (the first
    and the previous call's; ``N`` = probe images), ``2 * N^2 * 8`` bytes per layer whatever its
    width: 64 KiB per layer for the default 64 probe images. They are checkpointed with the history
    of values (for the chart) and the probe itself, so a resumed run continues the curves and
    ``cka_first`` still refers to the original first call.

    Args:
        layers: layer names as in ``model.named_modules()`` (``"name@k"`` picks the k-th call of a
            module used several times in ``forward``); logged keys use them as written. Default,
            as :class:`~featurewatch.callbacks.ActivationGrid`: the conv layers whose maps are
            larger than 1x1 at the input size, at most ``max_layers`` of them evenly spaced from
            the first to the last.
        probe: the probe images: a ``(N, C, H, W)`` tensor (already normalized like training
            inputs), a path (image file, folder of images, or ``.pt`` tensor; resized to the
            training input size and normalized with ``normalize``), or ``None`` to take the first
            ``num_images`` inputs of the validation dataloader (training one if there is none, or
            if none was seen before the first call) once and keep them for the whole run.
        num_images: number of probe images (at least 2; CKA compares how the images relate to
            each other, and a few dozen give a stable value).
        max_layers: cap on the default layers (ignored when ``layers`` is given).
        normalize: ``(mean, std)`` applied to probe images loaded from a path.
        input_key: where the images are in a batch (index for tuples, key for dicts).
        every_n_epochs, every_n_train_steps, at_start, at_end, strict: see
            :class:`~featurewatch.callbacks.base.FeatureWatchCallback`.

    Logged keys:
        - ``featurewatch/drift/<layer>/cka_previous``: scalar in [0, 1], CKA with the previous call
          (from the second call on).
        - ``featurewatch/drift/<layer>/cka_first``: scalar in [0, 1], CKA with the first call (1 at
          the first call).
        - ``featurewatch/drift/cka_previous``: image, every layer's change ``1 - cka_previous``
          over the global step, on a log axis (from the second call on; see :meth:`chart`).
        - ``featurewatch/drift/<layer>/error``: text, if one layer could not be compared (e.g. its
          output is the same for every probe image); the other layers are still logged.
        - ``featurewatch/drift/error``: text, if the whole call failed.
        - ``featurewatch/drift/seconds``: wall time of the call.

    Example:
        >>> trainer = pl.Trainer(callbacks=[FeatureDrift(num_images=64)])
    """

    default_name = "drift"

    def __init__(
        self,
        layers: Sequence[str] | None = None,
        probe: torch.Tensor | str | None = None,
        num_images: int = 64,
        *,
        max_layers: int = 8,
        normalize: Normalize | None = None,
        input_key: int | str = 0,
        **schedule: Any,
    ) -> None:
        super().__init__(**schedule)
        self.layers = check_layers(layers, allow_none=True)
        check_int("num_images", num_images, minimum=2)
        check_int("max_layers", max_layers)
        self.max_layers = max_layers
        self.input_key = input_key
        self._probe = ProbeImages(probe, num_images, normalize)
        # (a 3-D tensor may be N signals of a 1-D net: counted at the first batch)
        if self._probe.fixed is not None and self._probe.signals is None:
            _check_count(
                self._probe.fixed, f"a probe tensor of shape {tuple(self._probe.fixed.shape)}"
            )
        self._default_layers: list[str] | None = None
        #: Gram matrices of the first and of the previous call, per layer (float64 CPU, N x N)
        self.first_grams: dict[str, torch.Tensor] = {}
        self.previous_grams: dict[str, torch.Tensor] = {}
        #: One entry per call: ``{"step", "epoch", "cka_previous": {layer: v}, "cka_first": {...}}``
        self.history: list[dict[str, Any]] = []

    def state_key_fields(self) -> dict[str, Any]:
        return {"layers": self.layers}

    # ------------------------------------------------------------------ layers
    def _layers(self, pl_module: pl.LightningModule) -> list[str]:
        if self.layers is not None:
            return self.layers
        if self._default_layers is not None:
            return self._default_layers
        convs = list_layers(pl_module, kinds=("conv",))
        if not convs:
            available = ", ".join(list_layers(pl_module, kinds=("activation", "linear"))[:10])
            raise ValueError(
                f"FeatureDrift: {type(pl_module).__name__} has no conv layer to pick by default; "
                f"pass `layers=` (e.g. {available or 'names from model.named_modules()'})"
            )
        return convs

    def check_model(self, pl_module: pl.LightningModule) -> None:
        for layer in self._layers(pl_module):
            resolve_layer(pl_module, layer)

    def check_input(self, pl_module: pl.LightningModule, x: torch.Tensor) -> None:
        self._probe.resolve_path(x)
        # (the base class has checked the probe against x: a 3-D tensor is N signals or one
        # image by now)
        if self._probe.fixed is not None:
            n = self._probe.fixed.shape[0]
            _check_count(
                self._probe.fixed,
                f"a probe tensor of shape {tuple(self._probe.fixed.shape)}"
                if isinstance(self._probe.source, torch.Tensor)
                else f"{n} from the probe path {str(self._probe.source)!r}",
            )
        sample = self._probe.fixed if self._probe.fixed is not None else x
        self._default_layers = None
        # one image through the model: a 'name@k' past the module's last call fails here, before
        # the first training step, and the default layers are picked by their map size
        maps = activation_maps(pl_module, sample[:1], self._layers(pl_module))
        if self.layers is not None:
            return
        spatial = [la for la, m in maps.items() if m.dim() == 4 and m.shape[-2] * m.shape[-1] > 1]
        self._default_layers = _evenly_spaced(spatial or list(maps), self.max_layers)

    def observe_batch(self, batch: Any, split: str) -> None:
        if self._probe.fixed is None and self._probe.source is None:
            self._probe.observe(self.input_from_batch(batch), split)

    # ------------------------------------------------------------------ the work
    def visualize(self, trainer: pl.Trainer, pl_module: pl.LightningModule, event: Event) -> None:
        probe = self._probe.get()
        if probe.shape[0] < 2:
            raise ValueError(
                f"FeatureDrift needs at least 2 probe images, only {probe.shape[0]} were seen "
                "before the first call; pass `probe=` or use a validation set with more images"
            )
        layers = self._layers(pl_module)
        maps = activation_maps(pl_module, probe, layers)
        entry: dict[str, Any] = {
            "step": event.step,
            "epoch": event.epoch,
            "cka_previous": {},
            "cka_first": {},
        }
        for layer in layers:
            try:
                current = gram(maps[str(parse_layer(layer))])
                first = self.first_grams.get(layer)
                if first is None or first.shape != current.shape:
                    first = self.first_grams[layer] = current
                previous = self.previous_grams.get(layer)
                if previous is not None and previous.shape == current.shape:
                    value = cka_from_grams(previous, current)
                    entry["cka_previous"][layer] = value
                    event.add_scalar(f"featurewatch/{self.name}/{layer}/cka_previous", value)
                value = cka_from_grams(first, current)
                entry["cka_first"][layer] = value
                event.add_scalar(f"featurewatch/{self.name}/{layer}/cka_first", value)
                self.previous_grams[layer] = current
            except Exception as err:  # noqa: BLE001 - one layer (e.g. constant output) must not cost all
                self.report_failure(event, layer, f"layer {layer!r}", err)
        del maps
        self.history.append(entry)
        if any(e["cka_previous"] for e in self.history):
            event.add_figure(
                f"featurewatch/{self.name}/cka_previous",
                self.chart(),
                caption=(
                    f"epoch {event.epoch}, step {event.step}: CKA of each layer's activations on "
                    f"{probe.shape[0]} probe images with the previous call (1 = unchanged)"
                ),
            )

    def chart(self) -> Any:
        """Every layer's ``cka_previous`` over the global step, as a matplotlib ``Figure``.

        Plotted as the change ``1 - cka_previous`` on a log axis (floored at
        :data:`_CHANGE_FLOOR`): CKA values of a training run crowd just below 1 (0.95, 0.998,
        0.9999), where a linear axis shows flat lines; on a log axis a settling layer is a line
        falling by orders of magnitude. Lines are coloured from dark (first layer) to bright
        (last), so layers settling bottom-up read as the dark lines falling first.
        """
        from matplotlib import colormaps
        from matplotlib.figure import Figure

        layers: list[str] = []
        for e in self.history:
            layers += [la for la in e["cka_previous"] if la not in layers]
        fig = Figure(figsize=(7.5, 3.6), dpi=100)
        fig.subplots_adjust(left=0.09, right=0.72, bottom=0.24, top=0.88)
        ax = fig.add_subplot()
        cmap = colormaps["viridis"]
        for i, layer in enumerate(layers):
            points = [
                (e["step"], e["cka_previous"][layer])
                for e in self.history
                if layer in e["cka_previous"]
            ]
            ax.plot(
                [p[0] for p in points],
                [max(1.0 - p[1], _CHANGE_FLOOR) for p in points],
                marker="o",
                markersize=3.5,
                linewidth=1.6,
                color=cmap(0.85 * i / max(len(layers) - 1, 1)),
                label=layer,
            )
        calls = [e for e in self.history if e["cka_previous"]]
        stride = max(1, -(-len(calls) // _MAX_TICKS))
        shown = calls[::stride]
        ax.set_xticks(
            [e["step"] for e in shown], [f"{e['step']}\nep {e['epoch']}" for e in shown], fontsize=8
        )
        ax.set_xlabel("global step (epoch)", fontsize=9)
        ax.set_yscale("log")
        ax.set_ylim(_CHANGE_FLOOR, 1.0)
        ax.tick_params(axis="y", labelsize=8)
        ax.set_ylabel("1 - CKA with previous call", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.set_title(
            "FeatureDrift: how much each layer changed since the previous call (lower = settled)",
            fontsize=10,
            loc="left",
        )
        ax.legend(
            loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False, title="layer"
        )
        return fig

    # ------------------------------------------------------------------ resume
    def extra_state(self) -> dict[str, Any]:
        return {
            **self._probe.state(),
            "first_grams": dict(self.first_grams),
            "previous_grams": dict(self.previous_grams),
            "history": [
                {
                    "step": int(e["step"]),
                    "epoch": int(e["epoch"]),
                    "cka_previous": {k: float(v) for k, v in e["cka_previous"].items()},
                    "cka_first": {k: float(v) for k, v in e["cka_first"].items()},
                }
                for e in self.history
            ],
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self._probe.load_state(state)
        grams = {}
        for field in ("first_grams", "previous_grams"):
            grams[field] = {
                str(k): v.to(device="cpu", dtype=torch.float64)
                for k, v in dict(state.get(field, {})).items()
                if isinstance(v, torch.Tensor)
            }
        self.first_grams, self.previous_grams = grams["first_grams"], grams["previous_grams"]
        self.history = [
            {
                "step": int(e["step"]),
                "epoch": int(e["epoch"]),
                "cka_previous": {str(k): float(v) for k, v in e.get("cka_previous", {}).items()},
                "cka_first": {str(k): float(v) for k, v in e.get("cka_first", {}).items()},
            }
            for e in state.get("history", [])
        ]


def _check_count(probe: torch.Tensor, what: str) -> None:
    if probe.shape[0] < 2:
        raise ValueError(
            "FeatureDrift compares how probe inputs relate to each other and needs at least 2 of "
            f"them, got {what}; add inputs"
        )


def _evenly_spaced(items: list[str], k: int) -> list[str]:
    """``k`` of ``items`` from the first to the last at even steps (all of them if ``len <= k``);
    the same choice as ActivationGrid's default layers."""
    if len(items) <= k:
        return list(items)
    if k == 1:
        return [items[-1]]
    picks = sorted({round(i * (len(items) - 1) / (k - 1)) for i in range(k)})
    return [items[i] for i in picks]
