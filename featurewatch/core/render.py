"""The render loop: optimize images so that they maximize an objective, without touching the model.

:func:`render` is feature visualization by optimization (Erhan et al., 2009; Simonyan et al., 2014;
Olah et al., 2017) built for use *during training*:

* **hygiene** - everything runs inside :func:`~featurewatch.core.hygiene.isolated`: the model is
  in eval mode (BatchNorm statistics are never updated), its parameters do not require grad (no
  weight-gradient work; ``.grad`` never touched), the global RNG is never drawn from; gradients are
  taken with ``torch.autograd.grad`` with respect to the image parameters only; every hook lives in
  a ``try/finally`` block;
* **speed** - only the layers the objective needs are hooked and the forward pass stops right after
  the deepest one; all units of a batched objective are optimized in one batch (capped by
  ``batch_size`` for memory); a ``time_budget`` bounds the cost per call;
* **reproducibility** - each element has its own seed for its initial image and its own private
  generator for the transforms, so a unit's image depends only on (seed, unit), whether it is
  rendered alone or with the rest of its layer, at every epoch;
* **honesty** - images are rendered at the size asked for (never silently upsampled), and the
  objective value of every final image is returned, so a unit that could not be excited is
  reported (:attr:`RenderResult.weak`) instead of shown as grey noise.

Example:
    >>> from featurewatch.core.objectives import channel
    >>> from featurewatch.core.param import ImageSpec
    >>> spec = ImageSpec(channels=1, size=32)
    >>> result = render(model, channel("features.3", range(8)), spec, steps=64)
    >>> result.images.shape, result.values.shape
    (torch.Size([8, 1, 32, 32]), torch.Size([8]))
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from featurewatch.core.calls import counted_forward
from featurewatch.core.hooks import substitute_outputs
from featurewatch.core.hygiene import isolated, model_device_dtype
from featurewatch.core.images import Normalize, normalizer
from featurewatch.core.layers import (
    LayerNotReachedError,
    StopForward,
    capture,
    find_first_conv,
    not_reached_message,
    parse_layer,
    resolve_layer,
)
from featurewatch.core.objectives import (
    Objective,
    as_objective,
    channel,
    class_score,
    diverse,
    neuron,
)
from featurewatch.core.param import ImageParam, ImageSpec
from featurewatch.core.transforms import Transform, compose, standard_transforms
from featurewatch.core.validation import check_channel_list, check_int, check_positive_float

__all__ = [
    "Normalize",
    "RenderResult",
    "class_model_images",
    "infer_image_channels",
    "objective_forward",
    "render",
    "total_variation",
    "unit_objective",
    "unit_seed",
    "visualize_channels",
]

ParamFactory = Callable[[Sequence[int], torch.device], nn.Module]
Transforms = str | Sequence[Transform] | None


@dataclass
class RenderResult:
    """What :func:`render` returns.

    Attributes:
        images: ``(N, C, H, W)`` float32 images in ``[0, 1]``, on the CPU.
        values: ``(N,)`` objective value of each final image (untransformed); for an objective
            with a ``reported`` part (a unit plus a diversity reward), the value of that part.
        initial_values: ``(N,)`` objective value at the first step (the transformed initial
            noise; the final value when ``steps=0``).
        steps: ``(N,)`` optimization steps each element received (fewer than asked when the
            time budget ran out).
        seconds: wall time of the call.
        budget_exceeded: the time budget cut the optimization short.
    """

    images: torch.Tensor
    values: torch.Tensor
    initial_values: torch.Tensor
    steps: torch.Tensor
    seconds: float
    budget_exceeded: bool

    @property
    def weak(self) -> torch.Tensor:
        """``(N,)`` bool: elements whose objective barely rose above its value on noise (a unit that
        could not be excited, e.g. a dead ReLU channel)."""
        gain = self.values - self.initial_values
        return gain <= 1e-3 * (1.0 + self.initial_values.abs())


def unit_seed(seed: int, unit: int) -> int:
    """Seed of one unit's image: depends only on the call's ``seed`` and the unit index."""
    return (int(seed) * 1_000_003 + int(unit)) % (2**62)


def unit_objective(
    layer: str,
    units: Sequence[int],
    *,
    seed: int = 0,
    unit: str = "channel",
    negative: bool = False,
    variants: int = 1,
    diversity: float = 1.0,
) -> tuple[Objective, list[int]]:
    """The batched objective and seeds that render ``variants`` images of each unit of one layer.

    Image ``i * variants + v`` is variant ``v`` of ``units[i]``. Variant 0 starts from the unit's
    usual noise (:func:`unit_seed`), so ``variants=1`` and the first column of a multi-variant
    render agree; with ``variants > 1`` the variants of a unit are pushed apart by
    :func:`~featurewatch.core.objectives.diverse` (weight ``diversity``) to show several things
    the unit responds to.

    Args:
        layer: layer reference.
        units: channel indices.
        seed: base seed.
        unit: ``"channel"`` (mean over the map) or ``"neuron"`` (the centre position).
        negative: minimize the units instead (the diversity term still rewards differing).
        variants: images per unit, ``>= 1``.
        diversity: weight of the diversity reward when ``variants > 1``.

    Returns:
        ``(objective, seeds)`` for :func:`render`.
    """
    if unit not in ("channel", "neuron"):
        raise ValueError(f"`unit` must be 'channel' or 'neuron', got {unit!r}")
    check_int("variants", variants)
    repeated = [int(u) for u in units for _ in range(variants)]
    # variants differ in the low 32 bits: a CPU generator keeps only those of its seed
    seeds = [unit_seed(seed, u) ^ (v * 0x9E3779B1) for u in units for v in range(variants)]
    objective = channel(layer, repeated) if unit == "channel" else neuron(layer, repeated)
    if negative:
        objective = -objective
    if variants > 1:
        objective = diverse(objective, layer, variants, diversity)
    return objective, seeds


def _transform_seed(seed: int) -> int:
    return (int(seed) * 6_364_136_223_846_793_005 + 1_442_695_040_888_963_407) % (2**62)


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """``(N,)`` mean absolute difference of neighbouring pixels (Mahendran & Vedaldi, 2015)."""
    dy = (images[:, :, 1:, :] - images[:, :, :-1, :]).abs().flatten(1).mean(1)
    dx = (images[:, :, :, 1:] - images[:, :, :, :-1]).abs().flatten(1).mean(1)
    return dx + dy


def infer_image_channels(model: nn.Module) -> int:
    """Input channel count of the model's first convolution (or first ``Linear``/``Conv``-like
    module with ``in_channels``).

    Raises:
        ValueError: if it cannot be inferred; pass ``image_channels`` then.
    """
    try:
        name = find_first_conv(model)
    except ValueError:
        raise ValueError(
            f"cannot infer the image channel count of {type(model).__name__} (no convolution); "
            "pass image_channels="
        ) from None
    return int(model.get_submodule(name).in_channels)


def _transforms(transforms: Transforms, size: tuple[int, int]) -> Transform:
    if transforms is None:
        return compose([])
    if isinstance(transforms, str):
        if transforms == "standard":
            return compose(standard_transforms(size))
        if transforms == "none":
            return compose([])
        raise ValueError(
            "`transforms` must be 'standard', 'none', None or a list of transforms, got "
            f"{transforms!r}"
        )
    if callable(transforms):
        return transforms  # type: ignore[return-value]
    return compose(list(transforms))


class _RedirectedReLU(torch.autograd.Function):
    """ReLU whose gradient, for a batch element that gets no gradient through the ReLU at all,
    still flows where it would *raise* a negative input (Lucid's ``redirected_relu_grad``)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        relu_grad = grad * (x > 0)
        # grad is d(loss)/d(out): grad > 0 at a negative input would push it lower still
        redirected = torch.where((x < 0) & (grad > 0), torch.zeros_like(grad), grad)
        if grad.dim() < 2:
            return relu_grad
        passes = relu_grad.flatten(1).norm(dim=1) > 0
        return torch.where(passes.reshape(-1, *([1] * (grad.dim() - 1))), relu_grad, redirected)


@contextmanager
def _redirect_relus(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Replace the output of every ``nn.ReLU`` module by a :class:`_RedirectedReLU` while active.

    With :func:`~featurewatch.core.hooks.substitute_outputs`: a layer capture at the ReLU itself
    sees the redirected output, and an in-place ReLU gets a copy of its input, so the
    pre-activation survives for the redirect.
    """
    if not enabled:
        yield
        return
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    with substitute_outputs(relus, lambda _m, x: _RedirectedReLU.apply(x)):
        yield


@contextmanager
def objective_forward(
    model: nn.Module,
    objective: Objective,
    example: torch.Tensor,
    norm: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
) -> Iterator[Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]]:
    """Hook the objective's layers for the duration of the block; yield ``evaluate(x, index)``.

    One no-grad forward of ``example[:1]`` counts how often each module runs (to find the *last*
    call of a module used several times) and checks the objective against the output shapes
    (a bad channel index fails here, listing the valid range). ``evaluate`` then runs the model on
    ``norm(x)``, stops right after the deepest layer the objective needs, and returns the
    ``(N,)`` objective values (differentiable if ``x`` is). Call it inside
    :func:`~featurewatch.core.hygiene.isolated`.
    """
    _, dtype = model_device_dtype(model)
    names = sorted({parse_layer(la).name for la in objective.layers})
    with torch.no_grad(), capture(model, objective.layers, clone=False) as seen:
        # a failure after every layer we need was reached (a Linear head that wants the training
        # size) does not matter; one before does
        counts, failure = counted_forward(model, lambda: model(norm(example[:1]).to(dtype)), names)
        missing = [la for la in objective.layers if la not in seen.outputs]
        if missing and failure is not None:
            raise failure
        if missing:
            raise LayerNotReachedError(
                not_reached_message(missing[0], counts.get(parse_layer(missing[0]).name, 0))
            )
        objective.check({k: v.shape for k, v in seen.outputs.items()})
    del seen
    with capture(
        model, objective.layers, call_counts=counts, stop=True, clone=len(objective.layers) > 1
    ) as got:

        def evaluate(x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
            with suppress(StopForward):
                model(norm(x).to(dtype))
            if len(got.outputs) < len(objective.layers):
                raise RuntimeError(f"the forward pass did not reach {list(objective.layers)}")
            return objective(got.outputs, index)

        evaluate.outputs = got.outputs  # type: ignore[attr-defined]  # the last forward's captures
        yield evaluate


def _adam(params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    """Adam; the fused kernel where torch has one for these tensors (one pass instead of ~6)."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.Adam(params, lr=lr)


def render(
    model: nn.Module,
    objective: Objective,
    image: ImageSpec | ParamFactory,
    *,
    seeds: Sequence[int] | None = None,
    seed: int = 0,
    steps: int = 64,
    lr: float = 0.05,
    optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer] | None = None,
    transforms: Transforms = "standard",
    normalize: Normalize | None = None,
    batch_size: int | None = None,
    elements: tuple[int, int] | None = None,
    time_budget: float | None = None,
    redirect_steps: int = 0,
    polish_steps: int = 0,
    l2: float = 0.0,
    tv: float = 0.0,
    blur_every: int = 0,
    blur_sigma: float = 0.5,
) -> RenderResult:
    """Optimize a batch of images to maximize ``objective`` (one value per element).

    Args:
        model: the network (``nn.Module``); left exactly as it was (see module docstring).
        objective: an :class:`~featurewatch.core.objectives.Objective`; a batched objective
            fixes the number of images ``N``; otherwise ``N = len(seeds)`` (or 1).
        image: an :class:`~featurewatch.core.param.ImageSpec` (channels, size, spectral or pixel,
            colour decorrelation, fitted statistics), or a factory ``(seeds, device) -> module``
            whose ``forward()`` returns ``(len(seeds), C, H, W)`` images in ``[0, 1]``.
        seeds: one seed per element (initial image and transform sequence). Default:
            ``seed, seed + 1, ...``.
        seed: base seed when ``seeds`` is not given.
        steps: optimization steps.
        lr: learning rate of the optimizer.
        optimizer: ``params -> torch.optim.Optimizer``; default Adam.
        transforms: ``"standard"`` (:func:`~featurewatch.core.transforms.standard_transforms`
            for the image size), ``"none"``/``None``, or a list of transforms.
        normalize: ``(mean, std)`` of the model's input normalization, applied to the ``[0, 1]``
            image before the model sees it.
        batch_size: render at most this many images at once (memory bound); results do not
            depend on it. Rounded down to whole groups for a grouped objective
            (:func:`~featurewatch.core.objectives.diversity`), and at least one group.
        elements: ``(lo, hi)``: render only elements ``lo`` to ``hi - 1`` (one process's share
            of a call split across ranks); the result holds only those, each the same as in a
            render of all ``N``. For a grouped objective both must be whole groups.
        time_budget: seconds for the whole call; steps are cut short when it runs out (reported
            in ``steps`` and ``budget_exceeded``). Shared evenly among chunks; every chunk gets
            at least one step.
        redirect_steps: for the first steps, let gradients through ReLUs that block every gradient
            of an element (Lucid's ReLU-gradient redirect), so a unit that does not fire on noise
            still gets a signal. Applies to ``nn.ReLU`` modules (not ``F.relu``).
        polish_steps: run the last this many steps without transforms: the image keeps the
            robust structure found under jitter/scale/rotation and gets its final alignment
            sharpened, which raises both the unit's activation and its specificity on small images.
        l2: weight of an L2 penalty on ``image - 0.5`` (Simonyan et al., 2014).
        tv: weight of a total-variation penalty (Mahendran & Vedaldi, 2015).
        blur_every: blur the parametrization every this many steps (Yosinski et al., 2015); 0: off.
        blur_sigma: standard deviation (pixels) of that blur.

    Returns:
        A :class:`RenderResult` (images in ``[0, 1]``, final and initial objective values, steps).

    Raises:
        TypeError, ValueError: bad arguments, an unknown layer, or a unit out of range (the
            message lists what is valid).
    """
    start = time.perf_counter()
    objective = as_objective(objective)
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be an nn.Module, got {type(model).__name__}")
    for name, count in (
        ("steps", steps),
        ("redirect_steps", redirect_steps),
        ("polish_steps", polish_steps),
        ("blur_every", blur_every),
    ):
        check_int(name, count, 0)
    check_int("batch_size", batch_size, allow_none=True)
    check_positive_float("lr", lr)
    check_positive_float("l2", l2, allow_zero=True)
    check_positive_float("tv", tv, allow_zero=True)
    check_positive_float("time_budget", time_budget, allow_none=True)
    if not objective.layers:
        raise ValueError(f"objective {objective.name!r} reads no layer")
    if seeds is not None:
        seeds = [int(s) for s in seeds]
        if objective.batch is not None and len(seeds) != objective.batch:
            raise ValueError(
                f"{len(seeds)} seeds for a batched objective of {objective.batch} elements"
            )
        n = len(seeds)
    else:
        n = objective.batch if objective.batch is not None else 1
        seeds = [int(seed) + i for i in range(n)]
    if n < 1:
        raise ValueError("nothing to render: no seeds")
    for layer in objective.layers:
        resolve_layer(model, layer)  # unknown names fail here, listing the available layers

    with isolated(model):
        device, _dtype = model_device_dtype(model)
        build: ParamFactory = image.build if isinstance(image, ImageSpec) else image  # type: ignore[assignment]
        probe = build(seeds[:1], device)
        with torch.no_grad():
            x0 = probe()
        if x0.dim() != 4:
            raise ValueError(
                f"the parametrization must return (N, C, H, W) images, got shape {tuple(x0.shape)}"
            )
        channels, size = x0.shape[1], (x0.shape[2], x0.shape[3])
        norm = normalizer(normalize, channels, device)
        transform = _transforms(transforms, size)
        del probe
        chunk = batch_size or n
        if (
            objective.group is not None
        ):  # an element's value depends on its group: keep groups whole
            chunk = max(objective.group, chunk - chunk % objective.group)
        first_element, end = _elements(elements, n, objective.group)
        bounds = [(i, min(i + chunk, end)) for i in range(first_element, end, chunk)]
        images, values, initial, done = [], [], [], []
        exceeded = False
        with objective_forward(model, objective, x0, norm) as evaluate:
            del x0

            def report(value: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
                """What is reported for the forward just run: the objective's unit part, if it
                has one."""
                if objective.reported is None:
                    return value
                return objective.reported(evaluate.outputs, index)  # type: ignore[attr-defined]

            for k, (lo, hi) in enumerate(bounds):
                index = torch.arange(lo, hi)
                param = build(seeds[lo:hi], device)
                gens = [torch.Generator().manual_seed(_transform_seed(s)) for s in seeds[lo:hi]]
                params = [p for p in param.parameters() if p.requires_grad]
                opt = optimizer(params) if optimizer is not None else _adam(params, lr)
                deadline = None
                if time_budget is not None:
                    deadline = time.perf_counter() + max(
                        0.0, time_budget - (time.perf_counter() - start)
                    ) / (len(bounds) - k)
                first: torch.Tensor | None = (
                    None  # reported objective at step 0 (transformed noise)
                )
                ran = 0
                for step in range(steps):
                    if deadline is not None and step > 0 and time.perf_counter() > deadline:
                        exceeded = True
                        break
                    with _redirect_relus(model, step < redirect_steps):
                        img = param()
                        tx = transform(img, gens) if step < steps - polish_steps else img
                        val = evaluate(tx, index)
                    if first is None:
                        first = report(val, index).detach().float().cpu()
                    loss = -val
                    if l2:
                        loss = loss + l2 * (img - 0.5).pow(2).flatten(1).mean(1)
                    if tv:
                        loss = loss + tv * total_variation(img)
                    grads = torch.autograd.grad(loss.sum(), params)
                    for p, g in zip(params, grads):
                        p.grad = g
                    opt.step()
                    if (
                        blur_every
                        and (step + 1) % blur_every == 0
                        and isinstance(param, ImageParam)
                    ):
                        param.blur_(blur_sigma)
                    ran += 1
                with torch.no_grad():
                    final = param().detach()
                    values.append(report(evaluate(final, index), index).detach().float().cpu())
                initial.append(first if first is not None else values[-1])
                images.append(final.float().cpu())
                done.append(torch.full((hi - lo,), ran, dtype=torch.long))
                del param, opt, params
        # built here, outside any caller's inference mode, so the results are ordinary tensors
        return RenderResult(
            images=torch.cat(images),
            values=torch.cat(values),
            initial_values=torch.cat(initial),
            steps=torch.cat(done),
            seconds=time.perf_counter() - start,
            budget_exceeded=exceeded,
        )


def _elements(elements: tuple[int, int] | None, n: int, group: int | None) -> tuple[int, int]:
    """The ``(lo, hi)`` share of ``n`` elements to render (all of them by default), checked."""
    if elements is None:
        return 0, n
    lo, hi = (int(e) for e in elements)
    if not 0 <= lo < hi <= n:
        raise ValueError(f"`elements` must be (lo, hi) with 0 <= lo < hi <= {n}, got {elements}")
    if group is not None and (lo % group or hi % group):
        raise ValueError(f"`elements` {elements} must be whole groups of {group} elements")
    return lo, hi


def _spec(
    model: nn.Module,
    size: int | tuple[int, int],
    image_channels: int | None,
    options: dict[str, Any],
) -> ImageSpec:
    channels = infer_image_channels(model) if image_channels is None else image_channels
    keys = ("fft", "decorrelate", "stats", "fitted_spectrum", "sd", "decay_power")
    kw = {k: options.pop(k) for k in keys if k in options}
    return ImageSpec(channels=channels, size=size, **kw)  # type: ignore[arg-type]


def visualize_channels(
    model: nn.Module,
    layer: str,
    channels: int | Sequence[int],
    *,
    size: int | tuple[int, int],
    steps: int = 64,
    seed: int = 0,
    image_channels: int | None = None,
    normalize: Normalize | None = None,
    **options: Any,
) -> torch.Tensor:
    """Feature visualization of channels of one layer, all in one batch.

    Args:
        model: the network.
        layer: layer reference (``"features.3"``, ``"layer1.0.relu@0"``).
        channels: channel indices; image ``i`` maximizes ``channels[i]``.
        size: rendered image size (``int`` or ``(H, W)``), independent of the training size.
        steps: optimization steps.
        seed: base seed; channel ``c`` always starts from the same noise for the same ``seed``.
        image_channels: channels of the image; ``None`` = the first convolution's input channels.
        normalize: ``(mean, std)`` the model expects its inputs normalized with.
        **options: ``unit="channel"|"neuron"``, ``negative=False`` (minimize the unit instead),
            ``variants=1`` (images per channel, pushed apart by a diversity reward of weight
            ``diversity=1.0``; see :func:`unit_objective`),
            parametrization options of :class:`~featurewatch.core.param.ImageSpec` (``fft``,
            ``decorrelate``, ``stats``, ``fitted_spectrum``, ``sd``, ``decay_power``) and
            :func:`render` options
            (``lr``, ``transforms``, ``batch_size``, ``time_budget``, ``redirect_steps``, ``l2``,
            ``tv``, ``blur_every``, ...).

    Returns:
        ``(len(channels) * variants, C, H, W)`` images in ``[0, 1]`` (the variants of a channel
        are consecutive).

    Example:
        >>> imgs = visualize_channels(model, "features.3", range(8), size=32, steps=64)
    """
    chans = check_channel_list("channels", channels)
    objective, seeds = unit_objective(
        layer,
        chans,
        seed=seed,
        unit=options.pop("unit", "channel"),
        negative=bool(options.pop("negative", False)),
        variants=options.pop("variants", 1),
        diversity=options.pop("diversity", 1.0),
    )
    spec = _spec(model, size, image_channels, options)
    return render(
        model, objective, spec, seeds=seeds, steps=steps, normalize=normalize, **options
    ).images


def class_model_images(
    model: nn.Module,
    classes: int | Sequence[int],
    *,
    size: int | tuple[int, int],
    steps: int = 64,
    seed: int = 0,
    image_channels: int | None = None,
    normalize: Normalize | None = None,
    score: str = "logit+log_probability",
    **options: Any,
) -> torch.Tensor:
    """Class model visualization: images that maximize each class's score.

    Simonyan et al., 2014, "Deep Inside Convolutional Networks"; with a spectral parametrization
    and transformation robustness (Olah et al., 2017) instead of their L2-only regularization.
    By default the score is the pre-softmax logit plus the log-probability, which does not reward
    evidence the class shares with others (see :func:`~featurewatch.core.objectives.class_score`;
    ``score="logit"`` is Simonyan et al.'s).

    Args:
        model: a classifier returning ``(N, classes)`` scores.
        classes: class indices; image ``i`` maximizes ``classes[i]``.
        score: ``"logit"``, ``"log_probability"`` or ``"logit+log_probability"``.
        size, steps, seed, image_channels, normalize, **options: as in :func:`visualize_channels`.

    Returns:
        ``(len(classes), C, H, W)`` images in ``[0, 1]``.
    """
    cls = check_channel_list("classes", classes)
    spec = _spec(model, size, image_channels, options)
    seeds = [unit_seed(seed, c) for c in cls]
    return render(
        model,
        class_score(cls, score),
        spec,
        seeds=seeds,
        steps=steps,
        normalize=normalize,
        **options,
    ).images
