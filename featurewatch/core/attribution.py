"""Attribution maps: which pixels of an input a class score depends on.

Four classic answers to "where does the network look?", each a map ``(N, H, W)`` at input
resolution for a batch ``x`` of shape ``(N, C, H, W)`` and one target class per image:

* :func:`saliency` - the gradient magnitude of the class score with respect to the pixels
  (Simonyan, Vedaldi & Zisserman, 2013), optionally averaged over noisy copies (SmoothGrad,
  Smilkov et al., 2017). Cheap (one backward pass), noisy, and local: it says which pixels would
  change the score *a little*, not which region the decision rests on.
* :func:`occlusion` - how much the class probability drops when a window of the image is replaced
  by a baseline (Zeiler & Fergus, 2014). Model-agnostic and easy to read, but costs one forward
  pass per window.
* :func:`grad_cam` - a conv layer's feature maps weighted by the spatially averaged gradient of the
  score (Selvaraju et al., 2017). Coarse (layer resolution) but class-discriminative.
* :func:`cam` - Class Activation Mapping (Zhou et al., 2016): for a network that ends in global
  average pooling and a linear classifier, the classifier's weights applied to the last feature map.
  No backward pass; for such networks it equals Grad-CAM times the number of feature-map positions.

Scores are the model's *pre-softmax* outputs (logits): gradients of a softmax probability also
depend on every other class and vanish once the network is confident. :func:`occlusion` uses the
softmax probability by default (the quantity Zeiler & Fergus plotted; ``output="logit"`` switches).
A model whose ``forward`` returns more than the logits (a tuple such as ``(logits, features)``, a
dict such as ``{"logits": ...}``) is supported through ``output_key``: an index, a key, or a function
of the output that returns the ``(N, classes)`` logits.

The default Grad-CAM layer (:func:`default_gradcam_layer`) is found by running the network once:
the feature map that is globally average-pooled into the classifier (:func:`find_cam_layer`) when
there is one, else the last module, in the order the forward pass calls them, whose output is a
spatial ``(N, C, H, W)`` map (larger than 1 x 1 when there is one). Registration order is not used:
it would pick auxiliary heads registered last but not called in eval mode (GoogLeNet), or a
residual branch's last conv (ResNet). Nothing applied *after* the global pooling is ever a default
layer: ConvNeXt normalizes the pooled ``(N, C, 1, 1)`` vector with a ``LayerNorm2d`` before its
``Linear``, a module whose output is 1 x 1 at every input size (a uniform Grad-CAM map). The same
``LayerNorm2d`` makes CAM undefined for ConvNeXt (CAM needs pool -> linear), and
:func:`find_cam_layer` says so.

Model hygiene: every function runs inside :func:`~featurewatch.core.hygiene.isolated` (eval mode,
no BatchNorm statistics updated, train flags and ``requires_grad`` restored), differentiates with
``torch.autograd.grad`` with respect to the input or a captured activation only (no parameter
``.grad`` is ever touched), and removes every hook in a ``finally``. The per-image maps assume the
network treats the images of a batch independently, which is true in eval mode.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal, NamedTuple, TypeAlias

import torch
import torch.nn.functional as F
from torch import nn

from featurewatch.core.hygiene import isolated, model_device_dtype
from featurewatch.core.images import colorize, scale_each, to_display_channels
from featurewatch.core.layers import CONV_TYPES, capture, list_layers, parse_layer, resolve_layer

__all__ = [
    "OutputKey",
    "Target",
    "cam",
    "check_cam_layer",
    "default_gradcam_layer",
    "find_cam_layer",
    "grad_cam",
    "last_conv_layer",
    "last_linear_layer",
    "occlusion",
    "overlay",
    "saliency",
]

#: Target classes: one int for every image, or one int per image (sequence or ``(N,)`` tensor).
#: NumPy integers and integer arrays are accepted too.
Target: TypeAlias = int | Sequence[int] | torch.Tensor
#: Where the logits are in the model's output: ``None`` (the output is the ``(N, classes)`` tensor),
#: an index into a tuple/list output, a key of a dict output, or a function ``output -> logits``.
OutputKey: TypeAlias = int | str | Callable[[Any], torch.Tensor] | None

#: Modules that pool a whole map into the classifier's input (torchvision's ``avgpool``) when their
#: output is 1 x 1. What finishes after such a call works on the pooled vector, not on a feature
#: map (ConvNeXt's ``LayerNorm2d`` on the ``(N, C, 1, 1)`` pool output), so it is never a default
#: layer. A ``MaxPool2d`` that happens to output 1 x 1 (VGG at 32 px) still makes a feature map.
_GLOBAL_POOL_TYPES: tuple[type[nn.Module], ...] = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
#: Modules that leave the pooled vector's values unchanged (in eval mode): not worth naming when
#: explaining what sits between the global pool and the classifier.
_PASS_THROUGH_TYPES: tuple[type[nn.Module], ...] = (
    nn.Flatten,
    nn.Unflatten,
    nn.Identity,
    nn.modules.dropout._DropoutNd,
)


# ---------------------------------------------------------------------- shared helpers
def _prepare(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A private copy of ``x`` on the model's device/dtype (also escapes inference tensors)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`x` must be an (N, C, H, W) tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[0] == 0:
        raise ValueError(
            f"`x` must be a non-empty (N, C, H, W) batch of images, got shape {tuple(x.shape)}"
        )
    device, dtype = model_device_dtype(model)
    return x.detach().to(device=device, dtype=dtype).clone()


def _class_index(value: Any) -> int | None:
    """``value`` as a Python int if it is an integer (``int``, NumPy integer, 0-d integer array),
    else ``None``; booleans are not class indices."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _target_tensor(target: Target, n: int, device: torch.device) -> torch.Tensor:
    """Per-image class indices as a ``(N,)`` long tensor (range checked later, against the scores)."""
    if isinstance(target, torch.Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(
                f"`target` tensor must hold integer class indices, got dtype {target.dtype}"
            )
        t = target.detach().reshape(-1).to(device=device, dtype=torch.long)
        if t.numel() == 1:
            t = t.expand(n)
    elif isinstance(target, (str, bytes)):
        raise TypeError(f"`target` must be a class index (int), or one per image, got {target!r}")
    elif (index := _class_index(target)) is not None:
        t = torch.full((n,), index, dtype=torch.long, device=device)
    elif isinstance(target, Sequence) or getattr(target, "ndim", 0) >= 1:  # a list, a NumPy array
        values = list(target)  # type: ignore[arg-type]  # int was handled above
        indices = [_class_index(v) for v in values]
        if any(i is None for i in indices):
            raise TypeError(f"`target` must hold int class indices, got {values!r}")
        t = torch.tensor(indices, dtype=torch.long, device=device)
    else:
        raise TypeError(f"`target` must be a class index (int), or one per image, got {target!r}")
    if t.shape != (n,):
        raise ValueError(f"`target` must give one class per image: expected {n}, got {t.numel()}")
    return t


def _describe(out: Any) -> str:
    """A short description of a model output for error messages."""
    if isinstance(out, torch.Tensor):
        return f"a tensor of shape {tuple(out.shape)}"
    if isinstance(out, Mapping):
        return f"a {type(out).__name__} with keys {', '.join(repr(k) for k in out) or '(none)'}"
    if isinstance(out, (tuple, list)):
        parts = ", ".join(
            f"shape {tuple(v.shape)}" if isinstance(v, torch.Tensor) else type(v).__name__
            for v in out[:6]
        )
        return f"a {type(out).__name__} of {len(out)} values ({parts})"
    return f"a {type(out).__name__}"


def _check_output_key(output_key: Any) -> None:
    """Validate an ``output_key`` argument (see :data:`OutputKey`).

    Raises:
        TypeError: if it is not ``None``, an int, a str or a callable.
    """
    if output_key is None or isinstance(output_key, str) or callable(output_key):
        return
    if isinstance(output_key, bool) or not isinstance(output_key, int):
        raise TypeError(
            "`output_key` must be None (the model returns the logits), an int index, a str key or "
            f"a function of the output returning the logits, got {output_key!r}"
        )


def _select(out: Any, output_key: OutputKey) -> Any:
    """The part of a model output ``output_key`` names."""
    if output_key is None:
        return out
    if isinstance(output_key, str):
        if not isinstance(out, Mapping):  # output_key and model disagree: a configuration value
            raise ValueError(  # noqa: TRY004
                f"`output_key={output_key!r}` needs a model returning a dict, but it returned "
                f"{_describe(out)}"
            )
        if output_key not in out:
            raise ValueError(
                f"`output_key={output_key!r}`: the model's output has no such key (keys: "
                f"{', '.join(repr(k) for k in out) or 'none'})"
            )
        return out[output_key]
    if isinstance(output_key, int) and not isinstance(output_key, bool):
        if not isinstance(out, (tuple, list)):
            raise ValueError(  # noqa: TRY004
                f"`output_key={output_key}` needs a model returning a tuple or list, but it "
                f"returned {_describe(out)}"
            )
        if not -len(out) <= output_key < len(out):
            raise ValueError(
                f"`output_key={output_key}` is out of range: the model returned {_describe(out)}"
            )
        return out[output_key]
    return output_key(out)  # type: ignore[operator]


def _scores(out: Any, output_key: OutputKey = None, who: str = "attribution") -> torch.Tensor:
    """The ``(N, classes)`` logits in a model output (``output_key`` selects them); ``who`` starts
    the error messages (the callback that needs the logits)."""
    scores = _select(out, output_key)
    if isinstance(scores, torch.Tensor) and scores.dim() == 2:
        return scores
    if output_key is None:
        hint = (
            "pass `output_key=` to select the logits: an index (0 for (logits, features)), a dict "
            "key ('logits') or a function of the output"
            if isinstance(out, (tuple, list, Mapping))
            else "wrap the model so that forward returns the class logits"
        )
        raise ValueError(
            f"{who} needs a model returning (N, classes) scores, got {_describe(out)}; {hint}"
        )
    raise ValueError(
        f"{who} needs (N, classes) scores, but `output_key={output_key!r}` selects "
        f"{_describe(scores)} from the model's output ({_describe(out)})"
    )


def _check_range(t: torch.Tensor, num_classes: int) -> None:
    bad = t[(t < 0) | (t >= num_classes)]
    if bad.numel():
        raise ValueError(
            f"target class {int(bad[0])} out of range: the model outputs {num_classes} scores "
            f"(valid: 0..{num_classes - 1})"
        )


def _pick(out: Any, t: torch.Tensor, output_key: OutputKey = None) -> torch.Tensor:
    """The target score of each row of the logits in ``out``."""
    scores = _scores(out, output_key)
    _check_range(t, scores.shape[1])
    return scores.gather(1, t[:, None])[:, 0]


def _check_count(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}")


# ---------------------------------------------------------------------- default layers
def last_conv_layer(model: nn.Module) -> str:
    """Name of the last convolution registered in ``model``.

    Not the default Grad-CAM layer any more (see :func:`default_gradcam_layer`): registration order
    need not be the forward order (an auxiliary head registered last), and the last conv is often
    not the network's final feature map (a residual branch, one of DenseNet's concatenated slices).

    Raises:
        ValueError: if the model has no convolution (the message lists its layers).
    """
    convs = [name for name, m in model.named_modules() if name and isinstance(m, CONV_TYPES)]
    if not convs:
        layers = (
            ", ".join(list_layers(model, ("conv", "activation", "linear", "norm"))[:40]) or "none"
        )
        raise ValueError(
            f"{type(model).__name__} has no convolution layer for Grad-CAM; pass `layer=` naming a "
            f"module with (N, C, H, W) output (layers: {layers})"
        )
    return convs[-1]


def last_linear_layer(model: nn.Module) -> str:
    """Name of the last ``nn.Linear`` registered in ``model``: the default CAM classifier.

    Raises:
        ValueError: if the model has no ``nn.Linear`` (the message lists its layers).
    """
    linears = list_layers(model, ("linear",))
    if not linears:
        layers = (
            ", ".join(list_layers(model, ("conv", "activation", "linear", "norm"))[:40]) or "none"
        )
        raise ValueError(
            f"{type(model).__name__} has no nn.Linear classifier for CAM; CAM needs global average "
            f"pooling + a linear layer, use 'gradcam' instead (layers: {layers})"
        )
    return linears[-1]


def _hooked_forward(
    model: nn.Module, x: torch.Tensor, hooks: Sequence[tuple[nn.Module, Callable[..., Any]]]
) -> None:
    """One no-grad forward pass of ``x`` with temporary forward hooks (removed in ``finally``)."""
    handles = []
    try:
        for module, fn in hooks:
            handles.append(module.register_forward_hook(fn))
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()


def _is_global_pool(module: nn.Module, out: Any) -> bool:
    """Whether this call pooled a whole map into one value per channel (a 1 x 1 output)."""
    return (
        isinstance(module, _GLOBAL_POOL_TYPES)
        and isinstance(out, torch.Tensor)
        and out.dim() == 4
        and out.shape[-2:].numel() == 1
    )


def _last_spatial_layer(model: nn.Module, x: torch.Tensor) -> str | None:
    """The last module to finish in the forward pass of ``x`` whose output is ``(N, C, H, W)``.

    Outputs larger than 1 x 1 are preferred: a global pooling module's ``(N, C, 1, 1)`` output
    (which finishes after the feature map) would give a uniform map. When every map is 1 x 1 (a
    small input), the last one that finishes *before* the last global pooling module is taken:
    what comes after the pool (ConvNeXt's ``LayerNorm2d`` on the pooled vector) is 1 x 1 at any
    input size, so naming it would make "use a larger input" false advice.

    A 4-D output wider or taller than the input image is not a feature map but a channels-last
    ``(N, h, w, C)`` tensor (the Linear layers inside a ConvNeXt block, whose "width" is their 768
    channels), which Grad-CAM cannot use. ``"name@k"`` when that was not the module's last call;
    ``None`` when no module has a spatial output.
    """
    height, width = x.shape[-2:]
    calls: dict[str, int] = {}
    larger: list[tuple[str, int]] = []  # outputs larger than 1 x 1, in finishing order
    ones: list[tuple[str, int, int]] = []  # 1 x 1 outputs: name, call, finishing position
    pools: list[int] = []  # finishing positions of global pooling calls
    tick = [0]

    def make(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, _inp: Any, out: Any) -> None:
            k = calls.get(name, 0)
            calls[name] = k + 1
            tick[0] += 1
            if _is_global_pool(module, out):
                pools.append(tick[0])
            if (
                isinstance(out, torch.Tensor)
                and out.dim() == 4
                and out.is_floating_point()
                and out.shape[-2] <= height
                and out.shape[-1] <= width
            ):
                if out.shape[-2:].numel() > 1:
                    larger.append((name, k))
                else:
                    ones.append((name, k, tick[0]))

        return hook

    _hooked_forward(model, x, [(m, make(n)) for n, m in model.named_modules() if n])
    if larger:
        name, k = larger[-1]
    else:
        before = [o for o in ones if not pools or o[2] < pools[-1]]
        if not before:
            return None
        name, k, _ = before[-1]
    return name if k == calls[name] - 1 else f"{name}@{k}"


def default_gradcam_layer(model: nn.Module, x: torch.Tensor, classifier: str | None = None) -> str:
    """The layer Grad-CAM uses when none is named: the network's final spatial feature map.

    That is the map globally average-pooled into the classifier when there is one
    (:func:`find_cam_layer`, the layer CAM uses too), else the last module, in the order the
    forward pass calls them, whose output is ``(N, C, H, W)`` (larger than 1 x 1 if any is: not
    a global pool's output; when all are 1 x 1, one that finishes before the global pooling
    module, never a module applied to the pooled vector such as ConvNeXt's ``classifier.0``
    LayerNorm2d). Both are found by running ``x[:1]`` once (twice in the second case);
    registration order is never used, because auxiliary heads registered last but not called in
    eval mode (torchvision's GoogLeNet), the last conv of a residual branch (a zero-initialized
    ResNet block: blank maps) or a 32-channel slice of a DenseNet's 1024-channel output are not
    the network's final feature map.

    Args:
        model: the network.
        x: ``(N, C, H, W)`` example input (only the first image is used).
        classifier: name of the ``nn.Linear`` classifier (default: the last one registered).

    Raises:
        ValueError: if no module outputs a spatial map; the message says to pass ``layer=``.

    Example:
        >>> default_gradcam_layer(torchvision.models.resnet18(), torch.randn(1, 3, 224, 224))
        'layer4.1.relu'
        >>> default_gradcam_layer(torchvision.models.convnext_tiny(), torch.randn(1, 3, 224, 224))
        'features'
    """
    try:
        return find_cam_layer(model, x, classifier)
    except ValueError:
        pass  # no GAP + linear head: fall back to the last spatial map
    with isolated(model):
        found = _last_spatial_layer(model, _prepare(model, x)[:1])
    if found is None:
        raise ValueError(
            f"no module of {type(model).__name__} outputs a spatial (N, C, H, W) feature map (before "
            "any global pooling) in the forward pass, so there is no default Grad-CAM layer; pass "
            "`layer=` naming a module with such an output"
        )
    return found


def _linear(model: nn.Module, classifier: str | None) -> tuple[str, nn.Linear]:
    name = last_linear_layer(model) if classifier is None else classifier
    module = resolve_layer(model, name)
    if not isinstance(module, nn.Linear):
        linears = ", ".join(list_layers(model, ("linear",))) or "none"
        raise TypeError(
            f"CAM `classifier` must name an nn.Linear, but {name!r} is a {type(module).__name__} "
            f"(nn.Linear layers: {linears})"
        )
    return name, module


def _static_channels(module: nn.Module) -> int | None:
    """Output channels of a module when its type tells (conv, BatchNorm), else ``None``."""
    if isinstance(module, CONV_TYPES):
        return int(module.out_channels)  # type: ignore[arg-type]
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return int(module.num_features)
    return None


def _tolerance(*dtypes: torch.dtype) -> float:
    """Relative tolerance for comparing values computed in ``dtypes``: 1e-4 in float32, a few
    units of the last place in bfloat16 (eps 2**-7) and float16 (eps 2**-10), where the model's
    own pooling rounds its result."""
    return max([1e-4] + [8 * torch.finfo(d).eps for d in dtypes if d.is_floating_point])


class _GapScan(NamedTuple):
    """What one forward pass says about the feature map pooled into a classifier."""

    #: references whose spatial mean is the classifier's input, leaf modules only
    leaves: list[str]
    #: the same, containers included
    every: list[str]
    #: the classifier's name
    classifier: str
    #: the global pooling module whose output reaches the classifier (``None``: none, or functional)
    pool: str | None
    #: the modules that change the pooled vector between that pool and the classifier (ConvNeXt's
    #: ``LayerNorm2d``), by name: why CAM is undefined although there is a pool
    between: dict[str, nn.Module]


_POOL_TYPES: tuple[type[nn.Module], ...] = (
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.LPPool2d,
)


def _gap_matches(model: nn.Module, x: torch.Tensor, classifier: str | None) -> _GapScan:
    """Layer references whose spatial mean is what ``classifier`` receives (up to rounding in the
    model's dtype).

    When the pooled map is larger than 1 x 1, only maps larger than 1 x 1 count (the pooling
    module's own ``(N, K, 1, 1)`` output also has the right mean). When it is 1 x 1 (a small
    input: torchvision's ResNet-18 or VGG at 32 px), every 1 x 1 match holds the same values, and
    only the ones computed *before* the pooling are feature maps:

    * with a global pooling module (``AdaptiveAvgPool2d`` with a 1 x 1 output) before the
      classifier, the 1 x 1 matches that finish before its last call are kept: a module applied
      to the pooled vector (a ``LayerNorm2d`` on ``(N, C, 1, 1)``) is 1 x 1 at every input size;
    * with functional pooling (``x.mean((2, 3))``, ``F.adaptive_avg_pool2d``), which no hook sees,
      they are kept unless the ``K``-channel map that finishes just before the first of them is
      larger than 1 x 1: then they were computed from a pooled map (unless the first is a
      pooling module's own output, a VGG's last ``MaxPool2d`` at 32 px).

    Returns:
        A :class:`_GapScan`; the matches are in the order the modules finished in the forward
        pass, and both forms are listed for the last call of a module (``"name"``, ``"name@k"``).
    """
    cls_name, linear = _linear(model, classifier)
    k = linear.in_features
    tick = [0]  # position of each hook event in the forward pass
    calls: dict[str, int] = {}
    # K-channel (N, K, h, w) outputs: name, call, leaf, dtype, values, position
    seen: list[tuple[str, int, bool, torch.dtype, torch.Tensor, int]] = []
    finished: list[tuple[str, nn.Module, int]] = []  # leaf modules: name, module, position
    pools: list[tuple[str, int]] = []  # global pooling calls: reference, position
    feats: list[tuple[torch.dtype, torch.Tensor, int]] = []  # the classifier's inputs

    def make(name: str, module: nn.Module) -> Callable[..., None]:
        leaf = not any(True for _ in module.children())

        def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
            call = calls.get(name, 0)
            calls[name] = call + 1
            tick[0] += 1
            if leaf:
                finished.append((name, module, tick[0]))
            if _is_global_pool(module, out):
                pools.append((f"{name}@{call}", tick[0]))
            if (
                isinstance(out, torch.Tensor)
                and out.is_floating_point()
                and out.dim() == 4
                and out.shape[1] == k
            ):
                seen.append((name, call, leaf, out.dtype, out.detach().float().clone(), tick[0]))

        return hook

    def grab(_m: nn.Module, inp: Any) -> None:
        tick[0] += 1
        a = inp[0]
        feats.append((a.dtype, a.detach().float().reshape(a.shape[0], -1).clone(), tick[0]))

    handle = linear.register_forward_pre_hook(grab)
    try:
        hooks = [(m, make(n, m)) for n, m in model.named_modules() if n and m is not linear]
        _hooked_forward(model, x, hooks)
    finally:
        handle.remove()
    if not feats:
        raise ValueError(
            f"classifier {cls_name!r} is not called in the forward pass; name the classifier with "
            f"`classifier=` (nn.Linear layers: {', '.join(list_layers(model, ('linear',)))})"
        )
    feat_dtype, target, cls_tick = feats[-1]
    feeding = [p for p in pools if p[1] < cls_tick]
    pool_ref, pool_tick = feeding[-1] if feeding else (None, None)
    scale = float(target.abs().max().clamp_min(1e-6))
    matched: list[tuple[str, int, bool, int, bool]] = []  # name, call, leaf, position, 1 x 1
    for name, call, leaf, dtype, out, at in seen:
        mean = out.mean(dim=(2, 3))
        tol = _tolerance(dtype, feat_dtype)
        if mean.shape == target.shape and torch.allclose(mean, target, rtol=tol, atol=tol * scale):
            matched.append((name, call, leaf, at, out.shape[-2:].numel() == 1))
    chosen = [m for m in matched if not m[4]]
    if not chosen and pool_tick is not None:  # a 1 x 1 pooled map: what finishes before the pool
        chosen = [m for m in matched if m[3] < pool_tick]
    elif not chosen and matched:  # functional pooling: drop matches computed from a pooled map
        earlier = [s for s in seen if s[5] < matched[0][3]]
        pooled = bool(earlier) and earlier[-1][4].shape[-2:].numel() > 1
        # ... unless the first match is a pooling module's own 1 x 1 output (a VGG's last MaxPool2d
        # at 32 px): that is the map the classifier reads, not something computed after a pool
        by_pool = isinstance(model.get_submodule(matched[0][0]), _POOL_TYPES)
        chosen = [] if pooled and not by_pool else matched
    leaves: list[str] = []
    every: list[str] = []
    for name, call, leaf, _at, _one in chosen:
        refs = [f"{name}@{call}"] + ([name] if call == calls[name] - 1 else [])
        every += refs
        if leaf:
            leaves += refs
    between = {
        name: module
        for name, module, at in finished
        if pool_tick is not None
        and pool_tick < at < cls_tick
        and not isinstance(module, _PASS_THROUGH_TYPES)
    }
    pool_name = None if pool_ref is None else _last_call_name(pool_ref, calls)
    return _GapScan(leaves, every, cls_name, pool_name, between)


def _last_call_name(ref: str, calls: Mapping[str, int]) -> str:
    """``"name@k"`` as ``"name"`` when ``k`` is the module's last call in the forward pass."""
    name, _, k = ref.rpartition("@")
    return name if int(k) == calls[name] - 1 else ref


def _no_cam_layer_message(model: nn.Module, scan: _GapScan) -> str:
    """Why no layer of ``model`` is a CAM layer, and what to do instead."""
    others = [n for n in list_layers(model, ("linear",)) if n != scan.classifier]
    # another classifier is plausible only if no pool -> ... -> classifier chain was seen, or the
    # chain holds a Linear (a two-layer head): not for ConvNeXt's pool -> LayerNorm2d -> Linear
    plausible = not scan.between or any(isinstance(m, nn.Linear) for m in scan.between.values())
    hint = (
        f"if another nn.Linear is the classifier, name it with `classifier=` (others: "
        f"{', '.join(others[-8:])}); otherwise "
        if others and plausible
        else ""
    )
    applied = ", ".join(f"{n} ({type(m).__name__})" for n, m in scan.between.items())
    why = (
        f"; {type(model).__name__} applies {applied} between the global pool {scan.pool!r} and the "
        "classifier, and CAM needs the pooled map to go straight into the linear layer "
        "(pool -> linear only)"
        if scan.between
        else ""
    )
    return (
        f"CAM needs a network whose classifier {scan.classifier!r} reads a globally average-pooled "
        f"feature map, and no layer of {type(model).__name__} is pooled into it{why}; {hint}use "
        "'gradcam', which works with any conv layer (by default the network's last spatial "
        "feature map before the global pool)"
    )


def find_cam_layer(model: nn.Module, x: torch.Tensor, classifier: str | None = None) -> str:
    """The feature map that ``classifier`` reads through global average pooling: the CAM layer.

    The *last conv layer* is the wrong CAM layer whenever BatchNorm or a ReLU follows it (CAM is only
    defined on the map that is pooled), and module registration order need not be forward order, so
    the layer is found by running ``x[:1]`` once and checking, for every module, whether the spatial
    mean of its output equals the classifier's input (to the rounding of the model's dtype: bfloat16
    and float16 models pool with a relative error of about ``2**-8`` and ``2**-11``). The last such
    module to finish is returned (a leaf module rather than the container that returns the same
    tensor; ``"name@k"`` when it is not the module's last call). A pooled map of 1 x 1 (a small
    input) is accepted; CAM (and Grad-CAM) at such a layer is one value per image, a uniform map.
    A module applied to the pooled vector is never the CAM layer, even when its 1 x 1 output is
    what the classifier reads: CAM needs pool -> linear, and a network that normalizes the pooled
    vector first (ConvNeXt's ``LayerNorm2d``) is refused with a message naming that module.

    Args:
        model: a network ending in global average pooling and an ``nn.Linear`` classifier.
        x: ``(N, C, H, W)`` example input (only the first image is used).
        classifier: name of the ``nn.Linear`` (default: the last one registered).

    Raises:
        ValueError: if no module's output is pooled into the classifier (CAM does not apply, or
            ``classifier`` names the wrong ``nn.Linear``); the message names the modules between
            the global pool and the classifier when there are any.
    """
    with isolated(model):
        x0 = _prepare(model, x)[:1]
        scan = _gap_matches(model, x0, classifier)
    found = scan.leaves or scan.every
    if not found:
        raise ValueError(_no_cam_layer_message(model, scan))
    return found[-1]  # "name" when it is the module's last call, else "name@k"


def check_cam_layer(
    model: nn.Module, x: torch.Tensor, layer: str, classifier: str | None = None
) -> None:
    """Check that CAM is defined for ``layer``: its spatial mean is the classifier's input.

    Raises:
        ValueError: saying which layer to use instead (found with :func:`find_cam_layer`), or that
            ``gradcam`` works for any layer.
    """
    ref = parse_layer(layer)
    resolve_layer(model, ref)
    cls_name, linear = _linear(model, classifier)
    channels = _static_channels(resolve_layer(model, ref))
    if channels is not None and channels != linear.in_features:
        raise _channel_mismatch(str(ref), channels, cls_name, linear.in_features)
    with isolated(model):
        x0 = _prepare(model, x)[:1]
        scan = _gap_matches(model, x0, classifier)
    if str(ref) in scan.every:
        return
    if not scan.every and scan.between:  # no layer at all: say why (ConvNeXt), not just "not this"
        raise ValueError(
            f"CAM at layer {str(ref)!r} is undefined: {_no_cam_layer_message(model, scan)}"
        )
    hint = f"use layer={(scan.leaves or scan.every)[-1]!r} for CAM, or" if scan.every else "use"
    raise ValueError(
        f"CAM at layer {str(ref)!r} is undefined: classifier {cls_name!r} does not read the global "
        f"average pool of that layer's output; {hint} 'gradcam', which works for any conv layer"
    )


def _channel_mismatch(layer: str, channels: int, cls_name: str, in_features: int) -> ValueError:
    return ValueError(
        f"CAM at layer {layer!r} is undefined: it has {channels} channels but classifier {cls_name!r} "
        f"takes {in_features} features; name the feature map that is globally average-pooled into "
        "the classifier, or use grad_cam ('gradcam'), which works for any conv layer"
    )


# ---------------------------------------------------------------------- saliency / SmoothGrad
def saliency(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    *,
    smooth: int = 0,
    noise: float = 0.15,
    generator: torch.Generator | None = None,
    batch_size: int = 64,
    output_key: OutputKey = None,
) -> torch.Tensor:
    """Gradient saliency: ``max_c |d score_target / d x_c|`` per pixel (Simonyan et al., 2013).

    With ``smooth > 0`` this is SmoothGrad (Smilkov et al., 2017): the saliency maps of ``smooth``
    noisy copies of each image are averaged, which removes most of the gradient's high-frequency
    noise. Noise is Gaussian with standard deviation ``noise * (max(x_i) - min(x_i))`` per image
    (the paper's "noise level" as a fraction of the input range) and is drawn only from a private
    generator, never the global RNG, one ``(smooth, C, H, W)`` block per image in order, so the
    result does not depend on ``batch_size``.

    Args:
        model: classifier returning ``(N, classes)`` logits (or see ``output_key``).
        x: ``(N, C, H, W)`` images, normalized like the model's inputs.
        target: class per image (int, sequence or ``(N,)`` tensor).
        smooth: number of noisy copies per image (0: plain gradient).
        noise: noise standard deviation as a fraction of each image's value range.
        generator: private generator for the noise (default: a new one seeded with 0, so
            repeated calls give the same map).
        batch_size: images (noisy copies) per forward/backward pass.
        output_key: where the logits are in the model's output (:data:`OutputKey`): ``None`` when
            ``forward`` returns them, an index (``0`` for ``(logits, features)``), a dict key
            (``"logits"``) or a function of the output.

    Returns:
        ``(N, H, W)`` non-negative maps on the model's device.

    Example:
        >>> maps = saliency(model, images, target=3, smooth=16)
    """
    _check_output_key(output_key)
    _check_count("smooth", smooth, 0)
    _check_count("batch_size", batch_size, 1)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or noise < 0:
        raise ValueError(
            f"`noise` must be a number >= 0 (fraction of the input range), got {noise!r}"
        )
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"`generator` must be a torch.Generator or None, got {type(generator).__name__}"
        )
    with isolated(model):
        x0 = _prepare(model, x)
        n = x0.shape[0]
        t = _target_tensor(target, n, x0.device)
        copies = max(1, smooth)
        sigma = None
        gen = generator
        if smooth:
            flat = x0.reshape(n, -1)
            sigma = float(noise) * (flat.amax(1) - flat.amin(1))
            gen = gen if gen is not None else torch.Generator().manual_seed(0)
        total = torch.zeros(n, *x0.shape[-2:], device=x0.device, dtype=x0.dtype)
        blocks: dict[int, torch.Tensor] = {}  # noise of the images the current chunk touches
        for start in range(0, n * copies, batch_size):
            end = min(start + batch_size, n * copies)
            image = torch.arange(start, end, device=x0.device) // copies
            batch = x0[image]
            if sigma is not None and gen is not None:
                first, last = start // copies, (end - 1) // copies
                for i in range(first, last + 1):
                    if i not in blocks:  # drawn once per image, in image order
                        shape = (copies, *x0.shape[1:])
                        blocks[i] = torch.randn(shape, generator=gen, device=gen.device)
                for i in [i for i in blocks if i < first]:
                    del blocks[i]
                eps = torch.cat([blocks[i] for i in range(first, last + 1)])
                eps = eps[start - first * copies : end - first * copies]
                batch = batch + eps.to(batch) * sigma[image].reshape(-1, 1, 1, 1)
            batch.requires_grad_(True)
            score = _pick(model(batch), t[image], output_key)
            (grad,) = torch.autograd.grad(score.sum(), batch)
            total.index_add_(0, image, grad.abs().amax(dim=1))
        return (total / copies).detach()


