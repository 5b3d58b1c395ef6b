"""Projections: one unit's activation traced back to the pixels of its input.

The gradient of a unit with respect to the input says which pixels it depends on; the plain
gradient is noisy, so Zeiler & Fergus (2014) and Springenberg et al. (2015) change what flows back
through each rectifier:

* ``"guided"`` - guided backpropagation: only positive gradient, only through units that were on;
* ``"deconvnet"`` - Zeiler & Fergus's deconvnet: ``relu(grad)``, ignoring the forward;
* ``"gradient"`` - the plain gradient (Simonyan et al., 2014).

The rules rewrite the rectifier *modules* (:data:`RULE_MODULE_TYPES`) for the duration of a call, by
replacing their outputs with :func:`~featurewatch.core.hooks.substitute_outputs`, the one output
substitution of the core (also used by the render loop's ReLU-gradient redirect). The forward stops
right after the layer (:func:`~featurewatch.core.calls.layer_reader`).

Example:
    >>> proj = project(model, images, "features.6", channel=3, rule="guided")
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from featurewatch.core.batching import BACKWARD_PIXELS, bounded_batch
from featurewatch.core.calls import layer_reader, resolve_call_counts
from featurewatch.core.hooks import substitute_outputs
from featurewatch.core.hygiene import isolated, model_device_dtype
from featurewatch.core.layers import parse_layer, resolve_layer
from featurewatch.core.units import check_unit_channels, unit_values
from featurewatch.core.validation import check_channel_list, check_images, check_int

__all__ = [
    "PROJECTION_RULES",
    "RULE_MODULE_TYPES",
    "Projection",
    "ProjectionRule",
    "project",
    "project_detailed",
]

ProjectionRule = Literal["guided", "deconvnet", "gradient"]
PROJECTION_RULES: tuple[str, ...] = ("guided", "deconvnet", "gradient")

#: Activation modules a projection rule rewrites: ``nn.ReLU``, ``nn.ReLU6`` and any ``nn.Hardtanh``
#: with ``min_val == 0`` (a capped ReLU), ``nn.LeakyReLU`` with a non-negative slope.
RULE_MODULE_TYPES: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU)


def _rule_params(module: nn.Module) -> tuple[float, float | None] | None:
    """``(negative slope, cap)`` of a rectifier the rules rewrite, or ``None`` for other modules."""
    if isinstance(module, nn.ReLU):
        return 0.0, None
    if isinstance(module, nn.Hardtanh):  # nn.ReLU6 is Hardtanh(0, 6)
        if float(module.min_val) == 0.0 and float(module.max_val) > 0.0:
            return 0.0, float(module.max_val)
        return None
    if isinstance(module, nn.LeakyReLU) and float(module.negative_slope) >= 0.0:
        return float(module.negative_slope), None
    return None


class _RuleReLU(torch.autograd.Function):
    """A rectifier ``f`` (ReLU, capped ReLU, leaky ReLU) whose backward follows a visualization
    rule instead of the chain rule ``grad * f'(x)``:

    * guided backprop (Springenberg et al., 2015): ``relu(grad) * f'(x)`` - only positive
      evidence, only through units that were on (for a ReLU ``f'(x) = [x > 0]``; for ReLU6
      ``[0 < x < 6]``; for a leaky ReLU 1 or the slope);
    * deconvnet (Zeiler & Fergus, 2014): ``relu(grad)`` - the forward is ignored: the deconvnet's
      "unpooling + rectification" reconstructs with a ReLU of its own.

    For guided backprop only the boolean mask ``f(x) > 0`` (and ``f(x) < cap``) computed in the
    forward is saved - neither the input nor the output - so a model that edits either in place
    afterwards (legal in PyTorch for the input, whose ReLU saves its output) is unaffected.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, masked: bool, slope: float, cap: float | None
    ) -> torch.Tensor:
        out = x.clamp_min(0) if slope == 0.0 else F.leaky_relu(x, slope)
        if cap is not None:
            out = out.clamp_max(cap)
        ctx.masked, ctx.slope = masked, slope
        if masked:
            on = out > 0
            if cap is not None:
                on &= out < cap
            ctx.save_for_backward(on)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        out = grad.clamp_min(0)
        if ctx.masked:
            (on,) = ctx.saved_tensors
            off = torch.zeros_like(out) if ctx.slope == 0.0 else out * ctx.slope
            out = torch.where(on, out, off)
        return out, None, None, None


