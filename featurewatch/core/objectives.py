"""Objectives: what a rendered image should make the network do, as small composable values.

An :class:`Objective` maps the activations captured in one forward pass to one value *per batch
element*; the render loop *maximizes* it (Lucid's convention), so ``-channel(layer, 3)`` renders a
negative image, one that silences channel 3. Objectives add, subtract, and scale by numbers;
combining two unions the layers they need, so the render loop hooks only those layers and stops
the forward pass right after the deepest one.

A *batched* objective gives every batch element its own unit: ``channel("features.3", range(16))``
makes element ``i`` maximize channel ``i``, so a whole layer renders in one batch. A plain
objective (one unit) applies to every element alike. Combining a batched objective with a plain
one broadcasts the plain one; two batched objectives must have the same batch size.

Layers are named as in :mod:`featurewatch.core.layers` (``"features.3"``, ``"layer1.0.relu@0"``);
the empty name ``""`` (:data:`OUTPUT`) is the model's output, used by :func:`class_logit`.

Example:
    >>> obj = channel("layer3", 5) - 0.5 * channel("layer3", 7)   # channel 5 but not channel 7
    >>> batched = channel("layer3", range(16))                     # 16 images, one per channel

References:
    Olah et al., "Feature Visualization", Distill 2017; Mordvintsev et al., "Inceptionism", 2015.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch

from featurewatch.core.layers import parse_layer
from featurewatch.core.validation import check_int, check_positive_float, out_of_range_message

__all__ = [
    "CLASS_SCORES",
    "OUTPUT",
    "Objective",
    "as_objective",
    "channel",
    "class_log_probability",
    "class_logit",
    "class_score",
    "direction",
    "diverse",
    "diversity",
    "interpolate",
    "layer_l2",
    "neuron",
]

#: Layer name of the model's output (the logits of a classifier).
OUTPUT = ""

Activations = Mapping[str, torch.Tensor]
Check = Callable[[Mapping[str, torch.Size]], None]
Units = int | Sequence[int] | range | torch.Tensor


def _ref(layer: str) -> str:
    return str(parse_layer(layer))


def _where(layer: str) -> str:
    return "the model output" if layer == OUTPUT else f"layer {layer!r}"


@dataclass(frozen=True, eq=False, repr=False)
class Objective:
    """A value to maximize, one per batch element.

    An immutable value: the algebra below builds new objectives with :func:`dataclasses.replace`,
    so a field added here is carried through ``+``, ``-``, ``*``, ``/`` and negation without any
    combinator having to know about it.

    Args:
        fn: ``fn(activations, index) -> (len(index),)`` tensor. ``activations`` maps a layer
            reference to its captured output (batch first); ``index`` holds the *global* batch
            positions of the elements present (the render loop renders in chunks), which a batched
            objective uses to pick each element's unit.
        layers: layer references ``fn`` reads.
        batch: number of elements of a batched objective (``None``: the same unit for any element).
        name: readable description, used in captions and messages.
        checks: callables validating the objective against ``{layer: output shape}`` (raise
            ``ValueError`` naming what is valid, e.g. the channel range).
        group: the value of an element depends on the other elements of its group (elements
            ``g * group`` to ``(g + 1) * group - 1``, e.g. :func:`diversity`), so a render loop
            that works in chunks must keep groups whole. ``None``: elements are independent.
        reported: the part of this objective that measures the unit, when the rest is a
            regularizer (:func:`diverse`): :func:`~featurewatch.core.render.render` reports its
            values (and judges "could not be excited" by them), not the reward's. ``None``: this
            objective itself. The algebra applies to it too: ``2 * diverse(u, ...)`` reports
            ``2 * u``, ``-diverse(u, ...)`` reports ``-u``, and ``diverse(u, ...) + v`` reports
            ``u + v``.

    Calling ``objective(activations, index=None)`` returns the ``(N,)`` values.
    """

    fn: Callable[[Activations, torch.Tensor], torch.Tensor]
    layers: tuple[str, ...]
    batch: int | None = field(default=None, kw_only=True)
    name: str = field(default="objective", kw_only=True)
    checks: tuple[Check, ...] = field(default=(), kw_only=True)
    group: int | None = field(default=None, kw_only=True)
    reported: Objective | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        check_int("group", self.group, allow_none=True)
        if self.reported is not None and not isinstance(self.reported, Objective):
            raise TypeError(
                f"`reported` must be an Objective or None, got {type(self.reported).__name__}"
            )
        # normalized here, so that every construction (and every replace()) holds the same form
        layers = tuple(dict.fromkeys(_ref(la) for la in self.layers))
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "checks", tuple(self.checks))

    def __call__(self, activations: Activations, index: torch.Tensor | None = None) -> torch.Tensor:
        if index is None:
            n = next(iter(activations.values())).shape[0] if self.layers else 1
            index = torch.arange(n)
        out = self.fn(activations, index)
        if out.dim() != 1 or out.shape[0] != index.shape[0]:
            raise ValueError(
                f"objective {self.name!r} must give one value per batch element "
                f"({index.shape[0]}), got shape {tuple(out.shape)}"
            )
        return out

    def check(self, shapes: Mapping[str, torch.Size]) -> None:
        """Validate against the output shapes of the layers (``{ref: shape}``)."""
        for check in self.checks:
            check(shapes)

    def __repr__(self) -> str:
        group = f", group={self.group}" if self.group is not None else ""
        return f"Objective({self.name}, layers={list(self.layers)}, batch={self.batch}{group})"

    # ------------------------------------------------------------------ algebra
    def _map(
        self, op: Callable[[torch.Tensor], torch.Tensor], name: Callable[[str], str]
    ) -> Objective:
        """``op`` applied to the values (of the reported part too); every other field kept."""
        fn = self.fn
        return replace(
            self,
            fn=lambda acts, idx: op(fn(acts, idx)),
            name=name(self.name),
            reported=None if self.reported is None else self.reported._map(op, name),
        )

    def _combine(
        self, other: Objective, op: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], sym: str
    ) -> Objective:
        if self.batch is not None and other.batch is not None and self.batch != other.batch:
            raise ValueError(
                f"cannot combine batched objectives of different sizes: {self.name!r} has "
                f"{self.batch} elements, {other.name!r} has {other.batch}"
            )
        a, b = self, other
        reported = None
        if a.reported is not None or b.reported is not None:  # the unit parts, combined alike
            reported = a.unit_part()._combine(b.unit_part(), op, sym)
        return replace(
            a,
            fn=lambda acts, idx: op(a.fn(acts, idx), b.fn(acts, idx)),
            layers=a.layers + b.layers,
            batch=a.batch if a.batch is not None else b.batch,
            name=f"({a.name} {sym} {b.name})",
            checks=a.checks + b.checks,
            group=_joint_group(a, b),
            reported=reported,
        )

    def unit_part(self) -> Objective:
        """What :func:`~featurewatch.core.render.render` reports: ``reported``, else ``self``."""
        return self if self.reported is None else self.reported

    def __add__(self, other: Objective | float) -> Objective:
        if isinstance(other, numbers.Real):
            c = float(other)
            return self._map(lambda v: v + c, lambda n: f"({n} + {c:g})")
        return self._combine(_need(other, "+"), torch.add, "+")

    def __radd__(self, other: Objective | float) -> Objective:
        if isinstance(other, numbers.Real) and float(other) == 0.0:
            return self  # sum([...]) starts at 0
        return self.__add__(other)

    def __sub__(self, other: Objective | float) -> Objective:
        if isinstance(other, numbers.Real):
            return self + (-float(other))
        return self._combine(_need(other, "-"), torch.sub, "-")

    def __rsub__(self, other: float) -> Objective:
        return (-self) + other

    def __neg__(self) -> Objective:
        return self._map(torch.neg, lambda n: f"-{n}")

    def __mul__(self, factor: float) -> Objective:
        if not isinstance(factor, numbers.Real) or isinstance(factor, bool):
            raise TypeError(
                f"an objective can be multiplied by a number, got {type(factor).__name__}"
            )
        f = float(factor)
        return self._map(lambda v: v * f, lambda n: f"{f:g}*{n}")

    __rmul__ = __mul__

    def __truediv__(self, divisor: float) -> Objective:
        if not isinstance(divisor, numbers.Real) or isinstance(divisor, bool):
            raise TypeError(
                f"an objective can be divided by a number, got {type(divisor).__name__}"
            )
        if float(divisor) == 0.0:
            raise ValueError("cannot divide an objective by zero")
        f = 1.0 / float(divisor)
        return self._map(lambda v: v * f, lambda n: f"{n}/{float(divisor):g}")


def _joint_group(a: Objective, b: Objective) -> int | None:
    """The group of an objective built from ``a`` and ``b``: chunks aligned to the least common
    multiple keep the groups of both whole."""
    return math.lcm(a.group or 1, b.group or 1) if (a.group or b.group) else None


def _need(other: object, sym: str) -> Objective:
    if not isinstance(other, Objective):
        raise TypeError(f"unsupported operand for {sym}: Objective and {type(other).__name__}")
    return other


def as_objective(obj: Objective | Callable[[Activations, torch.Tensor], torch.Tensor]) -> Objective:
    """Return ``obj`` if it is an :class:`Objective`; raise ``TypeError`` otherwise."""
    if isinstance(obj, Objective):
        return obj
    raise TypeError(
        "expected an Objective (e.g. featurewatch.core.objectives.channel('layer', 0)), got "
        f"{type(obj).__name__}"
    )


# ---------------------------------------------------------------------- helpers
def _units(units: Units, what: str) -> tuple[torch.Tensor, bool]:
    """``(indices, batched)`` for an int or a sequence of ints."""
    if isinstance(units, bool):
        raise TypeError(f"`{what}` must be an int or a sequence of ints, got bool")
    if isinstance(units, numbers.Integral):
        if int(units) < 0:
            raise ValueError(f"`{what}` must be non-negative, got {int(units)}")
        return torch.tensor([int(units)]), False
    if isinstance(units, torch.Tensor):
        values = units.flatten().tolist()
    elif isinstance(units, Iterable) and not isinstance(units, (str, bytes)):
        values = list(units)
    else:
        raise TypeError(
            f"`{what}` must be an int or a sequence of ints, got {type(units).__name__}"
        )
    if not values:
        raise ValueError(f"`{what}` must not be empty")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or int(v) < 0:
            raise ValueError(f"`{what}` must hold non-negative ints, got {v!r} in {values!r}")
    return torch.tensor([int(v) for v in values]), True


def _pick(units: torch.Tensor, batched: bool, index: torch.Tensor) -> torch.Tensor:
    # clone: the objective may have been built under torch.inference_mode
    return (units[index.cpu()] if batched else units.expand(index.shape[0])).clone()


def _check_units(layer: str, units: torch.Tensor, kind: str) -> Check:
    def check(shapes: Mapping[str, torch.Size]) -> None:
        shape = shapes[layer]
        if len(shape) < 2:
            raise ValueError(
                f"{_where(layer)} has output shape {tuple(shape)}; expected (N, C, ...) to pick "
                f"{kind}s"
            )
        bad = [int(u) for u in units if int(u) >= shape[1]]
        if bad:
            raise ValueError(out_of_range_message(bad[0], shape[1], layer=layer, kind=kind))

    return check


def _spatial_mean(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).mean(1) if t.dim() > 1 else t


def _units_name(units: torch.Tensor, batched: bool) -> str:
    if not batched:
        return str(int(units[0]))
    vals = units.tolist()
    return f"[{', '.join(map(str, vals[:4]))}{', ...' if len(vals) > 4 else ''}]"


# ---------------------------------------------------------------------- primitives
def channel(layer: str, units: Units) -> Objective:
    """Mean activation of a channel over all positions (Olah et al., 2017).

    Args:
        layer: layer reference; its output is ``(N, C, H, W)`` (or ``(N, C)``).
        units: a channel index, or a sequence of them for a batched objective (element ``i``
            maximizes ``units[i]``).

    Example:
        >>> channel("features.3", 5); channel("layer1", range(16))
    """
    ref = _ref(layer)
    idx, batched = _units(units, "channel")

    def fn(acts: Activations, index: torch.Tensor) -> torch.Tensor:
        a = acts[ref]
        c = _pick(idx, batched, index).to(a.device)
        rows = torch.arange(a.shape[0], device=a.device)
        return _spatial_mean(a[rows, c])

    return Objective(
        fn,
        [ref],
        batch=len(idx) if batched else None,
        name=f"channel({ref!r}, {_units_name(idx, batched)})",
        checks=[_check_units(ref, idx, "channel")],
    )


def neuron(layer: str, units: Units, y: int | None = None, x: int | None = None) -> Objective:
    """Activation of one channel at one position (default: the centre of the map).

    Args:
        layer: layer reference with ``(N, C, H, W)`` output.
        units: channel index or a sequence (batched).
        y, x: position in the feature map; ``None`` = ``H // 2`` / ``W // 2`` of the actual map.
    """
    ref = _ref(layer)
    idx, batched = _units(units, "channel")

    def fn(acts: Activations, index: torch.Tensor) -> torch.Tensor:
        a = acts[ref]
        if a.dim() != 4:
            raise ValueError(
                f"neuron() needs an (N, C, H, W) output at {_where(ref)}, got {tuple(a.shape)}"
            )
        yy = a.shape[2] // 2 if y is None else y
        xx = a.shape[3] // 2 if x is None else x
        c = _pick(idx, batched, index).to(a.device)
        rows = torch.arange(a.shape[0], device=a.device)
        return a[rows, c, yy, xx]

    def check_pos(shapes: Mapping[str, torch.Size]) -> None:
        shape = shapes[ref]
        if len(shape) != 4:
            raise ValueError(
                f"neuron() needs an (N, C, H, W) output at {_where(ref)}, got shape {tuple(shape)}"
            )
        for name, v, n in (("y", y, shape[2]), ("x", x, shape[3])):
            if v is not None and not 0 <= v < n:
                raise ValueError(
                    f"neuron({ref!r}): {name}={v} out of range for a {shape[2]}x{shape[3]} map "
                    f"(valid: 0..{n - 1})"
                )

    pos = "centre" if y is None and x is None else f"y={y}, x={x}"
    return Objective(
        fn,
        [ref],
        batch=len(idx) if batched else None,
        name=f"neuron({ref!r}, {_units_name(idx, batched)}, {pos})",
        checks=[_check_units(ref, idx, "channel"), check_pos],
    )


def layer_l2(layer: str) -> Objective:
    """Mean squared activation of a whole layer: the DeepDream objective (Mordvintsev et al.,
    2015)."""
    ref = _ref(layer)

    def fn(acts: Activations, index: torch.Tensor) -> torch.Tensor:
        return acts[ref].pow(2).flatten(1).mean(1)

    return Objective(fn, [ref], name=f"layer_l2({ref!r})")


def _class_objective(classes: Units, name: str, score: Callable[..., torch.Tensor]) -> Objective:
    """An objective of the model output's scores ``(N, classes)`` at each element's class."""
    idx, batched = _units(classes, "class")

    def fn(acts: Activations, index: torch.Tensor) -> torch.Tensor:
        a = acts[OUTPUT]
        if a.dim() != 2:
            a = a.flatten(1)
        c = _pick(idx, batched, index).to(a.device)
        return score(a)[torch.arange(a.shape[0], device=a.device), c]

    def check(shapes: Mapping[str, torch.Size]) -> None:
        shape = shapes[OUTPUT]
        n = int(torch.Size(shape[1:]).numel())
        bad = [int(u) for u in idx if int(u) >= n]
        if bad:
            raise ValueError(out_of_range_message(bad[0], n))

    return Objective(
        fn,
        [OUTPUT],
        batch=len(idx) if batched else None,
        name=f"{name}({_units_name(idx, batched)})",
        checks=[check],
    )


def class_logit(classes: Units) -> Objective:
    """Pre-softmax score of a class at the model output (Simonyan et al., 2014, class model).

    Args:
        classes: a class index or a sequence of them (batched: element ``i`` maximizes
            ``classes[i]``).
    """
    return _class_objective(classes, "class_logit", lambda a: a)


def class_log_probability(classes: Units) -> Objective:
    """Log-softmax of a class at the model output: its score minus the log-sum-exp of all.

    Unlike the raw logit it falls when other classes rise too, so it does not reward evidence
    that several classes share (a loop that raises the logits of 0, 6, 8 and 9 alike). It is
    bounded by 0 and its gradient fades once the class is certain.

    Args:
        classes: as in :func:`class_logit`.
    """
    return _class_objective(
        classes, "class_log_probability", lambda a: torch.log_softmax(a.float(), dim=1)
    )


#: The class scores a class model image can maximize (see :func:`class_score`).
CLASS_SCORES = ("logit", "log_probability", "logit+log_probability")


def class_score(classes: Units, score: str = "logit+log_probability") -> Objective:
    """The objective of a class model image: ``"logit"`` (Simonyan et al.'s pre-softmax score),
    ``"log_probability"`` (:func:`class_log_probability`), or their sum (default).

    The sum keeps the logit's push for evidence of the class and subtracts what the other classes
    gain. It was chosen on one trained digits CNN (the logit: 9 of 10 classes classified as their
    own at each of 3 seeds; the sum: 10) and checked on networks kept aside
    (tests/core/_heldout.py):
    a BatchNorm CNN (logit 8-9 of 10, sum 10 of 10), a tanh LeNet, an MLP and a strided GELU CNN
    on the digits (10 of 10 with either), and a faces-vs-non-faces CNN on other data (2 of 2).

    Raises:
        ValueError: for another ``score``.
    """
    if score == "logit":
        return class_logit(classes)
    if score == "log_probability":
        return class_log_probability(classes)
    if score == "logit+log_probability":
        return class_logit(classes) + class_log_probability(classes)
    raise ValueError(f"`score` must be one of {', '.join(map(repr, CLASS_SCORES))}, got {score!r}")


def direction(layer: str, vectors: torch.Tensor | Sequence[float]) -> Objective:
    """Mean over positions of the dot product of the activation vector with a direction.

    Args:
        layer: layer reference with ``(N, C, ...)`` output.
        vectors: ``(C,)`` direction, or ``(B, C)`` for a batched objective (one per element).
    """
    ref = _ref(layer)
    vec = torch.as_tensor(vectors, dtype=torch.float32)
    if vec.dim() not in (1, 2):
        raise ValueError(f"`vectors` must be (C,) or (B, C), got shape {tuple(vec.shape)}")
    batched = vec.dim() == 2

    def fn(acts: Activations, index: torch.Tensor) -> torch.Tensor:
        a = acts[ref]
        v = (
            (vec[index.cpu()] if batched else vec.expand(a.shape[0], -1))
            .clone()
            .to(a.device, a.dtype)
        )
        v = v.reshape(a.shape[0], a.shape[1], *([1] * (a.dim() - 2)))
        return _spatial_mean((a * v).sum(1))

    def check(shapes: Mapping[str, torch.Size]) -> None:
        shape = shapes[ref]
        if len(shape) < 2 or shape[1] != vec.shape[-1]:
            raise ValueError(
                f"direction has {vec.shape[-1]} components but {_where(ref)} outputs shape "
                f"{tuple(shape)} "
                f"({shape[1] if len(shape) > 1 else '?'} channels)"
            )

    return Objective(
        fn,
        [ref],
        batch=vec.shape[0] if batched else None,
        name=f"direction({ref!r})",
        checks=[check],
    )


def interpolate(a: Objective, b: Objective, weights: Sequence[float]) -> Objective:
    """Batched blend: element ``i`` maximizes ``(1 - w_i) * a + w_i * b``.

    With ``weights = torch.linspace(0, 1, 5)`` this renders a five-step morph from ``a`` to ``b``
    (Olah et al., 2017, "interaction between neurons"). ``a`` and ``b`` must be plain (non-batched).
    """
    a, b = as_objective(a), as_objective(b)
    if a.batch is not None or b.batch is not None:
        raise ValueError("interpolate() blends two single-unit objectives; got a batched one")
    w = torch.as_tensor(
        list(weights) if not isinstance(weights, torch.Tensor) else weights, dtype=torch.float32
    ).flatten()
    if w.numel() == 0:
        raise ValueError("`weights` must not be empty")

    def fn(acts: Activations, index: torch.Tensor) -> torch.Tensor:
        wi = w[index.cpu()].clone()
        va, vb = a.fn(acts, index), b.fn(acts, index)
        wi = wi.to(va.device, va.dtype)
        return (1 - wi) * va + wi * vb

    reported = None
    if a.reported is not None or b.reported is not None:  # the unit parts, blended alike
        reported = interpolate(a.unit_part(), b.unit_part(), w)
    return Objective(
        fn,
        a.layers + b.layers,
        batch=w.numel(),
        name=f"interpolate({a.name}, {b.name})",
        checks=a.checks + b.checks,
        group=_joint_group(a, b),
        reported=reported,
    )


def diversity(layer: str, group: int) -> Objective:
    """How different an element's style is from the other elements of its group (Lucid's diversity).

    One optimized image shows one way to excite a unit; a unit that responds to several things
    (a dog's head *and* a wheel, say) hides the others. Rendering a group of images per unit and
    rewarding them for differing shows more facets (Olah et al., 2017, "Diversity"). The style of
    an element is the Gram matrix of its activations at ``layer`` (channel co-occurrences,
    position-free, as in style transfer); the value of element ``i`` is minus the mean cosine
    similarity of its Gram matrix with those of the other members of its group, so it lies in
    ``[-1, 1]`` and maximizing it pushes the group apart. Elements ``g * group`` to
    ``(g + 1) * group - 1`` form group ``g``; :func:`render` keeps groups in one chunk.

    Add it to a unit objective with a weight, or use :func:`diverse`, which scales it to the unit's
    activation so one weight works at every layer and every stage of training.

    Args:
        layer: layer reference whose activations define the style (often the unit's own layer).
        group: images per group (per unit), ``>= 2`` to have any effect.

    Example:
        >>> obj = channel("layer3", [5, 5, 5, 5]) + 2.0 * diversity("layer3", 4)
    """
    ref = _ref(layer)
    check_int("group", group)

    def fn(acts: Activations, index: torch.Tensor) -> torch.Tensor:
        a = acts[ref]
        f = a.reshape(a.shape[0], a.shape[1], -1).float()  # (n, C, L)
        gram = torch.bmm(f, f.transpose(1, 2)) / f.shape[2]
        style = torch.nn.functional.normalize(gram.flatten(1), dim=1, eps=1e-12)
        similarity = style @ style.T  # (n, n) cosine similarities
        gid = torch.div(index.to(a.device), group, rounding_mode="floor")
        peers = (gid[:, None] == gid[None, :]) & ~torch.eye(
            len(gid), dtype=torch.bool, device=a.device
        )
        count = peers.sum(1).clamp(min=1)
        return -(similarity * peers).sum(1) / count

    return Objective(fn, [ref], name=f"diversity({ref!r}, {group})", group=group)


def diverse(objective: Objective, layer: str, group: int, weight: float = 1.0) -> Objective:
    """``objective`` plus ``weight`` x :func:`diversity`, scaled to the objective's own size.

    A fixed weight on :func:`diversity` (a number in ``[-1, 1]``) means something different at every
    layer and every epoch, because a unit's activation grows by orders of magnitude as the network
    trains. Here element ``i`` maximizes ``v_i + weight * |v_i| * d_i``, with ``|v_i|`` held
    constant (no gradient) within a step: the diversity reward is always ``weight`` times the
    current activation, so ``weight=1`` trades about as much activation for diversity at epoch 0 as
    at epoch 50. :func:`~featurewatch.core.render.render` reports the values of ``objective`` alone
    (``reported``), so "could not be excited" still means the unit.

    Args:
        objective: usually a batched unit objective with each unit repeated ``group`` times in a
            row, e.g. ``channel(layer, [3, 3, 3, 7, 7, 7])`` with ``group=3``.
        layer: where the style is measured (see :func:`diversity`).
        group: images per unit.
        weight: strength of the diversity reward, ``>= 0`` (0 returns ``objective`` itself).
    """
    objective = as_objective(objective)
    check_positive_float("weight", weight, allow_zero=True)
    if float(weight) == 0.0:
        return objective
    div = diversity(layer, group)
    w = float(weight)

    def fn(acts: Activations, index: torch.Tensor) -> torch.Tensor:
        v = objective.fn(acts, index)
        return v + w * v.detach().abs() * div.fn(acts, index).to(v.dtype)

    return Objective(
        fn,
        objective.layers + div.layers,
        batch=objective.batch,
        name=f"diverse({objective.name}, {w:g})",
        checks=objective.checks,
        group=math.lcm(objective.group or 1, group),
        reported=objective.unit_part(),
    )
