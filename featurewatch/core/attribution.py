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
  No backward pass; for such networks Grad-CAM is its positive part divided by the number of
  feature-map positions (at the feature map's resolution, before upsampling).

Scores are the model's *pre-softmax* outputs (logits): gradients of a softmax probability also
depend on every other class and vanish once the network is confident. :func:`occlusion` uses the
softmax probability by default (the quantity Zeiler & Fergus plotted; ``output="logit"`` switches).
A model whose ``forward`` returns more than the logits (a tuple such as ``(logits, features)``, a
dict such as ``{"logits": ...}``) is supported through ``output_key``: an index, a key, or a
function of the output that returns the ``(N, classes)`` logits.

The default Grad-CAM layer and the CAM layer are found by running the network once
(:mod:`featurewatch.core.cam_layers`); targets and the logits inside a model's output are read by
:mod:`featurewatch.core.outputs`.

Model hygiene: every function runs inside :func:`~featurewatch.core.hygiene.isolated` (eval mode,
no BatchNorm statistics updated, train flags and ``requires_grad`` restored), differentiates with
``torch.autograd.grad`` with respect to the input or a captured activation only (no parameter
``.grad`` is ever touched), and removes every hook in a ``finally``. The per-image maps assume the
network treats the images of a batch independently, which is true in eval mode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from featurewatch.core.batching import BACKWARD_PIXELS, FORWARD_PIXELS, bounded_batch
from featurewatch.core.cam_layers import (
    cam_channel_mismatch,
    default_gradcam_layer,
    find_cam_layer,
    linear_classifier,
    static_channels,
)
from featurewatch.core.hygiene import isolated
from featurewatch.core.images import (
    NONFINITE_RGB,
    colorize,
    scale_each,
    to_display_channels,
)
from featurewatch.core.layers import capture, list_layers, parse_layer, resolve_layer
from featurewatch.core.outputs import (
    OutputKey,
    Target,
    check_class_range,
    check_output_key,
    class_scores,
    model_input,
    resolve_target,
    score_of,
    take,
    target_tensor,
)
from featurewatch.core.validation import check_int, check_positive_float

# The methods only: targets and output keys live in featurewatch.core.outputs, the choice of a
# CAM / Grad-CAM layer in featurewatch.core.cam_layers.
__all__ = [
    "cam",
    "feature_map",
    "grad_cam",
    "map_shape",
    "occlusion",
    "occlusion_masks",
    "occlusion_windows",
    "overlay",
    "saliency",
]


def map_shape(x: torch.Tensor) -> tuple[int, ...]:
    """The shape of the maps of a batch: the input's without the channel axis.

    ``(N, C, H, W)`` images give ``(N, H, W)``, ``(N, C, L)`` signals ``(N, L)``, ``(N, F)``
    feature vectors ``(N, F)`` (every feature is a position).
    """
    return tuple(x.shape) if x.dim() == 2 else (x.shape[0], *x.shape[2:])


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

    Per pixel of an image, per time step of a 1-D signal (the maximum over its channels), per
    feature of a feature vector.

    With ``smooth > 0`` this is SmoothGrad (Smilkov et al., 2017): the saliency maps of ``smooth``
    noisy copies of each image are averaged, which removes most of the gradient's high-frequency
    noise. Noise is Gaussian with standard deviation ``noise * (max(x_i) - min(x_i))`` per image
    (the paper's "noise level" as a fraction of the input range) and is drawn only from a private
    generator, never the global RNG, one ``(smooth, C, H, W)`` block per image in order, so the
    result does not depend on ``batch_size``.

    Args:
        model: classifier returning ``(N, classes)`` logits (or see ``output_key``).
        x: ``(N, C, H, W)`` images, ``(N, C, L)`` signals or ``(N, F)`` feature vectors,
            normalized like the model's inputs.
        target: class per input (int, sequence or ``(N,)`` tensor), or a function of the output
            giving one score per input (:data:`~featurewatch.core.outputs.ScoreFn`).
        smooth: number of noisy copies per image (0: plain gradient).
        noise: noise standard deviation as a fraction of each image's value range.
        generator: private generator for the noise (default: a new one seeded with 0, so
            repeated calls give the same map).
        batch_size: the most images (noisy copies) per forward/backward pass; fewer for large
            images (:data:`~featurewatch.core.batching.BACKWARD_PIXELS`).
        output_key: where the logits are in the model's output (:data:`OutputKey`): ``None`` when
            ``forward`` returns them, an index (``0`` for ``(logits, features)``), a dict key
            (``"logits"``) or a function of the output.

    Returns:
        Non-negative maps on the model's device, of the input's shape without the channel axis:
        ``(N, H, W)``, ``(N, L)`` or ``(N, F)``.

    Example:
        >>> maps = saliency(model, images, target=3, smooth=16)
    """
    check_output_key(output_key)
    check_int("smooth", smooth, 0)
    check_int("batch_size", batch_size)
    check_positive_float("noise", noise, allow_zero=True)  # a fraction of the input range
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"`generator` must be a torch.Generator or None, got {type(generator).__name__}"
        )
    with isolated(model):
        x0 = model_input(model, x)
        n = x0.shape[0]
        t = resolve_target(target, n, x0.device)
        batch_size = bounded_batch(batch_size, x0.shape[1:], BACKWARD_PIXELS)
        copies = max(1, smooth)
        sigma = None
        gen = generator
        if smooth:
            flat = x0.reshape(n, -1)
            sigma = float(noise) * (flat.amax(1) - flat.amin(1))
            gen = gen if gen is not None else torch.Generator().manual_seed(0)
        total = torch.zeros(map_shape(x0), device=x0.device, dtype=x0.dtype)
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
                per_input = (-1,) + (1,) * (x0.dim() - 1)
                batch = batch + eps.to(batch) * sigma[image].reshape(per_input)
            batch.requires_grad_(True)
            score = score_of(model(batch), take(t, image), output_key)
            (grad,) = torch.autograd.grad(score.sum(), batch)
            magnitude = grad.abs() if x0.dim() == 2 else grad.abs().amax(dim=1)
            total.index_add_(0, image, magnitude)
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


def occlusion_windows(
    shape: Sequence[int], window: int | Sequence[int] | None, stride: int | Sequence[int] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column masks ``(P, H)`` and ``(P, W)`` (bool) of the ``P`` windows :func:`occlusion`
    covers on images of ``shape`` (``(..., H, W)``), with its defaults and checks.

    Window ``p`` covers ``image[..., rows[p]][..., cols[p]]``; the last window of each axis ends
    at the border, so every pixel is covered. A caller can count the forward passes an occlusion
    will cost (``P`` per image) before running it.

    Raises:
        TypeError, ValueError: for a window or stride that is not a positive int or pair, a window
            larger than the image, or a stride larger than the window.
    """
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


def _positive_int(name: str, value: Any, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive int on 1-D inputs, got {value!r}")
    return int(value)


def occlusion_masks(
    shape: Sequence[int], window: int | Sequence[int] | None, stride: int | Sequence[int] | None
) -> torch.Tensor:
    """``(P, *map shape)`` bool masks of the ``P`` windows :func:`occlusion` covers on inputs of
    ``shape`` (the batch's shape), with its defaults and checks.

    Images ``(N, C, H, W)``: the windows of :func:`occlusion_windows`. Signals ``(N, C, L)``:
    intervals of ``window`` time steps (default a quarter of ``L``), every ``stride`` (default half
    the window), the last one ending at the end. Feature vectors ``(N, F)``: ``window`` adjacent
    features (default 1: each feature on its own), every ``stride`` (default: the window).

    Raises:
        TypeError, ValueError: as :func:`occlusion_windows`, or for a window longer than the input.
    """
    if len(shape) == 4:
        rows, cols = occlusion_windows(shape, window, stride)
        return rows[:, :, None] & cols[:, None, :]
    size = int(shape[-1])
    default = 1 if len(shape) == 2 else max(1, size // 4)
    w = _positive_int("window", window, default)
    if w > size:
        raise ValueError(f"`window` {w} is longer than the inputs ({size})")
    s = _positive_int("stride", stride, w if len(shape) == 2 else max(1, w // 2))
    if s > w:
        raise ValueError(
            f"`stride` {s} is larger than `window` {w}: some positions would never be covered; "
            "use a stride of at most the window size"
        )
    starts = torch.tensor(_starts(size, w, s))
    positions = torch.arange(size)
    return (positions >= starts[:, None]) & (positions < starts[:, None] + w)


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

    Every window position is replaced by ``baseline`` in a copy of the image; the drop of the
    target's softmax probability (``output="probability"``, the quantity of the paper, in
    ``[-1, 1]``) or logit (``output="logit"``) relative to the intact image is credited to every
    pixel of the window, and each pixel's value is the mean over the windows that cover it. All
    occluded copies of all images are evaluated together, ``batch_size`` per forward pass.

    Args:
        model: classifier returning ``(N, classes)`` logits.
        x: ``(N, C, H, W)`` images, ``(N, C, L)`` signals or ``(N, F)`` feature vectors,
            normalized like the model's inputs (see :func:`occlusion_masks` for the windows of
            the last two).
        target: class per input, or a function of the output giving one score per input (its
            value is used as it is: ``output`` applies to class targets).
        window: occluding patch size, int or ``(height, width)``. Default: a quarter of the image
            side (4 x 4 windows on a 16 x 16 digit, 56 x 56 on a 224 x 224 photo).
        stride: step between windows, at most the window. Default: half the window (Captum's
            default of 1 costs tens of thousands of forward passes on a photo). The last window
            always touches the border.
        baseline: what covers the window, in the model's input space: a number (``0.0`` is the
            dataset mean for standardized inputs) or a tensor broadcastable to ``x``.
        batch_size: the most occluded copies per forward pass; fewer for large images
            (:data:`~featurewatch.core.batching.FORWARD_PIXELS`).
        output: ``"probability"`` (softmax) or ``"logit"``. Probabilities saturate: a network
            that is sure of its class loses almost nothing when a window is covered (drops of
            ``1e-5``), where the logit still moves.
        output_key: where the logits are in the model's output, as for :func:`saliency`.

    Returns:
        *Signed* maps on the model's device, of the input's shape without the channel axis
        (``(N, H, W)``, ``(N, L)``, ``(N, F)``): positive where covering the region lowers the
        target's score (the region supports the class), negative where it raises it.

    Example:
        >>> maps = occlusion(model, images, target=labels, window=8, stride=4)
    """
    check_int("batch_size", batch_size)
    check_output_key(output_key)
    if output not in ("probability", "logit"):
        raise ValueError(f"`output` must be 'probability' or 'logit', got {output!r}")
    with isolated(model), torch.no_grad():
        x0 = model_input(model, x)
        n = x0.shape[0]
        t = resolve_target(target, n, x0.device)
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
        masks = occlusion_masks(x0.shape, window, stride).to(x0.device)  # (P, *map shape)
        p = masks.shape[0]

        def score(out: Any, chosen: torch.Tensor | Callable[[Any], torch.Tensor]) -> torch.Tensor:
            if not isinstance(chosen, torch.Tensor):  # a score function: its value as it is
                return score_of(out, chosen, output_key).float()
            s = class_scores(out, output_key).float()
            if output == "probability":
                s = s.softmax(dim=1)
            return score_of(s, chosen)

        reference = score(model(x0), t)
        drops = torch.empty(n * p, device=x0.device)
        batch_size = bounded_batch(batch_size, x0.shape[1:], FORWARD_PIXELS)
        for start in range(0, n * p, batch_size):
            k = torch.arange(start, min(start + batch_size, n * p), device=x0.device)
            image, win = k // p, k % p
            mask = masks[win] if x0.dim() == 2 else masks[win][:, None]  # over every channel
            occluded = torch.where(mask, base[image], x0[image])
            drops[k] = reference[image] - score(model(occluded), take(t, image))
        flat = masks.flatten(1).float()  # (P, positions)
        credit = drops.reshape(n, p) @ flat
        coverage = flat.sum(0)
        return (credit / coverage).reshape(map_shape(x0)).to(x0.dtype)


# ---------------------------------------------------------------------- Grad-CAM / CAM
@contextmanager
def _differentiable_capture(model: nn.Module, layer: str) -> Iterator[list[torch.Tensor | None]]:
    """Make ``layer``'s output a leaf we can differentiate against, safe from in-place ops.

    The hook replaces the chosen output by a detached leaf ``A`` (requires grad; no graph below it
    is needed) and hands the network ``A.clone()``: a following ``ReLU(inplace=True)`` or
    ``out += x`` then rewrites the clone, never ``A``, so ``A`` keeps the layer's true values and
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
    return got


def _grid(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    return _pair("grid", value, (1, 1))


def feature_map(
    model: nn.Module,
    layer: str,
    a: torch.Tensor,
    x: torch.Tensor,
    grid: tuple[int, int] | None = None,
) -> torch.Tensor:
    """A layer's output as a ``(N, K, *positions)`` map that Grad-CAM can weight and pool.

    * ``(N, K, h, w)`` conv maps and ``(N, K, l)`` maps of a 1-D net over ``(N, C, L)`` signals are
      used as they are;
    * ``(N, T, D)`` *tokens* (a vision transformer's blocks; any 3-D output when ``x`` is an image,
      or whenever ``grid`` is given) become ``(N, D, h, w)`` on the patch grid: the last ``h * w``
      tokens are the patches (earlier ones - the class token, register tokens - are dropped),
      ``(h, w)`` is ``grid`` or else the largest square grid that fits ``T`` (``T = 197``: 14 x 14
      and one class token).

    Raises:
        ValueError: for outputs that have no positions (``(N, K)`` vectors), or a grid that does
            not fit the tokens.
    """
    if a.dim() == 4:
        return a
    if a.dim() == 3 and grid is None and x.dim() == 3:
        return a
    if a.dim() == 3:
        n, tokens, d = a.shape
        if grid is None:
            side = int(tokens**0.5)
            grid = (side, side)
        h, w = grid
        if h * w > tokens or h * w < 1:
            raise ValueError(
                f"layer {layer!r} outputs {tokens} tokens, which do not hold a {h} x {w} patch "
                "grid; pass `grid=(rows, columns)` of the patch grid"
            )
        patches = a[:, tokens - h * w :]
        return patches.reshape(n, h, w, d).permute(0, 3, 1, 2)
    convs = ", ".join(list_layers(model, ("conv",))[-8:]) or "none"
    raise ValueError(
        f"Grad-CAM needs a layer with positions - (N, C, H, W) or (N, C, L) feature maps, or "
        f"(N, T, D) tokens - but layer {layer!r} outputs shape {tuple(a.shape)}; name a conv "
        f"layer or the activation after it (conv layers: {convs})"
    )


def _spatial(model: nn.Module, layer: str, a: torch.Tensor) -> None:
    if a.dim() != 4:
        convs = ", ".join(list_layers(model, ("conv",))[-8:]) or "none"
        raise ValueError(
            f"Grad-CAM/CAM need a spatial (N, C, H, W) feature map, but layer {layer!r} outputs "
            f"shape {tuple(a.shape)}; name a conv layer or the activation after it (conv layers: "
            f"{convs})"
        )


def _upsample(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``(N, h, w)`` -> ``(N, *size)`` bilinear (the convention of the Grad-CAM paper), or
    ``(N, l)`` -> ``(N, L)`` linear for 1-D maps."""
    mode = "bilinear" if maps.dim() == 3 else "linear"
    return F.interpolate(maps[:, None], size=tuple(size), mode=mode, align_corners=False)[:, 0]


def grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    layer: str | None = None,
    *,
    output_key: OutputKey = None,
    grid: int | Sequence[int] | None = None,
) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al., 2017) at a conv layer, upsampled to the input size.

    With ``A`` the layer's ``(K, h, w)`` output and ``y`` the target's logit, the weights are
    ``w_k = mean_ij dy/dA_kij`` and the map is ``relu(sum_k w_k A_k)`` at the layer's ``h x w``
    resolution (the paper's eq. 2), then bilinearly upsampled to the input for display, as
    pytorch-grad-cam does. The order matters where negative cells border positive ones: a ReLU
    after the upsampling would let the negative cells eat into the interpolated positive region.
    For a global-average-pool + linear network ``sum_k w_k A_k`` is the low-resolution CAM map
    divided by ``h * w``, so ``grad_cam == upsample(relu(cam_lowres)) / (h * w)``. Deeper layers
    are more class-specific but coarser.

    The same on a 1-D net (``(N, C, L)`` signals, ``(N, K, l)`` maps, linear upsampling) and on a
    vision transformer's ``(N, T, D)`` tokens, laid out on the patch grid (:func:`feature_map`;
    pytorch-grad-cam's ``reshape_transform``).

    Args:
        model: classifier returning ``(N, classes)`` logits.
        x: ``(N, C, H, W)`` images or ``(N, C, L)`` signals, normalized like the model's inputs.
        target: class per input, or a function of the output giving one score per input.
        layer: module name as in ``model.named_modules()`` (``"name@k"`` for the k-th call of a
            reused module). Default: the network's final feature map, found by running ``x[:1]``
            (:func:`default_gradcam_layer`: the map pooled into the classifier, else the last
            module in forward order with a spatial output).
        output_key: where the logits are in the model's output, as for :func:`saliency`.
        grid: ``(rows, columns)`` of the patch grid of a token layer (default: the largest square
            that fits the tokens; the tokens before the last ``rows * columns`` are dropped).

    Returns:
        ``(N, H, W)`` (or ``(N, L)``) non-negative maps on the model's device.

    Example:
        >>> maps = grad_cam(model, images, target=labels, layer="layer4")
        >>> vit_maps = grad_cam(vit, images, labels, "encoder.layers.encoder_layer_11.ln_1")
    """
    check_output_key(output_key)
    name = default_gradcam_layer(model, x) if layer is None else layer
    parse_layer(name)
    resolve_layer(model, name)
    with isolated(model):
        x0 = model_input(model, x)
        if x0.dim() == 2:
            raise ValueError(
                "Grad-CAM weights the positions of a feature map; feature vectors (N, F) have "
                "none: use saliency or occlusion, which give one value per feature"
            )
        t = resolve_target(target, x0.shape[0], x0.device)
        with _differentiable_capture(model, name) as captured:
            out = model(x0)
        a = _pick_call(model, name, captured)
        score = score_of(out, t, output_key)
        (grad,) = torch.autograd.grad(score.sum(), a, allow_unused=True)
        if grad is None:  # the score does not depend on this layer at all
            grad = torch.zeros_like(a)
        a, grad = feature_map(model, name, a, x0, grid), feature_map(model, name, grad, x0, grid)
        weights = grad.mean(dim=tuple(range(2, a.dim())), keepdim=True)
        maps = (weights * a).sum(dim=1).detach().clamp_min(0)  # ReLU at the layer's resolution
        return _upsample(maps, map_shape(x0)[1:])


def cam(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    layer: str | None = None,
    classifier: str | None = None,
) -> torch.Tensor:
    """Class Activation Mapping (Zhou et al., 2016) for global-average-pool + linear networks.

    ``map = sum_k W[target, k] A_k``: the classifier's row for the target applied to every position
    of the pooled feature map ``A`` (the logit is the spatial mean of this map plus the bias). Only
    a forward pass is needed, and the model's output is never read (so no ``output_key``: a model
    returning ``(logits, features)`` works as is). For other architectures use :func:`grad_cam`.

    On such a network Grad-CAM at the same layer is ``upsample(relu(M)) / (h * w)`` with ``M`` this
    map at the layer's ``h x w`` resolution. The ReLU does not commute with the upsampling, so
    ``relu(cam(...)) / (h * w)`` differs from :func:`grad_cam` where negative cells border positive
    ones.

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
    cls_name, linear = linear_classifier(model, classifier)
    if layer is not None:
        parse_layer(layer)
        channels = static_channels(resolve_layer(model, layer))
        if channels is not None and channels != linear.in_features:
            raise cam_channel_mismatch(layer, channels, cls_name, linear.in_features)
    name = find_cam_layer(model, x, cls_name) if layer is None else layer
    with isolated(model), torch.no_grad():
        x0 = model_input(model, x)
        t = target_tensor(target, x0.shape[0], x0.device)
        check_class_range(t, linear.out_features)
        with capture(model, [name], clone=True) as got:
            model(x0)
        if str(parse_layer(name)) not in got.outputs:
            raise ValueError(
                f"layer {name!r} was not reached in the forward pass of {type(model).__name__}"
            )
        a = got[name]
        _spatial(model, name, a)
        if a.shape[1] != linear.in_features:
            raise cam_channel_mismatch(name, a.shape[1], cls_name, linear.in_features)
        weights = linear.weight.detach()[t].to(a.dtype)  # (N, K)
        maps = torch.einsum("nk,nkhw->nhw", weights, a)
        return _upsample(maps, x0.shape[-2:])


# ---------------------------------------------------------------------- display
def overlay(
    images: torch.Tensor, maps: torch.Tensor, *, cmap: str = "jet", alpha: float = 0.5
) -> torch.Tensor:
    """Blend heatmaps over their images for display.

    Each image is min-max scaled (:func:`~featurewatch.core.images.scale_each`; grayscale is shown
    as grey), each map is clipped at zero (only evidence *for* the class is coloured; occlusion and
    CAM maps are signed) and divided by its own maximum, so colours compare regions within an image,
    not across images. A non-finite map value (NaN, +-Inf; say a layer diverged) is painted
    :data:`~featurewatch.core.images.NONFINITE_RGB` (magenta, unblended) and left out of the
    maximum, so the map's finite part is still shown as it is.

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
            f"`maps` must be (N, H, W) matching images {tuple(images.shape)}, got shape "
            f"{tuple(maps.shape)}"
        )
    base = to_display_channels(scale_each(images.detach().cpu()))
    if base.shape[1] == 1:
        base = base.expand(-1, 3, -1, -1)
    raw = maps.detach().float().cpu()
    bad = ~torch.isfinite(raw)  # before clamping, which would turn -Inf into a plain zero
    heat = raw.clamp_min(0)
    peak = torch.where(bad, 0.0, heat).flatten(1).amax(1)  # over the finite values only
    heat = heat / peak.clamp_min(1e-12).reshape(-1, 1, 1)
    out = ((1 - alpha) * base + alpha * colorize(heat, cmap)).clamp(0, 1)
    # a NaN/Inf pixel is pure NONFINITE_RGB, not blended: it must not pass for a heatmap colour
    return torch.where(bad[:, None], torch.tensor(NONFINITE_RGB).reshape(1, 3, 1, 1), out)
