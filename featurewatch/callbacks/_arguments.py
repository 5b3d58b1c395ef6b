"""Checks of callback arguments that the core does not need: number ranges and layer names.

Run in ``__init__``, so a wrong value fails where it was written; whether a layer exists is
checked against the model at ``setup``. Re-exported by :mod:`featurewatch.callbacks.base`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, overload

from featurewatch.core.layers import parse_layer

__all__ = ["check_input_key", "check_layer", "check_layers", "check_number"]


def check_number(
    name: str,
    value: Any,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Validate a real-number argument of a callback, optionally within a range.

    Ints and floats are accepted, ``bool`` and NaN are not. The shared checks live in
    :mod:`featurewatch.core.validation`; this one adds the ranges the callbacks need (a fraction in
    ``[0, 1)``, a scale ``> 1``).

    Args:
        name: the argument's name.
        value: what came.
        low, high: the bounds (infinite: no bound).
        low_open, high_open: whether the bound itself is excluded.

    Returns:
        The value as a ``float``.

    Raises:
        TypeError: if ``value`` is not a real number.
        ValueError: if it is NaN or out of range, e.g. ``"`dying_rate` must be in (0, 1], got 0"``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"`{name}` must be a number, got nan")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        if math.isinf(low) or math.isinf(high):
            bound = f"{'>' if low_open else '>='} {low:g}" if math.isfinite(low) else ""
            bound = bound or f"{'<' if high_open else '<='} {high:g}"
            expected = f"a number {bound}"
        else:
            expected = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"`{name}` must be {expected}, got {value:g}")
    return value


def check_layer(name: str, value: Any, *, allow_none: bool = False) -> None:
    """Validate one layer-name argument (``layer``, ``classifier``): ``"name"`` or ``"name@k"``.

    Whether the layer exists is checked against the model at ``setup``.

    Raises:
        TypeError: if ``value`` is not a string (nor ``None`` when ``allow_none``).
        ValueError: if the name is malformed.
    """
    if value is None and allow_none:
        return
    if not isinstance(value, str):
        expected = "a layer name (str)" + (" or None" if allow_none else "")
        raise TypeError(f"`{name}` must be {expected}, got {type(value).__name__} {value!r}")
    parse_layer(value)


@overload
def check_layers(layers: Any) -> list[str]: ...
@overload
def check_layers(layers: Any, *, allow_none: bool) -> list[str] | None: ...
def check_layers(layers: Any, *, allow_none: bool = False) -> list[str] | None:
    """Validate a callback's ``layers`` argument: a layer name or a non-empty list of names.

    Every name is parsed (``"name"`` or ``"name@k"``) here, in ``__init__``; whether the layers
    exist is checked against the model at ``setup``.

    Returns:
        The names as a list (``None`` stays ``None`` when ``allow_none``).

    Raises:
        TypeError: if ``layers`` is not a name or a non-empty sequence of names.
        ValueError: if a name is malformed.
    """
    if layers is None and allow_none:
        return None
    if isinstance(layers, str):
        layers = [layers]
    if (
        not isinstance(layers, Sequence)
        or not layers
        or not all(isinstance(la, str) for la in layers)
    ):
        expected = "a layer name or a non-empty list of layer names" + (
            " or None" if allow_none else ""
        )
        raise TypeError(f"`layers` must be {expected}, got {layers!r}")
    for layer in layers:
        parse_layer(layer)
    return list(layers)


def check_input_key(input_key: Any) -> None:
    """Validate ``input_key``: an int index (tuple/list batches) or a str key (dict batches).

    Raises:
        TypeError: for anything else (``bool`` included).
    """
    if isinstance(input_key, bool) or not isinstance(input_key, (int, str)):
        raise TypeError(
            "`input_key` must be an int index (tuple batches) or a str key (dict batches), got "
            f"{type(input_key).__name__} {input_key!r}"
        )