@contextmanager
def _relu_rule(model: nn.Module, rule: str) -> Iterator[list[int]]:
    """While active, every rectifier module's output (see :data:`RULE_MODULE_TYPES`) carries the
    backward of ``rule``. Yields a one-element counter of the module calls rewritten so far.

    The outputs are replaced by :class:`_RuleReLU` applied to the module's input with
    :func:`~featurewatch.core.hooks.substitute_outputs` (in-place modules get a clone, so the input
    survives and the graph of the layer before stays valid; a module called several times in one
    forward is handled call by call; a capture at the module itself sees the rewritten output).
    ``F.relu`` calls cannot be hooked: they keep the plain gradient. ``"gradient"`` installs
    nothing.
    """
    calls = [0]
    if rule == "gradient":
        yield calls
        return
    masked = rule == "guided"
    params = {id(m): p for m in model.modules() if (p := _rule_params(m)) is not None}

    def rewrite(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        slope, cap = params[id(module)]
        return _RuleReLU.apply(x, masked, slope, cap)

    modules = [m for m in model.modules() if id(m) in params]
    with substitute_outputs(modules, rewrite):
        yield calls


def _positions_list(position: Any, n: int) -> list[tuple[int, int] | None]:
    if position is None:
        return [None] * n
    if isinstance(position, torch.Tensor):
        position = position.tolist()
    if (
        isinstance(position, (tuple, list))
        and len(position) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in position)
    ):
        return [(int(position[0]), int(position[1]))] * n
    out = list(position)
    if len(out) != n:
        raise ValueError(
            f"`position` must be None, one (y, x) or one per image ({n}), got {len(out)} entries"
        )
    result: list[tuple[int, int] | None] = []
    for p in out:
        if p is None:
            result.append(None)
            continue
        if not isinstance(p, (tuple, list)) or len(p) != 2:
            raise ValueError(f"each position must be (y, x) or None, got {p!r}")
        result.append((int(p[0]), int(p[1])))
    return result


@dataclass(frozen=True)
class Projection:
    """What :func:`project_detailed` returns.

    Attributes:
        gradients: ``(N, C, H, W)`` float32 projections on the CPU (what :func:`project` returns).
        rule: the rule asked for.
        rule_calls: rectifier-module calls (:data:`RULE_MODULE_TYPES`) the rule rewrote in one
            forward up to the layer (the most over the batches). ``0`` with ``"guided"`` or
            ``"deconvnet"`` means no such module ran - the network uses ``F.relu`` or other
            activations - and ``gradients`` is the plain gradient.
    """

    gradients: torch.Tensor
    rule: str
    rule_calls: int

    @property
    def plain(self) -> bool:
        """``True`` when ``gradients`` is the plain gradient (asked for, or no module rewritten)."""
        return self.rule == "gradient" or self.rule_calls == 0


