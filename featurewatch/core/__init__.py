"""Pure-torch core of featurewatch: no Lightning, TensorBoard or W&B imports here."""

from featurewatch.core.attribution import cam, grad_cam, occlusion, overlay, saliency
from featurewatch.core.calls import layer_call_counts
from featurewatch.core.dead_rule import ChannelSummary, ChannelVerdict, judge_channels
from featurewatch.core.deepdream import deep_dream
from featurewatch.core.drawing import examples_grid
from featurewatch.core.examples import TopExamples, top_examples, top_examples_multi
from featurewatch.core.fit_stats import ImageStats, fit_image_stats
from featurewatch.core.hygiene import in_isolation, isolated, model_device_dtype, outside_inference
from featurewatch.core.images import colorize, grid, load_images, scale_each, to_uint8
from featurewatch.core.inspect import activation_grid, activation_maps, filter_grid, filter_images
from featurewatch.core.layers import (
    LayerRef,
    StopForward,
    capture,
    list_layers,
    parse_layer,
    resolve_layer,
)
from featurewatch.core.objectives import (
    OUTPUT,
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
from featurewatch.core.param import FourierImage, ImageParam, ImageSpec, PixelImage, color_matrix
from featurewatch.core.projection import RULE_MODULE_TYPES, Projection, project, project_detailed
from featurewatch.core.receptive_field import receptive_field, receptive_fields
from featurewatch.core.render import (
    RenderResult,
    class_model_images,
    infer_image_channels,
    objective_forward,
    render,
    total_variation,
    unit_objective,
    unit_seed,
    visualize_channels,
)
from featurewatch.core.stats import (
    RECTIFIER_TYPES,
    ChannelStats,
    ChannelStatsRecorder,
    default_dead_layers,
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

__all__ = [
    "OUTPUT",
    "RECTIFIER_TYPES",
    "RULE_MODULE_TYPES",
    "ChannelStats",
    "ChannelStatsRecorder",
    "ChannelSummary",
    "ChannelVerdict",
    "FourierImage",
    "ImageParam",
    "ImageSpec",
    "ImageStats",
    "LayerRef",
    "Objective",
    "PixelImage",
    "Projection",
    "RenderResult",
    "StopForward",
    "TopExamples",
    "activation_grid",
    "activation_maps",
    "cam",
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
    "diverse",
    "diversity",
    "examples_grid",
    "filter_grid",
    "filter_images",
    "fit_image_stats",
    "grad_cam",
    "grid",
    "in_isolation",
    "infer_image_channels",
    "interpolate",
    "isolated",
    "jitter",
    "judge_channels",
    "layer_call_counts",
    "layer_l2",
    "list_layers",
    "load_images",
    "model_device_dtype",
    "neuron",
    "objective_forward",
    "occlusion",
    "outside_inference",
    "overlay",
    "pad",
    "parse_layer",
    "project",
    "project_detailed",
    "random_affine",
    "random_rotate",
    "random_scale",
    "receptive_field",
    "receptive_fields",
    "render",
    "resolve_layer",
    "saliency",
    "scale_each",
    "standard_transforms",
    "to_uint8",
    "top_examples",
    "top_examples_multi",
    "total_variation",
    "unit_objective",
    "unit_seed",
    "visualize_channels",
]
