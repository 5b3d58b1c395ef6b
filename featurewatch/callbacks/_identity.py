"""Who a callback is: its key prefix (``name``), its checkpoint ``state_key``, its fresh state.

Three promises of :class:`~featurewatch.callbacks.base.FeatureWatchCallback` rest on this module:

* **one prefix per instance** - every key a callback logs starts with ``featurewatch/<name>/``;
  two callbacks of one trainer with the same ``name`` would write to the same keys at the same
  steps (one PNG of the two kept by the files sink, two points at one step in TensorBoard), so
  :func:`check_unique_names` refuses that at ``setup`` and says to pass ``name=``;
* **a state key that tells instances apart** - without ``name=``, the key holds a digest of the
  constructor configuration (as Lightning's ``ModelCheckpoint`` puts its monitor and mode in its
  key), so two instances that differ only in, say, ``size`` do not stop ``Trainer(...)`` with
  Lightning's "more than one stateful callback" error but reach the clearer ``name=`` message.
  With ``name=`` the key is the name alone: it survives changed arguments on resume;
* **a fresh start per fit** - :class:`Pristine` keeps the instance's state as constructed and
  puts it back when the object is reused for another ``fit``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import re
import types
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

__all__ = ["Pristine", "check_name", "check_unique_names", "config_digest"]

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
#: instance attributes that are run-time state, not configuration, even though public
_RUNTIME = frozenset({"last_seconds", "total_seconds", "ending"})


def check_name(owner: str, name: Any) -> str:
    """Validate a ``name=`` argument: one key segment (letters, digits, ``_``, ``.``, ``-``).

    Raises:
        TypeError: if ``name`` is not a string.
        ValueError: if it is empty or holds a ``/`` or another character a key segment must not.
    """
    if not isinstance(name, str):
        raise TypeError(f"{owner}: `name` must be a str, got {type(name).__name__} {name!r}")
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"{owner}: `name` must be one key segment of letters, digits, '_', '.' or '-' "
            f"(it becomes featurewatch/<name>/...), got {name!r}"
        )
    return name


def check_unique_names(me: Any, callbacks: Iterable[Any], kind: type) -> None:
    """Refuse a second featurewatch callback of the trainer with ``me``'s ``name``.

    Raises:
        ValueError: naming both callbacks and saying to pass ``name=``.
    """
    for other in callbacks:
        if other is me or not isinstance(other, kind) or other.name != me.name:
            continue
        mine, theirs = type(me).__name__, type(other).__name__
        raise ValueError(
            f"{mine} and {theirs} would both log under 'featurewatch/{me.name}/' (the same keys "
            f"at the same steps: one would overwrite the other); pass a distinct `name=` to "
            f"each, e.g. {mine}(..., name='{me.name}_2')"
        )


def _stable(value: Any) -> str:
    """A repr that is the same in every process (no memory addresses, tensors by content)."""
    if isinstance(value, torch.Tensor):
        data = value.detach().cpu().contiguous()
        digest = hashlib.sha1(data.numpy().tobytes() if data.numel() else b"").hexdigest()[:12]
        return f"tensor({tuple(data.shape)}, {data.dtype}, {digest})"
    if isinstance(value, (str, int, float, bool, type(None))):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_stable(v) for v in value) + "]"
    if isinstance(value, dict):
        items = sorted((_stable(k), _stable(v)) for k, v in value.items())
        return "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType, types.MethodType, type)):
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', value)}"
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))


def config_digest(config: dict[str, Any], ignore: Iterable[str] = ()) -> str:
    """A short digest of public configuration attributes, equal across processes and runs.

    ``ignore`` names attributes left out (decisions that do not change the state); ``strict``
    is also taken out of the schedule.
    """
    skip = {*_RUNTIME, *ignore}
    kept = {k: v for k, v in config.items() if not k.startswith("_") and k not in skip}
    schedule = kept.get("schedule")
    if "strict" in skip and dataclasses.is_dataclass(schedule):
        kept["schedule"] = {
            f.name: getattr(schedule, f.name)
            for f in dataclasses.fields(schedule)
            if f.name != "strict"
        }
    text = _stable(kept)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def _copy(value: Any) -> Any:
    # what a callback mutates is its own state (None, lists, dicts, tensors); user objects given as
    # configuration (models, callables, data) are kept by reference, never duplicated
    if isinstance(value, nn.Module) or (callable(value) and not isinstance(value, type)):
        return value
    try:
        return copy.deepcopy(value)
    except Exception:  # noqa: BLE001 - an object that cannot be copied is configuration: keep it
        return value


class Pristine:
    """An instance's attributes as they were before its first ``fit``.

    Args:
        attributes: the instance's ``__dict__`` (copied: later changes do not reach the copy).
    """

    def __init__(self, attributes: dict[str, Any]) -> None:
        self._saved = {k: _copy(v) for k, v in attributes.items()}

    @property
    def config(self) -> dict[str, Any]:
        return self._saved

    def restore(self, attributes: dict[str, Any], keep: Callable[[str], bool]) -> None:
        """Put the saved attributes back into ``attributes`` (attributes ``keep`` names stay)."""
        kept = {k: v for k, v in attributes.items() if keep(k)}
        attributes.clear()
        attributes.update({k: _copy(v) for k, v in self._saved.items()})
        attributes.update(kept)
