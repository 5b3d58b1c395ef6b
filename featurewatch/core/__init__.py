"""Pure-torch core of featurewatch: no Lightning, TensorBoard or W&B imports here."""

from featurewatch.core.hygiene import in_isolation, isolated, model_device_dtype, outside_inference
from featurewatch.core.images import colorize, grid, load_images, scale_each, to_uint8
from featurewatch.core.inspect import activation_grid, activation_maps, filter_grid, filter_images
from featurewatch.core.layers import LayerRef, StopForward, capture, list_layers, parse_layer, resolve_layer
from featurewatch.core.stats import (
    RECTIFIER_TYPES,
    ChannelStats,
    ChannelStatsRecorder,
    ChannelSummary,
    default_dead_layers,
)

__all__ = [
    "RECTIFIER_TYPES",
    "ChannelStats",
    "ChannelStatsRecorder",
    "ChannelSummary",
    "LayerRef",
    "StopForward",
    "activation_grid",
    "activation_maps",
    "capture",
    "colorize",
    "default_dead_layers",
    "filter_grid",
    "filter_images",
    "grid",
    "in_isolation",
    "isolated",
    "list_layers",
    "load_images",
    "model_device_dtype",
    "outside_inference",
    "parse_layer",
    "resolve_layer",
    "scale_each",
    "to_uint8",
]
