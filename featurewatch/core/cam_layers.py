"""Which layer CAM and Grad-CAM read: found by running the network, never by registration order.

Grad-CAM can use any spatial layer, but the one that explains the decision is the network's final
feature map; CAM (Zhou et al., 2016) is only *defined* on the map that is globally average-pooled
straight into a linear classifier. Both are found here by one forward pass of one image:

* :func:`find_cam_layer` / :func:`check_cam_layer` - the "GAP scan": every module whose output's
  spatial mean equals the classifier's input (to the rounding of the model's dtype) is pooled into
  it. Registration order is not used: the *last conv* is the wrong CAM layer whenever BatchNorm or a
  ReLU follows it, and a module applied to the pooled vector (ConvNeXt's ``LayerNorm2d``) makes CAM
  undefined, which the message says, naming it.
* :func:`default_gradcam_layer` - the CAM layer when there is one, else the last module, in the
  order the forward pass calls them, whose output is a spatial ``(N, C, H, W)`` map (larger than
  1 x 1 when there is one). Registration order would pick auxiliary heads registered last but not
  called in eval mode (GoogLeNet), or a residual branch's last conv (ResNet). Nothing applied
  *after* the global pooling is ever a default layer: ConvNeXt normalizes the pooled
  ``(N, C, 1, 1)`` vector with a ``LayerNorm2d`` before its ``Linear``, a module whose output is
  1 x 1 at every input size (a uniform Grad-CAM map).
* :func:`last_conv_layer`, :func:`last_linear_layer`, :func:`linear_classifier`,
  :func:`static_channels` - what the model's registered modules tell without running it.

Every scan runs inside :func:`~featurewatch.core.hygiene.isolated` under ``torch.no_grad`` with its
hooks removed in a ``finally`` (:func:`~featurewatch.core.hooks.forward_hooks`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from featurewatch.core.hooks import forward_hooks
from featurewatch.core.hygiene import isolated
from featurewatch.core.layers import CONV_TYPES, list_layers, parse_layer, resolve_layer
from featurewatch.core.outputs import model_input

__all__ = [
    "cam_channel_mismatch",
    "check_cam_layer",
    "default_gradcam_layer",
    "find_cam_layer",
    "last_conv_layer",
    "last_linear_layer",
    "linear_classifier",
    "static_channels",
]

#: Modules that pool a whole map into the classifier's input (torchvision's ``avgpool``) when their
#: output is 1 x 1. What finishes after such a call works on the pooled vector, not on a feature
#: map (ConvNeXt's ``LayerNorm2d`` on the ``(N, C, 1, 1)`` pool output), so it is never a default
#: layer. A ``MaxPool2d`` that happens to output 1 x 1 (VGG at 32 px) still makes a feature map.
_GLOBAL_POOL_TYPES: tuple[type[nn.Module], ...] = (
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)
#: Modules that leave the pooled vector's values unchanged (in eval mode): not worth naming when
#: explaining what sits between the global pool and the classifier.
_PASS_THROUGH_TYPES: tuple[type[nn.Module], ...] = (
    nn.Flatten,
    nn.Unflatten,
    nn.Identity,
    nn.modules.dropout._DropoutNd,
)


def last_conv_layer(model: nn.Module) -> str:
    """Name of the last convolution registered in ``model``.

    Not the default Grad-CAM layer any more (see :func:`default_gradcam_layer`): registration order
    need not be the forward order (an auxiliary head registered last), and the last conv is often
    not the network's final feature map (a residual branch, one of DenseNet's concatenated slices).

    Raises:
        ValueError: if the model has no convolution (the message lists its layers).
    """
    convs = [name for name, m in model.named_modules() if name and isinstance(m, CONV_TYPES)]
    why = (
        "has no convolution layer for Grad-CAM; pass `layer=` naming a module with (N, C, H, W) "
        "output"
    )
    return _last_or_explain(model, convs, why)


def last_linear_layer(model: nn.Module) -> str:
    """Name of the last ``nn.Linear`` registered in ``model``: the default CAM classifier.

    Raises:
        ValueError: if the model has no ``nn.Linear`` (the message lists its layers).
    """
    why = (
        "has no nn.Linear classifier for CAM; CAM needs global average pooling + a linear layer, "
        "use 'gradcam' instead"
    )
    return _last_or_explain(model, list_layers(model, ("linear",)), why)


def _last_or_explain(model: nn.Module, names: Sequence[str], why: str) -> str:
    """The last of ``names``; none: a ``ValueError`` saying ``why`` and listing the model's first 40
    conv/activation/linear/norm layers, to name one instead."""
    if not names:
        layers = ", ".join(list_layers(model, ("conv", "activation", "linear", "norm"))[:40])
        raise ValueError(f"{type(model).__name__} {why} (layers: {layers or 'none'})")
    return names[-1]


def _hooked_forward(
    model: nn.Module, x: torch.Tensor, hooks: Sequence[tuple[nn.Module, Callable[..., Any]]]
) -> None:
    """One no-grad forward pass of ``x`` with temporary forward hooks."""
    with forward_hooks(hooks), torch.no_grad():
        model(x)


def _is_global_pool(module: nn.Module, out: Any) -> bool:
    """Whether this call pooled a whole map into one value per channel (a 1 x 1 output)."""
    return (
        isinstance(module, _GLOBAL_POOL_TYPES)
        and isinstance(out, torch.Tensor)
        and out.dim() in (3, 4)
        and out.shape[2:].numel() == 1
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

    On ``(N, C, L)`` signals the same rule holds for ``(N, C, l)`` outputs (a 1-D net's maps,
    longer than 1 preferred, never longer than the signal).
    """
    rank = x.dim()
    height, width = (1, x.shape[-1]) if rank == 3 else x.shape[-2:]
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
                and out.dim() == rank
                and out.is_floating_point()
                and (rank == 3 or out.shape[-2] <= height)
                and out.shape[-1] <= width
            ):
                if out.shape[2:].numel() > 1:
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
        x: ``(N, C, H, W)`` example input (only the first image is used), or ``(N, C, L)``
            signals: then the last module with an ``(N, C, l)`` output, ``l > 1`` if any is.
        classifier: name of the ``nn.Linear`` classifier (default: the last one registered).

    Raises:
        ValueError: if no module outputs a spatial map; the message says to pass ``layer=``.

    Example:
        >>> default_gradcam_layer(torchvision.models.resnet18(), torch.randn(1, 3, 224, 224))
        'layer4.1.relu'
        >>> default_gradcam_layer(torchvision.models.convnext_tiny(), torch.randn(1, 3, 224, 224))
        'features'
    """
    if x.dim() != 3:  # CAM layers are 2-D feature maps; a 1-D net's default is its last map
        try:
            return find_cam_layer(model, x, classifier)
        except ValueError:
            pass  # no GAP + linear head: fall back to the last spatial map
    with isolated(model):
        found = _last_spatial_layer(model, model_input(model, x)[:1])
    if found is None:
        shape = "(N, C, l)" if x.dim() == 3 else "(N, C, H, W)"
        raise ValueError(
            f"no module of {type(model).__name__} outputs a spatial {shape} feature map "
            "(before any global pooling) in the forward pass, so there is no default Grad-CAM "
            "layer; pass `layer=` naming a module with such an output"
        )
    return found


def linear_classifier(model: nn.Module, classifier: str | None) -> tuple[str, nn.Linear]:
    """``(name, module)`` of the CAM classifier: ``classifier``, or the last ``nn.Linear``.

    Raises:
        ValueError: if there is no ``nn.Linear`` or the name is unknown.
        TypeError: if ``classifier`` names another kind of module.
    """
    name = last_linear_layer(model) if classifier is None else classifier
    module = resolve_layer(model, name)
    if not isinstance(module, nn.Linear):
        linears = ", ".join(list_layers(model, ("linear",))) or "none"
        raise TypeError(
            f"CAM `classifier` must name an nn.Linear, but {name!r} is a {type(module).__name__} "
            f"(nn.Linear layers: {linears})"
        )
    return name, module


def static_channels(module: nn.Module) -> int | None:
    """Output channels of a module when its type tells (conv, BatchNorm), else ``None``: checked
    against the classifier without running the model."""
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
    cls_name, linear = linear_classifier(model, classifier)
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
    finite = target[torch.isfinite(target)]  # a NaN image must not make the tolerance NaN
    scale = max(float(finite.abs().max()), 1e-6) if finite.numel() else 1.0
    matched: list[tuple[str, int, bool, int, bool]] = []  # name, call, leaf, position, 1 x 1
    for name, call, leaf, dtype, out, at in seen:
        mean = out.mean(dim=(2, 3))
        tol = _tolerance(dtype, feat_dtype)
        if mean.shape == target.shape and torch.allclose(
            mean, target, rtol=tol, atol=tol * scale, equal_nan=True
        ):
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

    The *last conv layer* is the wrong CAM layer whenever BatchNorm or a ReLU follows it (CAM is
    only defined on the map that is pooled), and module registration order need not be forward
    order, so the layer is found by running ``x[:1]`` once and checking, for every module, whether
    the spatial mean of its output equals the classifier's input (to the rounding of the model's
    dtype: bfloat16 and float16 models pool with a relative error of about ``2**-8`` and
    ``2**-11``). The last such
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
        x0 = model_input(model, x)[:1]
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
    cls_name, linear = linear_classifier(model, classifier)
    channels = static_channels(resolve_layer(model, ref))
    if channels is not None and channels != linear.in_features:
        raise cam_channel_mismatch(str(ref), channels, cls_name, linear.in_features)
    with isolated(model):
        x0 = model_input(model, x)[:1]
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


def cam_channel_mismatch(layer: str, channels: int, cls_name: str, in_features: int) -> ValueError:
    """The error for a CAM layer whose channel count is not the classifier's ``in_features``."""
    return ValueError(
        f"CAM at layer {layer!r} is undefined: it has {channels} channels but classifier "
        f"{cls_name!r} takes {in_features} features; name the feature map that is globally "
        "average-pooled into the classifier, or use grad_cam ('gradcam'), which works for any "
        "conv layer"
    )
