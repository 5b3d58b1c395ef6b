"""featurewatch: watch what a convolutional network learns while it trains.

Lightning callbacks (``featurewatch.callbacks``) schedule the work, a pure-torch core
(``featurewatch.core``) computes it, and logger adapters (``featurewatch.loggers``) send it to
TensorBoard, Weights & Biases, MLflow or plain files.

Every public name is importable from here. Names are resolved lazily, so ``import
featurewatch.core`` (or using only core functions) never imports Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # callbacks
    "FeatureWatchCallback": "featurewatch.callbacks.base",
    "FeatureWatchWarning": "featurewatch.callbacks.base",
    "FilterWeights": "featurewatch.callbacks.filter_weights",
    "ActivationGrid": "featurewatch.callbacks.activation_grid",
    "ChannelVisualization": "featurewatch.callbacks.channel_visualization",
    "ClassModelVisualization": "featurewatch.callbacks.class_model",
    "DeepDream": "featurewatch.callbacks.deep_dream",
    "DeadNeuronMonitor": "featurewatch.callbacks.dead_neurons",
    "DeadNeuronWarning": "featurewatch.callbacks.dead_neurons",
    "DeadNeuronError": "featurewatch.callbacks.dead_neurons",
    "AttributionMaps": "featurewatch.callbacks.attribution",
    "DatasetExamples": "featurewatch.callbacks.dataset_examples",
    "FeatureDrift": "featurewatch.callbacks.feature_drift",
    "TimeBudget": "featurewatch.callbacks.time_budget",
    # core
    "saliency": "featurewatch.core.attribution",
    "occlusion": "featurewatch.core.attribution",
    "grad_cam": "featurewatch.core.attribution",
    "cam": "featurewatch.core.attribution",
    "overlay": "featurewatch.core.attribution",
    "cka": "featurewatch.core.drift",
    "top_examples": "featurewatch.core.examples",
    "top_examples_multi": "featurewatch.core.examples",
    "project_detailed": "featurewatch.core.projection",
    "Projection": "featurewatch.core.projection",
    "TopExamples": "featurewatch.core.examples",
    "receptive_field": "featurewatch.core.receptive_field",
    "receptive_fields": "featurewatch.core.receptive_field",
    "project": "featurewatch.core.projection",
    "examples_grid": "featurewatch.core.drawing",
    "activation_grid": "featurewatch.core.inspect",
    "activation_maps": "featurewatch.core.inspect",
    "filter_grid": "featurewatch.core.inspect",
    "isolated": "featurewatch.core.hygiene",
    "list_layers": "featurewatch.core.layers",
    "resolve_layer": "featurewatch.core.layers",
    "visualize_channels": "featurewatch.core.render",
    "class_model_images": "featurewatch.core.render",
    "render": "featurewatch.core.render",
    "RenderResult": "featurewatch.core.render",
    "deep_dream": "featurewatch.core.deepdream",
    "ImageSpec": "featurewatch.core.param",
    "fit_image_stats": "featurewatch.core.fit_stats",
    "ImageStats": "featurewatch.core.fit_stats",
    "Objective": "featurewatch.core.objectives",
    "channel": "featurewatch.core.objectives",
    "neuron": "featurewatch.core.objectives",
    "layer_l2": "featurewatch.core.objectives",
    "class_logit": "featurewatch.core.objectives",
    "direction": "featurewatch.core.objectives",
    "diverse": "featurewatch.core.objectives",
    "diversity": "featurewatch.core.objectives",
    "interpolate": "featurewatch.core.objectives",
    "ChannelStatsRecorder": "featurewatch.core.stats",
    "ChannelSummary": "featurewatch.core.dead_rule",
    # loggers
    "Event": "featurewatch.loggers.base",
    "Sink": "featurewatch.loggers.base",
    "FilesSink": "featurewatch.loggers.files",
    "register_sink": "featurewatch.loggers.registry",
    "sinks_for": "featurewatch.loggers.registry",
}

__all__ = sorted(_EXPORTS)  # noqa: PLE0605 - the lazy-export table is the one list of names


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'featurewatch' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from featurewatch.callbacks.activation_grid import ActivationGrid
    from featurewatch.callbacks.attribution import AttributionMaps
    from featurewatch.callbacks.base import FeatureWatchCallback, FeatureWatchWarning
    from featurewatch.callbacks.channel_visualization import ChannelVisualization
    from featurewatch.callbacks.class_model import ClassModelVisualization
    from featurewatch.callbacks.dataset_examples import DatasetExamples
    from featurewatch.callbacks.dead_neurons import (
        DeadNeuronError,
        DeadNeuronMonitor,
        DeadNeuronWarning,
    )
    from featurewatch.callbacks.deep_dream import DeepDream
    from featurewatch.callbacks.feature_drift import FeatureDrift
    from featurewatch.callbacks.filter_weights import FilterWeights
    from featurewatch.callbacks.time_budget import TimeBudget
    from featurewatch.core.attribution import cam, grad_cam, occlusion, overlay, saliency
    from featurewatch.core.dead_rule import ChannelSummary
    from featurewatch.core.deepdream import deep_dream
    from featurewatch.core.drawing import examples_grid
    from featurewatch.core.drift import cka
    from featurewatch.core.examples import TopExamples, top_examples, top_examples_multi
    from featurewatch.core.fit_stats import ImageStats, fit_image_stats
    from featurewatch.core.hygiene import isolated
    from featurewatch.core.inspect import activation_grid, activation_maps, filter_grid
    from featurewatch.core.layers import list_layers, resolve_layer
    from featurewatch.core.objectives import (
        Objective,
        channel,
        class_logit,
        direction,
        diverse,
        diversity,
        interpolate,
        layer_l2,
        neuron,
    )
    from featurewatch.core.param import ImageSpec
    from featurewatch.core.projection import Projection, project, project_detailed
    from featurewatch.core.receptive_field import receptive_field, receptive_fields
    from featurewatch.core.render import (
        RenderResult,
        class_model_images,
        render,
        visualize_channels,
    )
    from featurewatch.core.stats import ChannelStatsRecorder
    from featurewatch.loggers.base import Event, Sink
    from featurewatch.loggers.files import FilesSink
    from featurewatch.loggers.registry import register_sink, sinks_for
