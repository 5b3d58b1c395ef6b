"""Argument checks shared by the whole package: one wording for every ``int``/``bool``/number check.

Every public function of the core and every callback constructor validates its arguments before
doing any work, so a wrong value fails at the call that made it, with a message that names the
argument, says what was expected and shows what came. Written once here, the messages agree
across the package (``bool`` is never accepted as an int or a number: ``True`` for ``steps`` is a
mistake, not ``1``).

Example:
    >>> check_int("steps", 0, minimum=1)
    Traceback (most recent call last):
    ValueError: `steps` must be a positive int, got 0
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import torch

__all__ = [
    "check_bool",
    "check_channel_list",
    "check_image_inputs",
    "check_images",
    "check_inputs",
    "check_int",
    "check_positive_float",
    "is_int",
    "out_of_range_message",
]


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer that is not a ``bool``: a Python ``int`` or a NumPy integer
    (what ``np.argsort`` or a pandas column hands over), not a float with an integral value."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(name: str, value: Any, minimum: int = 1, *, allow_none: bool = False) -> None:
    """Validate an integer argument (``bool`` is not an int here).

    Args:
        name: the argument's name, as the caller wrote it.
        value: what came.
        minimum: the smallest valid value.
        allow_none: whether ``None`` is valid too (an optional argument).

    Raises:
        ValueError: naming the argument, what was expected and what came, e.g.
            ``"`steps` must be a positive int, got 0"`` or ``"`seed` must be an int >= 0, got -1"``.
    """
    if value is None and allow_none:
        return
    if not is_int(value) or value < minimum:
        expected = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(
            f"`{name}` must be {expected}{' or None' if allow_none else ''}, got {value!r}"
        )


def check_bool(name: str, value: Any) -> None:
    """Validate a flag: a real ``bool`` only (``0``, ``1``, ``"yes"`` or ``None`` are refused, since
    a truthy stand-in usually means an argument was passed in the wrong position).

    Raises:
        TypeError: naming the argument and what came.
    """
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be True or False, got {type(value).__name__} {value!r}")


def check_positive_float(
    name: str, value: Any, *, allow_zero: bool = False, allow_none: bool = False
) -> float | None:
    """Validate a real-number argument that must be positive (or non-negative).

    Any real number is accepted (``int``, ``float``, NumPy floats; ``bool`` and NaN are not;
    infinity is, as "no limit").

    Args:
        name: the argument's name.
        value: what came.
        allow_zero: whether ``0`` is valid (a weight that switches a term off).
        allow_none: whether ``None`` is valid.

    Returns:
        The value as a ``float`` (``None`` stays ``None``).

    Raises:
        ValueError: e.g. ``"`lr` must be a positive number, got -0.1"``.
    """
    if value is None and allow_none:
        return None
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isnan(value)
    if ok and (value > 0 or (allow_zero and value == 0)):
        return float(value)
    expected = "a non-negative number" if allow_zero else "a positive number"
    raise ValueError(
        f"`{name}` must be {expected}{' or None' if allow_none else ''}, got {value!r}"
    )


def check_channel_list(name: str, value: Any, *, allow_int: bool = True) -> list[int]:
    """Validate channel (or class) indices: one int, or a non-empty sequence of non-negative ints.

    Whether the indices exist is checked later, against the layer's output
    (:func:`out_of_range_message`).

    Args:
        name: the argument's name (``"channels"``, ``"classes"``).
        value: an int (when ``allow_int``) or an iterable of ints (not a string).
        allow_int: accept a single int, returned as a one-element list.

    Returns:
        The indices as a new list.

    Raises:
        TypeError: if ``value`` is neither an int nor an iterable of values.
        ValueError: if it is empty or holds anything but non-negative ints.
    """
    if allow_int and is_int(value):
        values = [value]
    elif isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        values = list(value)
    else:
        expected = "an int or a sequence of ints" if allow_int else "a sequence of ints"
        raise TypeError(f"`{name}` must be {expected}, got {type(value).__name__}")
    if not values or any(not is_int(c) or c < 0 for c in values):
        raise ValueError(f"`{name}` must be a non-empty list of non-negative ints, got {values!r}")
    return [int(c) for c in values]


def check_images(name: str, value: Any) -> torch.Tensor:
    """Validate a batch of images: a non-empty ``(N, C, H, W)`` tensor (returned as it came).

    Raises:
        TypeError: if ``value`` is not a tensor.
        ValueError: if it is not 4-D or holds no image.
    """
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"`{name}` must be an (N, C, H, W) tensor, got {type(value).__name__}")
    if value.dim() != 4 or value.shape[0] == 0:
        raise ValueError(
            f"`{name}` must be a non-empty (N, C, H, W) batch of images, got shape "
            f"{tuple(value.shape)}"
        )
    return value


def check_inputs(name: str, value: Any) -> torch.Tensor:
    """Validate a batch of model inputs, the one shape rule of attribution (returned as it came).

    ``(N, F)`` feature vectors (tabular data), ``(N, C, L)`` 1-D signals (audio, sensor series) or
    ``(N, C, H, W)`` images and spectrograms; ``N >= 1``. A map computed for such a batch has the
    input's shape without the channel axis: ``(N, F)``, ``(N, L)`` or ``(N, H, W)``.

    Raises:
        TypeError: if ``value`` is not a tensor.
        ValueError: if it has another number of dimensions or holds nothing.
    """
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"`{name}` must be a tensor of shape (N, F), (N, C, L) or (N, C, H, W), "
            f"got {type(value).__name__}"
        )
    if value.dim() not in (2, 3, 4) or value.numel() == 0:
        raise ValueError(
            f"`{name}` must be a non-empty batch of shape (N, F) (features), (N, C, L) (1-D "
            f"signals) or (N, C, H, W) (images), got shape {tuple(value.shape)}"
        )
    return value


#: What a user with a non-image model can use instead of an image-only callback.
NON_IMAGE_ALTERNATIVES = (
    "DeadNeuronMonitor and FeatureDrift watch any model; AttributionMaps draws saliency, "
    "SmoothGrad and occlusion for (N, F) feature vectors and (N, C, L) 1-D signals (and Grad-CAM "
    "at a 1-D layer); FilterWeights and ActivationGrid draw 1-D (Conv1d) nets; and "
    "featurewatch.saliency / featurewatch.occlusion / featurewatch.grad_cam accept (N, F) and "
    "(N, C, L) inputs"
)


def check_image_inputs(who: str, x: torch.Tensor) -> None:
    """Refuse, with what to use instead, a callback that draws images for a non-image model.

    Called with the first batch's inputs (before the first training step), so a tabular or 1-D
    model fails at the start of ``fit`` with this message, not later with an ``IndexError``. The
    message names what does work on such a model (:data:`NON_IMAGE_ALTERNATIVES`: the
    model-agnostic monitors, AttributionMaps on feature vectors and signals, FilterWeights and
    ActivationGrid on 1-D nets).

    Raises:
        ValueError: if ``x`` is not a 4-D ``(N, C, H, W)`` batch.
    """
    if x.dim() == 4:
        return
    kind = {2: "feature vectors (N, F)", 3: "1-D signals (N, C, L)"}.get(x.dim(), "not images")
    raise ValueError(
        f"{who} works on image inputs (N, C, H, W), but this model's inputs are {kind}, shape "
        f"{tuple(x.shape)}; {NON_IMAGE_ALTERNATIVES}"
    )


def out_of_range_message(
    index: int, count: int, *, layer: str | None = None, kind: str | None = None
) -> str:
    """The one wording of "this index does not exist", with the valid range.

    Args:
        index: the index asked for.
        count: how many there are.
        layer: the layer reference whose channels are indexed (``""`` is the model's output);
            ``None`` for the classes of the model's output scores.
        kind: what is counted (default: ``"channel"`` with a layer, ``"class"`` without).

    Returns:
        ``"channel 8 out of range for layer 'features.2' with 8 channels (valid: 0..7)"`` or
        ``"class 12 out of range; the model outputs 10 scores (valid: 0..9)"``. A caller prefixes
        its own name (``"DatasetExamples: "``) when it is not the core function being called.
    """
    valid = f"(valid: 0..{count - 1})"
    if layer is None:
        what = kind or "class"
        return f"{what} {index} out of range; the model outputs {count} scores {valid}"
    what = kind or "channel"
    where = "the model output" if layer == "" else f"layer {layer!r}"
    return f"{what} {index} out of range for {where} with {count} {what}s {valid}"
