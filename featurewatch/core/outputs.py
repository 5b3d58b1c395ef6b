"""What goes into a classifier and where its class scores are in what comes out.

Every method that explains a class (attribution maps, class-model images, the callbacks' target
choice) needs the same four answers, given here once:

* the input batch as a private copy on the model's device and dtype (:func:`model_input`);
* the target classes as one index per image (:data:`Target`, :func:`target_tensor`), NumPy
  integers included, ``bool`` refused; or, for outputs that are not one score per class
  (segmentation, regression, detection), a function of the output that gives each input's score
  (:data:`ScoreFn`, :func:`resolve_target`, :func:`score_of`);
* the ``(N, classes)`` logits inside the model's output (:data:`OutputKey`,
  :func:`select_output`, :func:`class_scores`): a tensor, a tuple such as ``(logits, features)``, a
  dict such as ``{"logits": ...}``, or anything a function of the output turns into the logits;
* the range check of the targets against the scores (:func:`check_class_range`) and the score of
  each image's target (:func:`target_scores`).

The messages describe what the model returned (:func:`describe_output`) and say what to pass
instead.

Example:
    >>> logits = class_scores(model(x), output_key="logits")   # a model returning a dict
    >>> scores = target_scores(model(x), target_tensor([3, 7], 2, x.device), "logits")
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

import torch
from torch import nn

from featurewatch.core.hygiene import model_device_dtype
from featurewatch.core.validation import check_inputs, out_of_range_message

__all__ = [
    "OutputKey",
    "ScoreFn",
    "Target",
    "check_class_range",
    "check_output_key",
    "class_index",
    "class_scores",
    "describe_output",
    "model_input",
    "resolve_target",
    "score_of",
    "select_output",
    "take",
    "target_scores",
    "target_tensor",
]

#: A score to explain that is not one class's logit: ``fn(output) -> (B,)``, one differentiable
#: score per input of the batch, from the model's output (after ``output_key``). E.g. the sum of
#: class 3's logits over a mask for a segmentation net, ``lambda out: (out[:, 3] * mask).sum((1,
#: 2))``, or a regression output, ``lambda out: out[:, 0]``. It must treat the inputs of a batch
#: independently: the methods call it on chunks of their own making.
ScoreFn: TypeAlias = Callable[[Any], torch.Tensor]
#: What to explain: one class for every input, one class per input (sequence or ``(N,)`` tensor;
#: NumPy integers and integer arrays too), or a :data:`ScoreFn`.
Target: TypeAlias = int | Sequence[int] | torch.Tensor | ScoreFn
#: Where the logits are in the model's output: ``None`` (the output is the ``(N, classes)`` tensor),
#: an index into a tuple/list output, a key of a dict output, or a function ``output -> logits``.
OutputKey: TypeAlias = int | str | Callable[[Any], torch.Tensor] | None


def model_input(model: nn.Module, x: Any) -> torch.Tensor:
    """A private copy of the input batch ``x`` on the model's device and dtype.

    The copy is detached and cloned, so nothing the methods do touches the caller's tensor, and a
    tensor created under ``torch.inference_mode`` becomes an ordinary one.

    Raises:
        TypeError: if ``x`` is not a tensor.
        ValueError: if it is not a non-empty ``(N, F)``, ``(N, C, L)`` or ``(N, C, H, W)`` batch
            (:func:`~featurewatch.core.validation.check_inputs`).
    """
    check_inputs("x", x)
    device, dtype = model_device_dtype(model)
    return x.detach().to(device=device, dtype=dtype).clone()


def class_index(value: Any) -> int | None:
    """``value`` as a Python int if it is an integer (``int``, NumPy integer, 0-d integer array),
    else ``None``; booleans are not class indices."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def target_tensor(target: Target, n: int, device: torch.device) -> torch.Tensor:
    """Per-image class indices as a ``(N,)`` long tensor (range checked later, against the scores).

    Raises:
        TypeError: if ``target`` holds anything but integer class indices.
        ValueError: if it gives neither one class nor one per image.
    """
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
    elif (index := class_index(target)) is not None:
        t = torch.full((n,), index, dtype=torch.long, device=device)
    elif isinstance(target, Sequence) or getattr(target, "ndim", 0) >= 1:  # a list, a NumPy array
        values = list(target)  # type: ignore[arg-type]  # int was handled above
        indices = [class_index(v) for v in values]
        if any(i is None for i in indices):
            raise TypeError(f"`target` must hold int class indices, got {values!r}")
        t = torch.tensor(indices, dtype=torch.long, device=device)
    else:
        raise TypeError(f"`target` must be a class index (int), or one per image, got {target!r}")
    if t.shape != (n,):
        raise ValueError(f"`target` must give one class per image: expected {n}, got {t.numel()}")
    return t


