"""Lightning callbacks: each schedules work, calls the core and hands an Event to the sinks."""

from featurewatch.callbacks.activation_grid import ActivationGrid
from featurewatch.callbacks.attribution import AttributionMaps
from featurewatch.callbacks.base import (
    FeatureWatchCallback,
    FeatureWatchWarning,
    Schedule,
    batch_input,
)
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

__all__ = [
    "ActivationGrid",
    "AttributionMaps",
    "ChannelVisualization",
    "ClassModelVisualization",
    "DatasetExamples",
    "DeadNeuronError",
    "DeadNeuronMonitor",
    "DeadNeuronWarning",
    "DeepDream",
    "FeatureDrift",
    "FeatureWatchCallback",
    "FeatureWatchWarning",
    "FilterWeights",
    "Schedule",
    "TimeBudget",
    "batch_input",
]