# ---------------------------------------------------------------------- occlusion
def _pair(
    name: str, value: int | Sequence[int] | None, default: tuple[int, int]
) -> tuple[int, int]:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, Sequence)):
        raise TypeError(f"`{name}` must be a positive int or a pair (height, width), got {value!r}")
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in pair):
        raise ValueError(
            f"`{name}` must be a positive int or a pair (height, width) of them, got {value!r}"
        )
    return int(pair[0]), int(pair[1])


def _starts(size: int, window: int, stride: int) -> list[int]:
    """Window offsets along one axis; the last window always ends at the border (full coverage)."""
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def _occlusion_windows(
    shape: Sequence[int], window: int | Sequence[int] | None, stride: int | Sequence[int] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column masks ``(P, H)`` and ``(P, W)`` (bool) of every occluding window."""
    h, w = int(shape[-2]), int(shape[-1])
    wh, ww = _pair("window", window, (max(1, h // 4), max(1, w // 4)))
    if wh > h or ww > w:
        raise ValueError(f"`window` {(wh, ww)} is larger than the images ({h}, {w})")
    sh, sw = _pair("stride", stride, (max(1, wh // 2), max(1, ww // 2)))
    if sh > wh or sw > ww:
        raise ValueError(
            f"`stride` {(sh, sw)} is larger than `window` {(wh, ww)}: some pixels would never be "
            "covered; use a stride of at most the window size"
        )
    rows = torch.tensor(_starts(h, wh, sh))
    cols = torch.tensor(_starts(w, ww, sw))
    r0 = rows.repeat_interleave(len(cols))
    c0 = cols.repeat(len(rows))
    ar_h, ar_w = torch.arange(h), torch.arange(w)
    row_mask = (ar_h >= r0[:, None]) & (ar_h < r0[:, None] + wh)
    col_mask = (ar_w >= c0[:, None]) & (ar_w < c0[:, None] + ww)
    return row_mask, col_mask


def occlusion(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    *,
    window: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    baseline: float | torch.Tensor = 0.0,
    batch_size: int = 64,
    output: Literal["probability", "logit"] = "probability",
    output_key: OutputKey = None,
) -> torch.Tensor:
    """Occlusion sensitivity (Zeiler & Fergus, 2014): how much covering each region hurts the class.

    Every window position is replaced by ``baseline`` in a copy of the image; the drop of the target's
    softmax probability (``output="probability"``, the quantity of the paper, in ``[-1, 1]``) or logit
    (``output="logit"``) relative to the intact image is credited to every pixel of the window, and
    each pixel's value is the mean over the windows that cover it. All occluded copies of all images
    are evaluated together, ``batch_size`` per forward pass.

    Args:
        model: classifier returning ``(N, classes)`` logits.
        x: ``(N, C, H, W)`` images, normalized like the model's inputs.
        target: class per image.
        window: occluding patch size, int or ``(height, width)``. Default: a quarter of the image
            side (4 x 4 windows on a 16 x 16 digit, 56 x 56 on a 224 x 224 photo).
        stride: step between windows, at most the window. Default: half the window (Captum's default of 1 costs tens of
            thousands of forward passes on a photo). The last window always touches the border.
        baseline: what covers the window, in the model's input space: a number (``0.0`` is the
            dataset mean for standardized inputs) or a tensor broadcastable to ``x``.
        batch_size: occluded copies per forward pass.
        output: ``"probability"`` (softmax) or ``"logit"``. Probabilities saturate: a network
            that is sure of its class loses almost nothing when a window is covered (drops of
            ``1e-5``), where the logit still moves.
        output_key: where the logits are in the model's output (:data:`OutputKey`): ``None`` when
            ``forward`` returns them, an index (``0`` for ``(logits, features)``), a dict key
            (``"logits"``) or a function of the output.

    Returns:
        ``(N, H, W)`` *signed* maps on the model's device: positive where covering the region lowers
        the target's score (the region supports the class), negative where it raises it.

    Example:
        >>> maps = occlusion(model, images, target=labels, window=8, stride=4)
    """
    _check_count("batch_size", batch_size, 1)
    _check_output_key(output_key)
    if output not in ("probability", "logit"):
        raise ValueError(f"`output` must be 'probability' or 'logit', got {output!r}")
    with isolated(model), torch.no_grad():
        x0 = _prepare(model, x)
        n = x0.shape[0]
        t = _target_tensor(target, n, x0.device)
        if isinstance(baseline, torch.Tensor):
            try:
                base = baseline.detach().to(x0).expand_as(x0)
            except RuntimeError:
                raise ValueError(
                    f"`baseline` tensor of shape {tuple(baseline.shape)} does not broadcast to the "
                    f"images {tuple(x0.shape)}"
                ) from None
        elif isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
            base = torch.full_like(x0, float(baseline))
        else:
            raise TypeError(
                f"`baseline` must be a number or a tensor, got {type(baseline).__name__}"
            )
        row_mask, col_mask = _occlusion_windows(x0.shape, window, stride)
        row_mask, col_mask = row_mask.to(x0.device), col_mask.to(x0.device)
        p = row_mask.shape[0]

        def score(out: Any, classes: torch.Tensor) -> torch.Tensor:
            s = _scores(out, output_key).float()
            if output == "probability":
                s = s.softmax(dim=1)
            return _pick(s, classes)

        reference = score(model(x0), t)
        drops = torch.empty(n * p, device=x0.device)
        for start in range(0, n * p, batch_size):
            k = torch.arange(start, min(start + batch_size, n * p), device=x0.device)
            image, win = k // p, k % p
            mask = (row_mask[win][:, :, None] & col_mask[win][:, None, :])[:, None]  # (B, 1, H, W)
            occluded = torch.where(mask, base[image], x0[image])
            drops[k] = reference[image] - score(model(occluded), t[image])
        rows, cols = row_mask.float(), col_mask.float()
        credit = torch.einsum("np,ph,pw->nhw", drops.reshape(n, p), rows, cols)
        coverage = torch.einsum("ph,pw->hw", rows, cols)
        return (credit / coverage).to(x0.dtype)


# ---------------------------------------------------------------------- Grad-CAM / CAM
@contextmanager
def _differentiable_capture(model: nn.Module, layer: str) -> Iterator[list[torch.Tensor | None]]:
    """Make ``layer``'s output a leaf we can differentiate against, safe from in-place ops.

    The hook replaces the chosen output by a detached leaf ``A`` (requires grad; no graph below it is
    needed) and hands the network ``A.clone()``: a following ``ReLU(inplace=True)`` or ``out += x``
    then rewrites the clone, never ``A``, so ``A`` keeps the layer's true values and
    ``autograd.grad(score, A)`` is the gradient at the layer's output. A module's calls are all
    replaced when no ``@k`` is given (the last is used); cutting the graph above an earlier call
    never changes gradients at a later one.
    """
    ref = parse_layer(layer)
    module = resolve_layer(model, ref)
    captured: list[torch.Tensor | None] = []

    def hook(_m: nn.Module, _inp: Any, out: Any) -> Any:
        k = len(captured)
        if not isinstance(out, torch.Tensor) or (ref.call is not None and k != ref.call):
            captured.append(None)
            return None
        leaf = out.detach().requires_grad_(True)
        captured.append(leaf)
        return leaf.clone()

    handle = module.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def _pick_call(
    model: nn.Module, layer: str, captured: Sequence[torch.Tensor | None]
) -> torch.Tensor:
    ref = parse_layer(layer)
    if not captured:
        raise ValueError(
            f"layer {layer!r} was not called in the forward pass of {type(model).__name__}; pass "
            "`layer=` naming a module the forward pass calls"
        )
    if ref.call is not None and ref.call >= len(captured):
        raise ValueError(
            f"layer {layer!r}: module {ref.name!r} is called {len(captured)} time(s) per forward "
            f"(valid: {ref.name}@0..{len(captured) - 1})"
        )
    got = captured[-1] if ref.call is None else captured[ref.call]
    if got is None:
        raise ValueError(
            f"layer {layer!r} does not output a tensor; name a conv or activation layer"
        )
    _spatial(model, layer, got)
    return got


def _spatial(model: nn.Module, layer: str, a: torch.Tensor) -> None:
    if a.dim() != 4:
        convs = ", ".join(list_layers(model, ("conv",))[-8:]) or "none"
        raise ValueError(
            f"Grad-CAM/CAM need a spatial (N, C, H, W) feature map, but layer {layer!r} outputs shape "
            f"{tuple(a.shape)}; name a conv layer or the activation after it (conv layers: {convs})"
        )


def _upsample(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``(N, h, w)`` -> ``(N, H, W)``, bilinear (the convention of the Grad-CAM paper)."""
    return F.interpolate(
        maps[:, None], size=tuple(size[-2:]), mode="bilinear", align_corners=False
    )[:, 0]


def grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    layer: str | None = None,
    *,
    output_key: OutputKey = None,
) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al., 2017) at a conv layer, upsampled to the input size.

    With ``A`` the layer's ``(K, h, w)`` output and ``y`` the target's logit, the weights are
    ``w_k = mean_ij dy/dA_kij`` and the map is ``relu(sum_k w_k A_k)``, bilinearly upsampled
    (before the ReLU, so that for a global-average-pool + linear network the result is exactly
    ``relu(cam(...)) / (h * w)``). Deeper layers are more class-specific but coarser.

    Args:
        model: classifier returning ``(N, classes)`` logits.
        x: ``(N, C, H, W)`` images, normalized like the model's inputs.
        target: class per image.
        layer: module name as in ``model.named_modules()`` (``"name@k"`` for the k-th call of a
            reused module). Default: the network's final feature map, found by running ``x[:1]``
            (:func:`default_gradcam_layer`: the map pooled into the classifier, else the last
            module in forward order with a spatial output).
        output_key: where the logits are in the model's output (:data:`OutputKey`): ``None`` when
            ``forward`` returns them, an index (``0`` for ``(logits, features)``), a dict key
            (``"logits"``) or a function of the output.

    Returns:
        ``(N, H, W)`` non-negative maps on the model's device.

    Example:
        >>> maps = grad_cam(model, images, target=labels, layer="layer4")
    """
    _check_output_key(output_key)
    name = default_gradcam_layer(model, x) if layer is None else layer
    parse_layer(name)
    resolve_layer(model, name)
    with isolated(model):
        x0 = _prepare(model, x)
        t = _target_tensor(target, x0.shape[0], x0.device)
        with _differentiable_capture(model, name) as captured:
            out = model(x0)
        a = _pick_call(model, name, captured)
        score = _pick(out, t, output_key)
        (grad,) = torch.autograd.grad(score.sum(), a, allow_unused=True)
        if grad is None:  # the score does not depend on this layer at all
            grad = torch.zeros_like(a)
        weights = grad.mean(dim=(2, 3), keepdim=True)
        maps = (weights * a).sum(dim=1).detach()
        return _upsample(maps, x0.shape).clamp_min(0)


def cam(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    layer: str | None = None,
    classifier: str | None = None,
) -> torch.Tensor:
    """Class Activation Mapping (Zhou et al., 2016) for global-average-pool + linear networks.

    ``map = sum_k W[target, k] A_k``: the classifier's row for the target applied to every position
    of the pooled feature map ``A`` (the logit is the spatial mean of this map plus the bias). Only a
    forward pass is needed, and the model's output is never read (so no ``output_key``: a model
    returning ``(logits, features)`` works as is). For other architectures use :func:`grad_cam`.

    Args:
        model: network whose logits are ``classifier(GAP(A))``.
        x: ``(N, C, H, W)`` images, normalized like the model's inputs.
        target: class per image (an index into the classifier's outputs).
        layer: the feature map that is pooled into the classifier. Default: found by
            :func:`find_cam_layer` (one extra forward pass of one image).
        classifier: name of the ``nn.Linear`` (default: the last one registered).

    Returns:
        ``(N, H, W)`` *signed* maps (negative where the features argue against the class),
        bilinearly upsampled, on the model's device.

    Raises:
        ValueError: if the layer's channel count differs from the classifier's ``in_features``
            (use :func:`grad_cam`).

    Example:
        >>> maps = cam(model, images, target=labels, layer="layer4", classifier="fc")
    """
    cls_name, linear = _linear(model, classifier)
    if layer is not None:
        parse_layer(layer)
        channels = _static_channels(resolve_layer(model, layer))
        if channels is not None and channels != linear.in_features:
            raise _channel_mismatch(layer, channels, cls_name, linear.in_features)
    name = find_cam_layer(model, x, cls_name) if layer is None else layer
    with isolated(model), torch.no_grad():
        x0 = _prepare(model, x)
        t = _target_tensor(target, x0.shape[0], x0.device)
        _check_range(t, linear.out_features)
        with capture(model, [name], clone=True) as got:
            model(x0)
        if str(parse_layer(name)) not in got.outputs:
            raise ValueError(
                f"layer {name!r} was not reached in the forward pass of {type(model).__name__}"
            )
        a = got[name]
        _spatial(model, name, a)
        if a.shape[1] != linear.in_features:
            raise _channel_mismatch(name, a.shape[1], cls_name, linear.in_features)
        weights = linear.weight.detach()[t].to(a.dtype)  # (N, K)
        maps = torch.einsum("nk,nkhw->nhw", weights, a)
        return _upsample(maps, x0.shape)


# ---------------------------------------------------------------------- display
def overlay(
    images: torch.Tensor, maps: torch.Tensor, *, cmap: str = "jet", alpha: float = 0.5
) -> torch.Tensor:
    """Blend heatmaps over their images for display.

    Each image is min-max scaled (:func:`~featurewatch.core.images.scale_each`; grayscale is shown
    as grey), each map is clipped at zero (only evidence *for* the class is coloured; occlusion and
    CAM maps are signed) and divided by its own maximum, so colours compare regions within an image,
    not across images.

    Args:
        images: ``(N, C, H, W)`` images (any range, any channel count).
        maps: ``(N, H, W)`` or ``(N, 1, H, W)`` attribution maps at the images' size.
        cmap: matplotlib colormap name (``"jet"``: red = strongest; ``"inferno"``: yellow).
        alpha: heatmap weight in ``[0, 1]``.

    Returns:
        ``(N, 3, H, W)`` in ``[0, 1]`` on the CPU.
    """
    import matplotlib

    if cmap not in matplotlib.colormaps:
        raise ValueError(
            f"`cmap` {cmap!r} is not a matplotlib colormap (e.g. 'jet', 'inferno', 'viridis')"
        )
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"`alpha` must be a number in [0, 1], got {alpha!r}")
    if images.dim() != 4:
        raise ValueError(f"`images` must be (N, C, H, W), got shape {tuple(images.shape)}")
    if maps.dim() == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.dim() != 3 or maps.shape[0] != images.shape[0] or maps.shape[-2:] != images.shape[-2:]:
        raise ValueError(
            f"`maps` must be (N, H, W) matching images {tuple(images.shape)}, got shape {tuple(maps.shape)}"
        )
    base = to_display_channels(scale_each(images.detach().cpu()))
    if base.shape[1] == 1:
        base = base.expand(-1, 3, -1, -1)
    heat = maps.detach().float().cpu().clamp_min(0)
    heat = heat / heat.flatten(1).amax(1).clamp_min(1e-12).reshape(-1, 1, 1)
    return ((1 - alpha) * base + alpha * colorize(heat, cmap)).clamp(0, 1)
