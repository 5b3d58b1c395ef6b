"""featurewatch: watch what a convolutional network learns while it trains.

Lightning callbacks (``featurewatch.callbacks``) schedule the work, a pure-torch core
(``featurewatch.core``) computes it, and logger adapters (``featurewatch.loggers``) send it to
TensorBoard, Weights & Biases, MLflow or plain files.
"""

from featurewatch.callbacks import ActivationGrid, FeatureWatchCallback, FeatureWatchWarning, FilterWeights
from featurewatch.core import (
    activation_grid,
    activation_maps,
    filter_grid,
    isolated,
    list_layers,
    resolve_layer,
)

__version__ = "0.1.0"

__all__ = [
    "ActivationGrid",
    "FeatureWatchCallback",
    "FeatureWatchWarning",
    "FilterWeights",
    "activation_grid",
    "activation_maps",
    "filter_grid",
    "isolated",
    "list_layers",
    "resolve_layer",
]
