"""What every subcommand shares: the user-error type, the progress bar, ``--normalize``."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

__all__ = ["CLIError", "parse_normalize", "progress"]

T = TypeVar("T")


class CLIError(Exception):
    """A problem with the user's input, shown as one line: ``featurewatch: error: <message>``.

    Raise it for anything the user can fix (a missing path, a folder without featurewatch output);
    the message says what was expected, what was found and what to do. Anything else that escapes
    a subcommand is a bug or an environment problem and is also shown as one line, unless
    ``--debug`` asks for the traceback.
    """


def progress(
    items: Iterable[T], *, total: int | None = None, desc: str = "", unit: str = "it"
) -> Iterator[T]:
    """``items`` with a tqdm progress bar on stderr, only when stderr is a terminal.

    Quiet in pipes, CI logs and tests (no carriage-return noise in captured output), and a plain
    iteration when tqdm is missing (it comes with Lightning, but the command line needs neither).
    """
    if not _stderr_is_tty():
        yield from items
        return
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm ships with Lightning
        yield from items
        return
    bar: Any = tqdm(
        items, total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True
    )
    try:
        yield from bar
    finally:
        bar.close()


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def parse_normalize(value: Sequence[str] | None) -> tuple[list[float], list[float]] | None:
    """``--normalize MEAN STD`` (comma-separated per input channel) as ``(mean, std)`` lists.

    Raises:
        CLIError: if a value is not a number, MEAN and STD differ in length, or a STD is <= 0.
    """
    if value is None:
        return None
    try:
        mean, std = ([float(v) for v in part.split(",")] for part in value)
    except ValueError:
        raise CLIError(
            f"--normalize {' '.join(value)!r}: expected MEAN STD as comma-separated numbers, "
            "e.g. 0.485,0.456,0.406 0.229,0.224,0.225"
        ) from None
    if len(mean) != len(std) or any(s <= 0 for s in std):
        raise CLIError("--normalize: MEAN and STD need one value each per channel, STD > 0")
    return mean, std
