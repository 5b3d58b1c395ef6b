"""Pure-torch core of featurewatch: no Lightning, TensorBoard or W&B imports here."""

from featurewatch.core.deepdream import deep_dream
from featurewatch.core.fit_stats import ImageStats, fit_image_stats
from featurewatch.core.hygiene import in_isolation, isolated, model_device_dtype, outside_inference
from featurewatch.core.images import colorize, grid, load_images, scale_each, to_uint8
from featurewatch.core.inspect import activation_grid, activation_maps, filter_grid, filter_images
from featurewatch.core.layers import LayerRef, StopForward, capture, list_layers, parse_layer, resolve_layer
from featurewatch.core.objectives import (
    OUTPUT,
    Objective,
    channel,
    class_logit,
    direction,
    interpolate,
    layer_l2,
    neuron,
)
from featurewatch.core.param import FourierImage, ImageParam, ImageSpec, PixelImage, color_matrix
from featurewatch.core.render import (
    RenderResult,
    class_model_images,
    infer_image_channels,
    objective_forward,
    render,
    total_variation,
    unit_seed,
    visualize_channels,
)
from featurewatch.core.transforms import (
    compose,
    jitter,
    pad,
    random_affine,
    random_rotate,
    random_scale,
    standard_transforms,
)
from featurewatch.core.stats import (
    RECTIFIER_TYPES,
    ChannelStats,
    ChannelStatsRecorder,
    ChannelSummary,
    default_dead_layers,
)

__all__ = [
    "ChannelStats",
    "ChannelStatsRecorder",
    "ChannelSummary",
    "FourierImage",
    "ImageParam",
    "ImageSpec",
    "ImageStats",
    "LayerRef",
    "OUTPUT",
    "Objective",
    "PixelImage",
    "RECTIFIER_TYPES",
    "RenderResult",
    "StopForward",
    "activation_grid",
    "activation_maps",
    "capture",
    "channel",
    "class_logit",
    "class_model_images",
    "color_matrix",
    "colorize",
    "compose",
    "deep_dream",
    "default_dead_layers",
    "direction",
    "filter_grid",
    "filter_images",
    "fit_image_stats",
    "grid",
    "in_isolation",
    "infer_image_channels",
    "interpolate",
    "isolated",
    "jitter",
    "layer_l2",
    "list_layers",
    "load_images",
    "model_device_dtype",
    "neuron",
    "objective_forward",
    "outside_inference",
    "pad",
    "parse_layer",
    "random_affine",
    "random_rotate",
    "random_scale",
    "render",
    "resolve_layer",
    "scale_each",
    "standard_transforms",
    "to_uint8",
    "total_variation",
    "unit_seed",
    "visualize_channels",
]