def describe_output(out: Any) -> str:
    """A short description of a model output for error messages (``"a tensor of shape (2, 10)"``,
    ``"a tuple of 2 values (shape (2, 10), shape (2, 16, 8, 8))"``, ``"a dict with keys ..."``)."""
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


def check_output_key(output_key: Any) -> None:
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


def select_output(out: Any, output_key: OutputKey) -> Any:
    """The part of a model output ``output_key`` names (the output itself for ``None``).

    Raises:
        ValueError: if the output has no such part (the message describes what it has).
    """
    if output_key is None:
        return out
    if isinstance(output_key, str):
        if not isinstance(out, Mapping):  # output_key and model disagree: a configuration value
            raise ValueError(  # noqa: TRY004
                f"`output_key={output_key!r}` needs a model returning a dict, but it returned "
                f"{describe_output(out)}"
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
                f"returned {describe_output(out)}"
            )
        if not -len(out) <= output_key < len(out):
            raise ValueError(
                f"`output_key={output_key}` is out of range: the model returned "
                f"{describe_output(out)}"
            )
        return out[output_key]
    return output_key(out)  # type: ignore[operator]


def class_scores(out: Any, output_key: OutputKey = None, who: str = "attribution") -> torch.Tensor:
    """The ``(N, classes)`` logits in a model output (``output_key`` selects them).

    Args:
        out: what the model returned.
        output_key: see :data:`OutputKey`.
        who: starts the error messages (the method or callback that needs the logits).

    Raises:
        ValueError: if the selected part is not an ``(N, classes)`` tensor; the message says how to
            select the logits.
    """
    scores = select_output(out, output_key)
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
            f"{who} needs a model returning (N, classes) scores, got {describe_output(out)}; {hint}"
        )
    raise ValueError(
        f"{who} needs (N, classes) scores, but `output_key={output_key!r}` selects "
        f"{describe_output(scores)} from the model's output ({describe_output(out)})"
    )


def check_class_range(target: torch.Tensor, num_classes: int) -> None:
    """Raise ``ValueError`` naming the first target class outside ``0..num_classes - 1``."""
    bad = target[(target < 0) | (target >= num_classes)]
    if bad.numel():
        raise ValueError(out_of_range_message(int(bad[0]), num_classes, kind="target class"))


def resolve_target(target: Target, n: int, device: torch.device) -> torch.Tensor | ScoreFn:
    """:func:`target_tensor` for class targets; a :data:`ScoreFn` is returned as it is.

    Index the result with :func:`take` and score an output with :func:`score_of`, so a method
    handles both kinds of target in one code path.
    """
    if callable(target) and not isinstance(target, torch.Tensor):
        return target
    return target_tensor(target, n, device)  # type: ignore[arg-type]


def take(target: torch.Tensor | ScoreFn, index: torch.Tensor) -> torch.Tensor | ScoreFn:
    """The targets of the inputs ``index`` (a :data:`ScoreFn` applies to any of them)."""
    return target[index] if isinstance(target, torch.Tensor) else target


def score_of(
    out: Any, target: torch.Tensor | ScoreFn, output_key: OutputKey = None
) -> torch.Tensor:
    """``(B,)``: the score each input of the batch is explained by, from the model output ``out``.

    The target class's logit for class targets (:func:`target_scores`); ``target(output)`` for a
    :data:`ScoreFn`, checked to give one score per input.

    Raises:
        ValueError: if a score function does not return a ``(B,)`` tensor.
    """
    if isinstance(target, torch.Tensor):
        return target_scores(out, target, output_key)
    scores = target(select_output(out, output_key))
    n = _batch_size(out, output_key)
    if (
        not isinstance(scores, torch.Tensor)
        or scores.dim() != 1
        or (n is not None and scores.shape[0] != n)
    ):
        got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(
            f"a callable `target` must return one score per input, a tensor of shape "
            f"({n if n is not None else 'B'},), got "
            f"{got}; e.g. `lambda out: out[:, 0]` or `lambda out: (out[:, 3] * mask).sum((1, 2))`"
        )
    return scores


def _batch_size(out: Any, output_key: OutputKey) -> int | None:
    selected = select_output(out, output_key)
    if isinstance(selected, torch.Tensor) and selected.dim() >= 1:
        return int(selected.shape[0])
    return None


def target_scores(out: Any, target: torch.Tensor, output_key: OutputKey = None) -> torch.Tensor:
    """``(N,)``: the logit of each image's target class in the model output ``out``."""
    scores = class_scores(out, output_key)
    check_class_range(target, scores.shape[1])
    return scores.gather(1, target[:, None])[:, 0]
