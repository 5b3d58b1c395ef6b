"""What every subcommand shares: the user-error type and the progress bar."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

__all__ = ["CLIError", "progress"]

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
