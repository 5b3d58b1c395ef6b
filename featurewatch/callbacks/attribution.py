"""AttributionMaps: where the network looks in fixed probe inputs (images, 1-D signals, feature
vectors), by several methods, as it trains."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from featurewatch.callbacks._probe import Normalize, ProbeImages
from featurewatch.callbacks.base import FeatureWatchCallback, check_layer, check_number
from featurewatch.core.advice import layer_advice, uniform_maps
from featurewatch.core.attribution import (
    cam,
    feature_map,
    grad_cam,
    occlusion,
    occlusion_masks,
    overlay,
    saliency,
)
from featurewatch.core.cam_layers import (
    check_cam_layer,
    default_gradcam_layer,
    find_cam_layer,
    last_linear_layer,
)
from featurewatch.core.hygiene import model_device_dtype
from featurewatch.core.images import (
    grid,
    nonfinite_counts,
    nonfinite_note,
    scale_each,
    to_display_channels,
)
from featurewatch.core.inspect import activation_maps
from featurewatch.core.labels import with_colour_bar
from featurewatch.core.layers import parse_layer, resolve_layer
from featurewatch.core.outputs import check_output_key, class_index, class_scores
from featurewatch.core.signal_attribution import (
    BAR_UNIT,
    feature_attribution_bars,
    signal_attribution,
)
from featurewatch.core.validation import check_int, is_int, out_of_range_message
from featurewatch.loggers import Event

__all__ = ["ATTRIBUTION_METHODS", "AttributionMaps"]

#: Method names accepted by :class:`AttributionMaps`, with what the caption calls them.
ATTRIBUTION_METHODS: dict[str, str] = {
    "saliency": "gradient saliency",
    "smoothgrad": "SmoothGrad",
    "occlusion": "occlusion sensitivity",
    "gradcam": "Grad-CAM",
    "cam": "CAM",
}


def _check_methods(methods: Any) -> list[str]:
    """``methods`` as a list of known method names without repeats (a single name is a list)."""
    if isinstance(methods, str):
        methods = [methods]
    if isinstance(methods, Sequence) and not methods:
        raise ValueError(f"`methods` must name at least one of {', '.join(ATTRIBUTION_METHODS)}")
    if not isinstance(methods, Sequence) or not all(isinstance(m, str) for m in methods):
        raise TypeError(f"`methods` must be a method name or a list of them, got {methods!r}")
    unknown = [m for m in methods if m not in ATTRIBUTION_METHODS]
    if unknown:
        raise ValueError(
            f"unknown attribution method {unknown[0]!r} in `methods`; valid: "
            + ", ".join(repr(m) for m in ATTRIBUTION_METHODS)
        )
    return list(dict.fromkeys(methods))


def _check_window(name: str, value: Any) -> None:
    """An occlusion ``window`` or ``stride``: ``None``, a positive int, or a pair ``(h, w)``."""
    pair = [value, value] if isinstance(value, int) else value
    if value is not None and (
        not isinstance(pair, Sequence)
        or len(pair) != 2
        or any(not is_int(v) or v < 1 for v in pair)
    ):
        raise ValueError(
            f"`{name}` must be a positive int, a pair (h, w) of them, or None, got {value!r}"
        )


def _check_names(names: Any) -> list[str] | None:
    """``feature_names``: ``None`` or a non-empty sequence of strings (not one string)."""
    if names is None:
        return None
    if isinstance(names, str) or not isinstance(names, Sequence) or not names:
        raise TypeError(f"`feature_names` must be a non-empty list of strings, got {names!r}")
    if not all(isinstance(v, str) for v in names):
        raise TypeError(f"`feature_names` must hold strings, got {list(names)!r}")
    return list(names)


#: What each input rank is, in words, and the methods that apply to it.
_KINDS = {2: "feature vectors (N, F)", 3: "1-D signals (N, C, L)", 4: "images (N, C, H, W)"}


def _check_cmap(cmap: Any) -> None:
    import matplotlib

    if not isinstance(cmap, str) or cmap not in matplotlib.colormaps:
        raise ValueError(
            f"`cmap` must be a matplotlib colormap name such as 'jet' or 'inferno', got {cmap!r}"
        )


class AttributionMaps(FeatureWatchCallback):
    """Log attribution maps for a few fixed probe inputs: which pixels (time steps, features)
    drive the class score.

    Watching the same images over training shows whether the network comes to rely on the object
    (a digit's strokes) or on something else (a corner, the background, a watermark) long before
    accuracy tells. Each method answers "where" differently (see
    :mod:`featurewatch.core.attribution`):

    * ``"saliency"``: ``|d logit / d pixel|`` (Simonyan et al., 2013): sharp, noisy, local.
    * ``"smoothgrad"``: saliency averaged over noisy copies (Smilkov et al., 2017).
    * ``"occlusion"``: drop of the class's softmax probability (or logit, ``occlusion_output``) when
      a window is covered by ``baseline`` (Zeiler & Fergus, 2014): model-agnostic, one forward pass
      per window.
    * ``"gradcam"``: Grad-CAM (Selvaraju et al., 2017) at ``layer``: coarse, class-discriminative.
    * ``"cam"``: CAM (Zhou et al., 2016), for networks ending in global average pooling + a linear
      classifier; no backward pass.

    The inputs decide the picture (at the first batch, from their rank): ``(N, C, H, W)`` images
    get heatmaps over the image; ``(N, C, L)`` signals (a ``Conv1d`` net) get their waveform with
    the map below it (:func:`~featurewatch.core.signal_attribution.signal_attribution`; occlusion
    covers windows of time steps, Grad-CAM reads a 1-D layer); ``(N, F)`` feature vectors (a
    tabular model) get horizontal bars per feature
    (:func:`~featurewatch.core.signal_attribution.feature_attribution_bars`; saliency, SmoothGrad
    and occlusion only: Grad-CAM and CAM need positions). CAM needs a 2-D feature map. Grad-CAM on
    a vision transformer's token layer (``layer="net.encoder.layers.encoder_layer_0"``) lays the
    patch tokens on their grid (``grid=``) and is drawn like a conv layer's.

    Args:
        methods: one or several of ``"saliency"``, ``"smoothgrad"``, ``"occlusion"``, ``"gradcam"``,
            ``"cam"``.
        probe: the probe inputs: a ``(N, C, H, W)`` tensor (already normalized like training
            inputs; a 3-D tensor is one image, or ``N`` signals for a model whose inputs are
            ``(N, C, L)``; ``(N, F)`` rows for a tabular model), a path (image file, folder or
            ``.pt``; resized to the training input size and normalized with ``normalize``), or
            ``None`` for the first ``num_images`` validation inputs (training inputs without
            validation), fixed for the whole run.
        num_images: number of probe images (from a dataloader or a folder).
        target: the class each map explains: ``"predicted"`` (the model's current top class for
            each image, re-read at every call), one class index for every image, or one per image
            (ints, NumPy integers or an integer tensor).
        layer: the layer of *both* Grad-CAM and CAM, as in ``model.named_modules()`` (``"name@k"``
            for a reused module); checked against the model at setup. CAM is only defined on the
            feature map that is globally average-pooled into ``classifier``, so with ``"cam"`` among
            the methods this must be that map; for Grad-CAM at another layer as well as CAM, use
            two ``AttributionMaps`` instances. Default (recommended): the map that is pooled into
            the classifier, for both; for Grad-CAM on a network without such a head, the last
            module, in forward order, with an ``(N, C, H, W)`` output (``(N, C, l)`` on a 1-D
            net). The default is found by running one probe image before the first training step.
            A token layer ``(N, T, D)`` of a vision transformer on images is laid on its patch
            grid; at the last block only the class token reaches the head (zero maps): name an
            earlier block or the last block's ``ln_1``.
        grid: ``(rows, columns)`` of a token layer's patch grid (default: the largest square that
            fits the tokens; the tokens before the last ``rows * columns``, the class token, are
            dropped).
        classifier: the ``nn.Linear`` classifier (default: the last one registered).
        window, stride: occlusion window and step (int or ``(h, w)``; default a quarter of the image
            and half the window; on signals time steps, default a quarter of the signal and half
            the window; on feature vectors adjacent features, default 1, each on its own).
        baseline: what occlusion covers a window with, in normalized input units (``0.0`` is the
            data mean for standardized inputs).
        occlusion_output: what occlusion measures the drop of: ``"probability"`` (softmax, the
            quantity of Zeiler & Fergus) or ``"logit"`` (better for confident networks, whose
            probabilities saturate and barely move when a window is covered).
        smooth_samples, noise: SmoothGrad copies per image and noise level (fraction of each image's
            value range).
        seed: seed of SmoothGrad's private generator (the same noise at every call).
        batch_size: the most images per pass for occlusion and SmoothGrad; fewer for large
            images (:mod:`~featurewatch.core.batching`).
        cmap: matplotlib colormap of the heatmaps.
        alpha: heatmap opacity over the image.
        min_size: tiles are enlarged (nearest neighbour, display only) to at least this size.
        feature_names: names of the ``F`` features of a tabular model, for the bars (default
            ``"feature k"``); checked against the inputs at the first batch.
        max_features: bars per probe row at most (the features with the largest ``|value|``).
        normalize: ``(mean, std)`` applied to probe images loaded from a path.
        input_key: where the images are in a batch (index for tuples, key for dicts).
        output_key: where the logits are in the model's output: ``None`` (``forward`` returns
            them), an index (``0`` for a model returning ``(logits, features)``), a dict key
            (``"logits"``) or a function ``output -> logits``. Checked with one forward pass before
            the first training step.
        **schedule: ``every_n_epochs``, ``every_n_train_steps``, ``at_start``, ``at_end``,
            ``strict``: see :class:`~featurewatch.callbacks.base.FeatureWatchCallback`. A method
            that fails is reported (warning + ``.../<method>/error``) and the other methods are
            still logged; ``strict=True`` re-raises.

    Logged keys:
        - ``featurewatch/attribution/<method>``: image, the probe images (top row) with the
          method's heatmap over each (bottom row), one map per image scaled to its own maximum
          (only positive evidence is coloured), so colours do not compare across images; at the
          right a colour bar of ``cmap`` from 0 to 1, "fraction of map's max". The
          caption gives, per image, the target class, the predicted class and its probability,
          and the map's maximum absolute value with its unit (e.g. "probability drop"), which
          does compare across images and steps. Non-finite map values (NaN, Inf) are magenta
          and counted per image in the caption. A map that is uniform (no location) is flagged
          with what to do, checked on the model: a larger input only when the layer's map is
          1 x 1 because the input is small, else another ``layer=``. For signals: per probe
          signal its waveform (a line per input channel) above the map, drawn as a curve over a
          ``cmap`` band in "fraction of map's max" on the same time axis, with a colour bar; for
          feature vectors: per probe row, the ``max_features`` largest ``|values|`` as bars in
          the map's unit (orange for the target, blue against). The captions are the same.
        - ``featurewatch/attribution/<method>/error``: text, only when that method failed at this
          step (message and traceback).
        - ``featurewatch/attribution/seconds``: wall time of the call.

    Example:
        >>> AttributionMaps(methods=("saliency", "gradcam"), num_images=8, layer="net.layer4")
    """

    default_name = "attribution"

    def __init__(
        self,
        methods: str | Sequence[str] = ("saliency", "occlusion", "gradcam"),
        probe: torch.Tensor | str | None = None,
        num_images: int = 4,
        *,
        target: str | int | Sequence[int] = "predicted",
        layer: str | None = None,
        classifier: str | None = None,
        window: int | Sequence[int] | None = None,
        stride: int | Sequence[int] | None = None,
        baseline: float = 0.0,
        occlusion_output: str = "probability",
        smooth_samples: int = 16,
        noise: float = 0.15,
        seed: int = 0,
        batch_size: int = 64,
        cmap: str = "jet",
        alpha: float = 0.5,
        min_size: int = 64,
        grid: int | Sequence[int] | None = None,
        feature_names: Sequence[str] | None = None,
        max_features: int = 16,
        normalize: Normalize | None = None,
        input_key: int | str = 0,
        output_key: int | str | Callable[[Any], torch.Tensor] | None = None,
        **schedule: Any,
    ) -> None:
        super().__init__(**schedule)
        self.methods = _check_methods(methods)
        self._probe = ProbeImages(probe, num_images, normalize)
        self.target = self._check_target(target, self._expected_images(num_images))
        check_layer("layer", layer, allow_none=True)
        check_layer("classifier", classifier, allow_none=True)
        _check_window("window", window)
        _check_window("stride", stride)
        _check_window("grid", grid)
        if occlusion_output not in ("probability", "logit"):
            raise ValueError(
                f"`occlusion_output` must be 'probability' or 'logit', got {occlusion_output!r}"
            )
        check_output_key(output_key)
        for name, count in (
            ("smooth_samples", smooth_samples),
            ("batch_size", batch_size),
            ("min_size", min_size),
            ("max_features", max_features),
        ):
            check_int(name, count)
        if not is_int(seed):
            raise TypeError(f"`seed` must be an int, got {seed!r}")
        _check_cmap(cmap)
        self.layer = layer
        self.classifier = classifier
        self.window = window
        self.stride = stride
        self.baseline = check_number("baseline", baseline)  # in normalized input units
        self.occlusion_output = occlusion_output
        self.output_key = output_key
        self.smooth_samples = smooth_samples
        self.noise = check_number("noise", noise, 0)  # a fraction of each image's value range
        self.seed = seed
        self.batch_size = batch_size
        self.cmap = cmap
        self.alpha = check_number("alpha", alpha, 0, 1)
        self.min_size = min_size
        self.grid = grid
        self.feature_names = _check_names(feature_names)
        self.max_features = max_features
        self.input_key = input_key
        self._cam_layer: str | None = None
        self._gradcam_layer: str | None = layer
        self._advice: dict[str, str] = {}  # why a layer's maps are uniform (probed once per layer)
        self._tokens = False  # the Grad-CAM layer outputs (N, T, D) tokens of an image model

    # ------------------------------------------------------------------ argument helpers
    def _expected_images(self, num_images: int) -> int | None:
        """How many probe images there will be, when known before training (None for a path)."""
        if self._probe.signals is not None:  # one image or N signals: known at the first batch
            return None
        if self._probe.fixed is not None:
            return int(self._probe.fixed.shape[0])
        return None if self._probe.source is not None else num_images

    @staticmethod
    def _check_target(target: Any, images: int | None) -> str | int | list[int]:
        """``"predicted"``, one class index, or a list of them (plain ints: YAML and checkpoint
        friendly); NumPy integers and integer tensors are converted like the core does."""
        if isinstance(target, str):
            if target == "predicted":
                return "predicted"
            raise ValueError(  # a wrong word, e.g. "label": a bad value, not a bad type
                f"`target` must be 'predicted', a class index, or one class index per probe image, "
                f"got {target!r} (probe images have no labels)"
            )
        if isinstance(target, torch.Tensor):
            if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
                raise TypeError(
                    f"`target` tensor must hold integer class indices, got dtype {target.dtype}"
                )
            if target.dim() > 1:
                raise ValueError(
                    f"`target` tensor must be 0-d or (N,), got shape {tuple(target.shape)}"
                )
            target = target.tolist()
        index = class_index(target)
        if index is not None:
            if index < 0:
                raise ValueError(f"`target` class must be >= 0, got {index}")
            return index
        if not (isinstance(target, Sequence) or getattr(target, "ndim", 0) >= 1):
            raise TypeError(
                f"`target` must be 'predicted', a class index, or one class index per probe image, "
                f"got {type(target).__name__}"
            )
        raw = list(target)
        indices = [class_index(v) for v in raw]
        values = [v for v in indices if v is not None and v >= 0]
        if len(values) != len(raw):
            raise ValueError(f"`target` must hold non-negative int class indices, got {raw!r}")
        if images is not None and len(values) != images:
            raise ValueError(
                f"`target` gives {len(values)} classes for {images} probe images; give one per "
                "image"
            )
        return values

    def state_key_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"methods": self.methods, "layer": self.layer}
        if self.target != "predicted":  # the default keeps the key of earlier versions
            fields["target"] = self.target
        return fields

    def _resolve_gradcam_layer(self, pl_module: pl.LightningModule, x: torch.Tensor) -> str:
        if self._gradcam_layer is None:
            self._gradcam_layer = default_gradcam_layer(pl_module, x, self.classifier)
        return self._gradcam_layer

    # ------------------------------------------------------------------ checks
    def check_model(self, pl_module: pl.LightningModule) -> None:
        if self.layer is not None:
            resolve_layer(pl_module, self.layer)
        if "cam" in self.methods or ("gradcam" in self.methods and self.classifier is not None):
            name = self.classifier if self.classifier is not None else last_linear_layer(pl_module)
            linear = resolve_layer(pl_module, name)
            if not isinstance(linear, torch.nn.Linear):
                raise TypeError(
                    f"AttributionMaps: `classifier` {name!r} must name an nn.Linear, got "
                    f"{type(linear).__name__}"
                )
        if "cam" in self.methods and self.layer is not None:
            module = resolve_layer(pl_module, self.layer)
            channels = getattr(module, "out_channels", getattr(module, "num_features", None))
            if isinstance(channels, int) and channels != linear.in_features:
                raise ValueError(
                    f"AttributionMaps: CAM at layer {self.layer!r} is undefined: it has {channels} "
                    f"channels but classifier {name!r} takes {linear.in_features} features; use "
                    "method 'gradcam' (grad_cam) for that layer, or name the pooled feature map "
                    "(`layer=` sets the layer of both Grad-CAM and CAM; leave it unset, or use "
                    "two AttributionMaps instances)"
                )

    def _check_rank(self, x: torch.Tensor) -> None:
        """The methods and arguments that apply to inputs of ``x``'s rank."""
        if x.dim() not in _KINDS:
            raise ValueError(
                "AttributionMaps draws maps of images (N, C, H, W), 1-D signals (N, C, L) or "
                f"feature vectors (N, F), but this model's inputs have shape {tuple(x.shape)}"
            )
        kind = _KINDS[x.dim()]
        refused = [m for m in self.methods if m == "cam" or (m == "gradcam" and x.dim() == 2)]
        if x.dim() < 4 and refused:
            why = (
                "Grad-CAM and CAM weight the positions of a feature map, and feature vectors have "
                "none"
                if x.dim() == 2
                else "CAM is defined on a 2-D feature map pooled into the classifier"
            )
            usable = [m for m in ATTRIBUTION_METHODS if m not in ("cam", "gradcam")]
            usable += ["gradcam"] if x.dim() == 3 else []
            raise ValueError(
                f"AttributionMaps: method {refused[0]!r} does not apply to this model's inputs, "
                f"{kind}, shape {tuple(x.shape)}: {why}; use " + ", ".join(repr(m) for m in usable)
            )
        if self.feature_names is not None:
            if x.dim() != 2:
                raise ValueError(
                    "AttributionMaps: `feature_names` names the features of (N, F) inputs, but "
                    f"this model's inputs are {kind}, shape {tuple(x.shape)}; leave it unset"
                )
            if len(self.feature_names) != x.shape[1]:
                raise ValueError(
                    f"AttributionMaps: `feature_names` gives {len(self.feature_names)} names for "
                    f"{x.shape[1]} features (inputs of shape {tuple(x.shape)}); give one each"
                )

    def check_input(self, pl_module: pl.LightningModule, x: torch.Tensor) -> None:
        self._check_rank(x)
        self._probe.resolve_path(x)
        if self._probe.fixed is not None and isinstance(self.target, list):
            self._check_target(self.target, int(self._probe.fixed.shape[0]))
        device, dtype = model_device_dtype(pl_module)
        sample = (self._probe.fixed if self._probe.fixed is not None else x)[:1].to(
            device=device, dtype=dtype
        )
        with torch.no_grad():
            out = pl_module(sample)
        try:
            classes = int(class_scores(out, self.output_key).shape[1])
        except ValueError as err:
            raise ValueError(f"AttributionMaps: {err}") from err
        targets = (
            [self.target]
            if isinstance(self.target, int)
            else self.target
            if isinstance(self.target, list)
            else []
        )
        if targets and max(targets) >= classes:
            raise ValueError(
                "AttributionMaps: "
                + out_of_range_message(max(targets), classes, kind="target class")
            )
        if "gradcam" in self.methods:
            try:
                layer = self._resolve_gradcam_layer(pl_module, sample)
            except ValueError as err:
                raise ValueError(f"AttributionMaps: {err}") from err
            try:
                fmap = activation_maps(pl_module, sample, [layer])[str(parse_layer(layer))]
            except KeyError:
                raise ValueError(
                    f"AttributionMaps: Grad-CAM layer {layer!r} is not called in the eval-mode "
                    f"forward pass of {type(pl_module).__name__} (an auxiliary head?); pass "
                    "`layer=` naming a module the forward pass calls, or leave it unset for the "
                    "feature map pooled into the classifier"
                ) from None
            if fmap.dim() not in (3, 4):
                raise ValueError(
                    "AttributionMaps: Grad-CAM needs a layer with positions - (N, C, H, W) or "
                    f"(N, C, L) maps, or (N, T, D) tokens - but {layer!r} outputs shape "
                    f"{tuple(fmap.shape)}; pass `layer=` naming a conv layer"
                )
            try:  # tokens on their patch grid: does `grid` (or the inferred square) fit them?
                feature_map(pl_module, layer, fmap, sample, _grid_pair(self.grid))
            except ValueError as err:
                raise ValueError(f"AttributionMaps: {err}") from err
            self._tokens = fmap.dim() == 3 and sample.dim() == 4
        if "occlusion" in self.methods:  # window vs input size: the check occlusion() makes later
            occlusion_masks(sample.shape, self.window, self.stride)
        if "cam" in self.methods:
            try:
                if self.layer is None:
                    self._cam_layer = find_cam_layer(pl_module, sample, self.classifier)
                else:
                    check_cam_layer(pl_module, sample, self.layer, self.classifier)
                    self._cam_layer = self.layer
            except ValueError as err:
                raise ValueError(f"AttributionMaps: {err}") from err

    def observe_batch(self, batch: Any, split: str) -> None:
        if self._probe.fixed is None and self._probe.source is None:
            self._probe.observe(self.input_from_batch(batch), split)

    # ------------------------------------------------------------------ work
    def _maps(
        self, method: str, pl_module: pl.LightningModule, x: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, str, str]:
        """The method's ``(N, H, W)`` maps, a caption fragment describing the settings, and the
        unit of the map's values."""
        key = self.output_key
        if method == "saliency":
            return (
                saliency(pl_module, x, t, output_key=key),
                "max over channels of |d logit / d pixel|",
                "logit per input unit",
            )
        if method == "smoothgrad":
            gen = torch.Generator().manual_seed(self.seed)
            maps = saliency(
                pl_module,
                x,
                t,
                smooth=self.smooth_samples,
                noise=self.noise,
                generator=gen,
                batch_size=self.batch_size,
                output_key=key,
            )
            return (
                maps,
                f"{self.smooth_samples} noisy copies, noise {self.noise:g} of the value range",
                "logit per input unit",
            )
        if method == "occlusion":
            maps = occlusion(
                pl_module,
                x,
                t,
                window=self.window,
                stride=self.stride,
                baseline=self.baseline,
                batch_size=self.batch_size,
                output=self.occlusion_output,  # type: ignore[arg-type]
                output_key=key,
            )
            quantity = "softmax probability" if self.occlusion_output == "probability" else "logit"
            return (
                maps,
                f"drop of the {quantity} when a window is set to {self.baseline:g}",
                f"{self.occlusion_output} drop",
            )
        if method == "gradcam":
            layer = self._resolve_gradcam_layer(pl_module, x)
            maps = grad_cam(pl_module, x, t, layer, output_key=key, grid=self.grid)
            return maps, f"layer {layer}", "logit"
        if self._cam_layer is None:
            self._cam_layer = find_cam_layer(pl_module, x, self.classifier)
        return (
            cam(pl_module, x, t, self._cam_layer, self.classifier),
            f"layer {self._cam_layer}",
            "logit",
        )

    def visualize(self, trainer: pl.Trainer, pl_module: pl.LightningModule, event: Event) -> None:
        probe = self._probe.get()
        n = probe.shape[0]
        device, dtype = model_device_dtype(pl_module)
        x = probe.to(device=device, dtype=dtype)
        with torch.no_grad():
            probs = class_scores(pl_module(x), self.output_key).float().softmax(dim=1).cpu()
        top_p, predicted = probs.max(dim=1)
        if self.target == "predicted":
            t = predicted.clone()
        else:
            target: int | list[int] = self.target  # type: ignore[assignment] # not "predicted"
            values = [target] * n if isinstance(target, int) else list(target)
            if len(values) != n:
                raise ValueError(
                    f"`target` gives {len(values)} classes for {n} probe images; give one per image"
                )
            t = torch.tensor(values, dtype=torch.long)
        labels = [
            f"#{i}: target {int(t[i])}, predicted {int(predicted[i])} (p={float(top_p[i]):.2f})"
            for i in range(n)
        ]
        for i, method in enumerate(self.methods, 1):
            self.progress(f"{method} ({i}/{len(self.methods)})")
            try:
                maps, how, unit = self._maps(method, pl_module, x, t.to(device))
                heading = f"{ATTRIBUTION_METHODS[method]} ({how}) · epoch {event.epoch} · step "
                picture, layout = self._picture(
                    probe.float(), maps.float().cpu(), labels, f"{heading}{event.step}", unit
                )
            except Exception as err:  # noqa: BLE001 - reported; re-raised if strict
                # one failing method (say occlusion running out of memory) must not cost the others
                self.report_failure(event, method, f"method {method!r}", err)
                continue
            event.add_image(
                f"featurewatch/{self.name}/{method}",
                picture,
                caption=(
                    f"epoch {event.epoch}, step {event.step}: {ATTRIBUTION_METHODS[method]} "
                    f"({how}); {n} {layout}; {', '.join(labels)}; "
                    f"{_scale_note(maps, unit)}"
                    + nonfinite_note(nonfinite_counts(maps), maps[0].numel(), "map")
                    + _empty_note(maps)
                    + self._uniform_caption(method, pl_module, x, maps)
                    + self._token_note(method, maps)
                ),
            )

    def _picture(
        self, probe: torch.Tensor, maps: torch.Tensor, labels: list[str], heading: str, unit: str
    ) -> tuple[torch.Tensor, str]:
        """The ``(3, H, W)`` picture of one method's maps and the caption's words for its layout."""
        if probe.dim() == 3:
            peaks = maps.abs().nan_to_num(0.0).amax(1)
            titles = [
                f"{label}\nmax |map| {float(v):.3g} {unit}"
                + ("" if bool((m > 0).any()) else " (no positive evidence)")
                for label, v, m in zip(labels, peaks, maps)
            ]
            image = signal_attribution(probe, maps, titles=titles, title=heading, cmap=self.cmap)
            return image, (
                "probe signals: each one's waveform (top) and its map below it (a curve over a "
                f"{self.cmap} band, in fraction of the map's max, positive evidence only)"
            )
        if probe.dim() == 2:
            image = feature_attribution_bars(
                probe,
                maps,
                unit=unit,
                feature_names=self.feature_names,
                max_features=self.max_features,
                titles=labels,
                title=heading,
            )
            shown = min(self.max_features, probe.shape[1])
            return image, (
                f"probe rows: per row the {shown} of {probe.shape[1]} features with the largest "
                f"|value| as bars in {unit} (orange: for the target, blue: against)"
            )
        shown = to_display_channels(scale_each(probe))
        shown = shown.expand(-1, 3, -1, -1) if shown.shape[1] == 1 else shown
        heat = overlay(probe, maps, cmap=self.cmap, alpha=self.alpha)
        tiles = torch.cat([shown, heat])
        h, w = tiles.shape[-2:]
        factor = max(1, -(-self.min_size // max(h, w)))
        if factor > 1:
            tiles = F.interpolate(tiles, scale_factor=factor, mode="nearest")
        picture = grid(tiles, nrow=probe.shape[0], padding=2, pad_value=1.0)
        return with_colour_bar(picture, self.cmap, 0.0, 1.0, BAR_UNIT), (
            f"probe images (top) and the map over each (bottom, {self.cmap}, scaled per image, "
            "positive evidence only)"
        )

    def _token_note(self, method: str, maps: torch.Tensor) -> str:
        """Caption note for all-zero Grad-CAM maps of a transformer's token layer."""
        if method != "gradcam" or not self._tokens or bool(maps.ne(0).any()):
            return ""
        return (
            f"; Grad-CAM at token layer {self._gradcam_layer!r} is zero everywhere: the patch "
            "tokens get no gradient there (after a transformer's last block only the class token "
            "reaches the head); pass `layer=` naming an earlier block or the last block's ln_1"
        )

    def _uniform_caption(
        self, method: str, pl_module: pl.LightningModule, x: torch.Tensor, maps: torch.Tensor
    ) -> str:
        """Caption note for uniform maps, with advice that was checked on the model, not guessed:
        "use a larger input" only when the layer's map is 1 x 1 because the input is small."""
        uniform = uniform_maps(maps)
        if not uniform:
            return ""
        layer = {"gradcam": self._gradcam_layer, "cam": self._cam_layer}.get(method)
        if layer is None:  # saliency, SmoothGrad, occlusion: no layer to blame
            advice = "the class score responds to every position alike"
        else:
            if layer not in self._advice:
                try:
                    self._advice[layer] = layer_advice(pl_module, x[:1], layer, self.classifier)
                except Exception:  # noqa: BLE001 - advice in a caption must not cost the image
                    self._advice[layer] = "pass `layer=` naming a layer with a larger feature map"
            advice = self._advice[layer]
        return _uniform_note(uniform, advice)

    def extra_state(self) -> dict[str, Any]:
        return self._probe.state()

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self._probe.load_state(state)


def _scale_note(maps: torch.Tensor, unit: str) -> str:
    """Caption fragment with each map's maximum absolute value: the tiles are scaled per image,
    so a drop of 2e-5 is as red as one of 0.9; these numbers are what compares across images."""
    peaks = maps.detach().float().abs().flatten(1).amax(1).cpu()
    values = ", ".join(f"#{i} {float(v):.3g}" for i, v in enumerate(peaks))
    return f"max |map| per image, in {unit}: {values}"


def _empty_note(maps: torch.Tensor) -> str:
    """Caption note for maps with no positive value (their tile shows only the coldest colour)."""
    empty = [
        str(i)
        for i, m in enumerate(maps)
        if not bool((m > 0).any()) and bool(torch.isfinite(m).all())  # NaNs have their own note
    ]
    if not empty:
        return ""
    return f"; no positive evidence for the target in image(s) #{', #'.join(empty)} (uniform tile)"


def _uniform_note(uniform: Sequence[int], advice: str) -> str:
    """Caption note for the uniform maps ``uniform`` (indices), with what to do about them."""
    if not uniform:
        return ""
    images = ", #".join(str(i) for i in uniform)
    return f"; the map of image(s) #{images} is uniform: it shows no location ({advice})"


def _grid_pair(value: int | Sequence[int] | None) -> tuple[int, int] | None:
    """``grid=`` as ``(rows, columns)`` (an int is a square), ``None`` to infer it."""
    if value is None:
        return None
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))
