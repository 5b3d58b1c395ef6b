"""Why an attribution map shows no location, and what would: advice checked on the model.

A Grad-CAM or CAM map is constant over the image when the layer it is computed at has a 1 x 1
feature map. Whether a larger input would help depends on *why* the map is 1 x 1: a small input
(a stride-32 network on a 32 px image) grows the map when the input grows; a module applied to the
globally pooled vector (ConvNeXt's ``LayerNorm2d`` after ``avgpool``) is 1 x 1 at every input size,
and only naming an earlier layer helps. :func:`layer_advice` tells them apart by running the model,
rather than guessing from the shape: a caption that says "use a larger input" is then right.

Every forward here runs inside :func:`~featurewatch.core.hygiene.isolated` (eval mode, no change to
parameters, gradients, BatchNorm statistics or RNG streams) and under ``torch.no_grad``.

Example:
    >>> maps = grad_cam(model, x, target, "avgpool")  # (N, H, W)
    >>> for i in uniform_maps(maps):
    ...     print(i, layer_advice(model, x[i : i + 1], "avgpool"))
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from featurewatch.core.cam_layers import default_gradcam_layer
from featurewatch.core.hygiene import isolated
from featurewatch.core.layers import capture, parse_layer

__all__ = ["GROWN_SIDE", "layer_advice", "map_size", "uniform_maps"]

#: Side of the larger input that checks whether a 1 x 1 map grows with the input: at least this,
#: and at least twice the probe's side (a stride-32 network's last map is 8 x 8 at 256 px).
GROWN_SIDE = 256


def uniform_maps(maps: torch.Tensor) -> list[int]:
    """Indices of the maps that are positive somewhere and constant: they show no location.

    A layer whose feature map is 1 x 1 gives such Grad-CAM and CAM maps. Constant means equal up to
    a relative tolerance of the dtype (8 machine epsilons, at least 1e-6), so a bfloat16 map that
    is constant in exact arithmetic counts too. Maps with no positive value are not listed (they
    show no evidence at all, which is another caption note).

    Args:
        maps: ``(N, H, W)`` attribution maps.

    Returns:
        The indices ``i`` of the uniform ``maps[i]``, in order.
    """
    tol = max(1e-6, 8 * torch.finfo(maps.dtype).eps) if maps.is_floating_point() else 0.0
    flat = maps.detach().float().flatten(1)
    hi, lo = flat.amax(1), flat.amin(1)
    return [
        i
        for i in range(flat.shape[0])
        if hi[i] > 0 and hi[i] - lo[i] <= tol * max(float(hi[i].abs()), float(lo[i].abs()))
    ]


def map_size(model: nn.Module, x: torch.Tensor, layer: str) -> tuple[int, int] | None:
    """Spatial size ``(h, w)`` of ``layer``'s output for ``x``, or ``None`` if the output is not
    4-D or the forward does not reach the layer.

    One isolated no-grad forward pass. An exception after the layer was reached is ignored: a head
    built for one input size may refuse a larger one, and the layer's size is known by then.

    Args:
        model: the network.
        x: ``(N, C, H, W)`` input (one image is enough).
        layer: layer reference, ``"name"`` or ``"name@k"``.
    """
    ref = str(parse_layer(layer))
    with isolated(model), capture(model, [layer], clone=False) as got, torch.no_grad():
        with contextlib.suppress(Exception):  # any failure: the size is known or it is not
            model(x)
        out = got.outputs.get(ref)
        if out is None or out.dim() != 4:
            return None
        return int(out.shape[-2]), int(out.shape[-1])


def layer_advice(
    model: nn.Module, x: torch.Tensor, layer: str, classifier: str | None = None
) -> str:
    """Why Grad-CAM/CAM at ``layer`` is uniform for ``x``, and what to do about it, in words.

    Checked rather than guessed: "use a larger input" is only said when the layer's map is 1 x 1
    at this input *and* larger at a larger one (a side of :data:`GROWN_SIDE`, or twice the input's,
    at the input's aspect ratio). A map that is 1 x 1 at both sizes works on the pooled vector;
    the advice then names the default Grad-CAM layer (the map entering the global pool) when it
    differs. Up to three isolated forward passes of one image.

    Args:
        model: the network.
        x: ``(1, C, H, W)``: the image whose map is uniform.
        layer: the Grad-CAM/CAM layer, ``"name"`` or ``"name@k"``.
        classifier: the ``nn.Linear`` classifier's name (default: the last one registered), used
            to find the default Grad-CAM layer.

    Returns:
        One sentence for a caption, e.g. ``"layer 'avgpool' outputs a 1x1 map at this 32x32 input
        and still at 256x256 (it works on the pooled vector), so a larger input will not help;
        pass `layer=` naming a feature map computed before the global pool, e.g. 'layer4'
        (the default Grad-CAM layer)"``.
    """
    h, w = int(x.shape[-2]), int(x.shape[-1])
    size = map_size(model, x, layer)
    if size is None:
        return (
            f"pass `layer=` naming a layer whose feature map varies over the image, not {layer!r}"
        )
    if size != (1, 1):
        return (
            f"layer {layer!r} outputs a {size[0]}x{size[1]} map, yet the result is constant over "
            "the image; pass `layer=` naming an earlier layer"
        )
    side = max(GROWN_SIDE, 2 * max(h, w))
    big_h, big_w = side * h // max(h, w), side * w // max(h, w)  # the input's aspect ratio
    big = F.interpolate(x.float(), size=(big_h, big_w), mode="bilinear", align_corners=False)
    grown = map_size(model, big.to(x.dtype), layer)
    if grown is None:  # the model refuses a larger input: only the layer can change
        return (
            f"layer {layer!r}'s feature map is 1x1 at this {h}x{w} input; pass `layer=` naming an "
            "earlier layer with a larger map"
        )
    if grown != (1, 1):
        return (
            f"layer {layer!r}'s feature map is 1x1 at this {h}x{w} input ({grown[0]}x{grown[1]} at "
            f"{big_h}x{big_w}); use a larger input, or pass `layer=` naming an earlier layer with "
            "a larger map"
        )
    try:
        default: str | None = default_gradcam_layer(model, x, classifier)
    except ValueError:
        default = None
    hint = (
        f", e.g. {default!r} (the default Grad-CAM layer)"
        if default is not None and default != layer
        else ""
    )
    return (
        f"layer {layer!r} outputs a 1x1 map at this {h}x{w} input and still at {big_h}x{big_w} (it "
        "works on the pooled vector), so a larger input will not help; pass `layer=` naming a "
        f"feature map computed before the global pool{hint}"
    )