def project(
    model: nn.Module,
    x: torch.Tensor,
    layer: str,
    channel: int | Sequence[int],
    position: Any = None,
    *,
    rule: ProjectionRule = "guided",
    batch_size: int = 64,
    call_counts: Mapping[str, int] | None = None,
) -> torch.Tensor:
    """Project one unit's activation per image back to pixel space.

    Element ``i`` is the gradient of ``layer[i, channel[i], y_i, x_i]`` with respect to ``x[i]``,
    taken through every rectifier module (``nn.ReLU``, ``nn.ReLU6``/``nn.Hardtanh(0, m)``,
    ``nn.LeakyReLU``; see :data:`RULE_MODULE_TYPES`) with the chosen rule:

    * ``"guided"`` - guided backpropagation (Springenberg et al., 2015, "Striving for Simplicity"):
      at each rectifier only positive gradient passes, and only where the unit was on in the
      forward pass (``0 < x < 6`` for ReLU6; the slope scales it where a leaky ReLU was off).
      Sharp, positive evidence: the usual choice.
    * ``"deconvnet"`` - Zeiler & Fergus's deconvnet: each rectifier passes ``relu(grad)`` and
      ignores the forward (max-pool "switches" are the ordinary max-pool gradient). Noisier, less
      image-specific; the paper's method.
    * ``"gradient"`` - the plain gradient (Simonyan et al., 2014), signed.

    In-place modules and modules called several times in one forward are handled; ``F.relu``/
    ``torch.relu`` calls in ``forward`` keep the plain gradient. When no rectifier module runs
    before the layer, ``"guided"`` and ``"deconvnet"`` *are* the plain gradient: a ``UserWarning``
    says so (:func:`project_detailed` reports it instead). The forward stops right after
    ``layer``. Gradients are taken with ``torch.autograd.grad`` with respect to the input only,
    so the parameters' ``.grad`` and ``requires_grad`` are untouched.

    Args:
        model: the network (left exactly as it was).
        x: ``(N, C, H, W)`` images as the model takes them.
        layer: layer reference; output ``(N, C, H, W)`` or ``(N, C)``.
        channel: one channel for every image, or one per image.
        position: ``None`` - for each image the position of its channel's maximum (first in
            row-major order on ties); one ``(y, x)``; or one ``(y, x)`` per image (a sequence or an
            ``(N, 2)`` tensor). Must be ``None`` for a 2-D layer.
        rule: ``"guided"``, ``"deconvnet"`` or ``"gradient"``.
        batch_size: the most images per forward/backward, fewer for large images
            (:mod:`~featurewatch.core.batching`); results do not depend on it.
        call_counts: from :func:`layer_call_counts`, to skip the counting forward.

    Returns:
        ``(N, C, H, W)`` float32 projections on the CPU (signed; see :func:`examples_grid` for
        display).

    Raises:
        ValueError: unknown rule or layer, channel or position out of range (listing the valid
            range), mismatched lengths.

    Example:
        >>> proj = project(model, images, "features.6", channel=3, rule="guided")
    """
    result = project_detailed(
        model,
        x,
        layer,
        channel,
        position,
        rule=rule,
        batch_size=batch_size,
        call_counts=call_counts,
    )
    if result.plain and rule != "gradient":
        warnings.warn(
            f"project(rule={rule!r}): no nn.ReLU/ReLU6/LeakyReLU module runs before layer "
            f"{layer!r} in {type(model).__name__} (F.relu calls cannot be rewritten), so the "
            "result is the plain gradient",
            UserWarning,
            stacklevel=2,
        )
    return result.gradients


def project_detailed(
    model: nn.Module,
    x: torch.Tensor,
    layer: str,
    channel: int | Sequence[int],
    position: Any = None,
    *,
    rule: ProjectionRule = "guided",
    batch_size: int = 64,
    call_counts: Mapping[str, int] | None = None,
) -> Projection:
    """:func:`project`, also saying whether the rule was applied at all (never warns).

    Returns:
        A :class:`Projection`: the gradients and how many rectifier-module calls the rule
        rewrote (``0``: the gradients are the plain gradient).

    Example:
        >>> result = project_detailed(model, images, "features.6", channel=3)
        >>> result.gradients.shape, result.plain
        (torch.Size([8, 3, 64, 64]), False)
    """
    check_images("x", x)
    if rule not in PROJECTION_RULES:
        raise ValueError(
            f"`rule` must be one of {', '.join(map(repr, PROJECTION_RULES))}, got {rule!r}"
        )
    check_int("batch_size", batch_size)
    n = x.shape[0]
    chans = check_channel_list("channel", channel)
    if len(chans) == 1:
        chans = chans * n
    if len(chans) != n:
        raise ValueError(f"`channel` must be one int or one per image ({n}), got {len(chans)}")
    positions = _positions_list(position, n)
    ref = parse_layer(layer)
    resolve_layer(model, ref)
    results: list[torch.Tensor] = []
    rule_calls = 0
    with isolated(model):
        device, dtype = model_device_dtype(model)
        counts = resolve_call_counts(
            model, model, [ref], x[:1].to(device=device, dtype=dtype), call_counts
        )
        batch_size = bounded_batch(batch_size, x.shape[1:], BACKWARD_PIXELS)
        with _relu_rule(model, rule) as rewritten, layer_reader(model, ref, counts) as read:
            for lo in range(0, n, batch_size):
                hi = min(n, lo + batch_size)
                xi = x[lo:hi].to(device=device, dtype=dtype).clone().requires_grad_(True)
                rewritten[0] = 0
                out = read(xi.clone())  # not the leaf: a first in-place op of the model stays legal
                rule_calls = max(rule_calls, rewritten[0])
                check_unit_channels(str(ref), out, chans[lo:hi])
                units = unit_values(str(ref), out, chans[lo:hi], positions[lo:hi])
                if units.requires_grad:
                    (g,) = torch.autograd.grad(units.sum(), xi)
                else:  # the unit does not depend on the input through autograd (e.g. a constant)
                    g = torch.zeros_like(xi)
                results.append(g.detach().float().cpu())
                del out, units, xi, g
    return Projection(gradients=torch.cat(results), rule=rule, rule_calls=rule_calls)
