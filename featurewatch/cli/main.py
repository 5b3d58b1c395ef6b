"""Entry point of the ``featurewatch`` command: argument parsing, subcommands, error reporting.

A subcommand is a :class:`Command`: a name, a one-line help, a function that adds its arguments
to its subparser, and a function that runs it and returns the exit code. Adding ``replay`` or
``render`` means writing their module and appending one :class:`Command` to :data:`COMMANDS`;
parsing, ``--help``, ``--debug`` and the one-line error reporting come with it.

Exit codes: 0 success, 1 a run-time failure (bad input found while working: a run folder without
featurewatch output, an unreadable file), 2 a usage error (unknown option, missing argument),
130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from featurewatch.cli.common import CLIError

__all__ = ["COMMANDS", "Command", "build_parser", "main"]

PROG = "featurewatch"


@dataclass(frozen=True)
class Command:
    """One subcommand, implemented by ``module``'s ``configure(parser)`` and ``run(args)``.

    The module is imported only when the subcommand runs (or its ``--help`` is built lazily by
    ``configure``), so ``featurewatch --help`` stays fast and needs no optional dependency.
    """

    name: str
    help: str
    module: str
    description: str = ""

    def configure(self, parser: argparse.ArgumentParser) -> None:
        importlib.import_module(self.module).configure(parser)

    def runner(self) -> Callable[[argparse.Namespace], int]:
        return importlib.import_module(self.module).run


#: The subcommands, in ``--help`` order.
COMMANDS: tuple[Command, ...] = (
    Command(
        "report",
        "write a self-contained HTML page of a run (files sink or TensorBoard)",
        "featurewatch.cli.report",
        description=(
            "Write one static HTML page (images embedded, no network needed) showing what a run "
            "logged with featurewatch, by callback and layer: a slider and a filmstrip per image "
            "key, curves for scalars (drift, dead fractions, seconds), texts (errors, alerts). "
            "RUN is a files-sink folder, a logger's log_dir, or a TensorBoard log dir."
        ),
    ),
    Command(
        "replay",
        "run the featurewatch callbacks over a run's checkpoints into a files-sink folder",
        "featurewatch.cli.replay",
        description=(
            "Run the featurewatch callbacks (channel and class images, filters, activation grids, "
            "attribution, dataset examples and feature drift on a probe) over every checkpoint "
            "of a run, in global-step order, each logged at its checkpoint's step and epoch into "
            "a files-sink folder OUT, so that 'featurewatch report OUT' shows the evolution of a "
            "run trained without them."
        ),
    ),
    Command(
        "render",
        "draw channel visualizations and class model images of one checkpoint",
        "featurewatch.cli.render",
        description=(
            "Render what one checkpoint's channels (--layer) and classes (--classes) respond to, "
            "as one PNG with every tile labelled: the render engine of ChannelVisualization and "
            "ClassModelVisualization, for a checkpoint of any run."
        ),
    ),
)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line: ``featurewatch: error: ...``."""

    def error(self, message: str) -> NoReturn:
        where = self.prog.removeprefix(PROG).strip()
        hint = f" (see '{self.prog} --help')"
        self.exit(2, f"{PROG}: error: {where + ': ' if where else ''}{message}{hint}\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``featurewatch`` and every subcommand in :data:`COMMANDS`."""
    from featurewatch import __version__

    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the full traceback of an error instead of one line",
    )
    parser = _Parser(
        prog=PROG,
        description="Look at what featurewatch logged while a network trained.",
        parents=[debug],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    parser.set_defaults(_subparsers={})
    for command in COMMANDS:
        child = sub.add_parser(
            command.name,
            help=command.help,
            description=command.description or command.help,
            parents=[debug],
        )
        command.configure(child)
        child.set_defaults(_command=command)
        parser.get_default("_subparsers")[command.name] = child
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``featurewatch`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code.

    Without ``--debug`` every error is one line on stderr and a non-zero exit code, never a
    traceback.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_list
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(args_list)
        debug = bool(getattr(args, "debug", False))
        command: Command | None = getattr(args, "_command", None)
        if command is None:
            names = ", ".join(c.name for c in COMMANDS)
            parser.error(f"choose a command: {names}")
        if extra:  # named by the subcommand, whose --help lists what it takes
            args._subparsers[command.name].error(f"unrecognized arguments: {' '.join(extra)}")
        return int(command.runner()(args) or 0)
    except SystemExit as stop:  # argparse: --help, --version, usage errors
        return int(stop.code or 0) if not isinstance(stop.code, str) else _fail(stop.code, 2)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except CLIError as err:
        if debug:
            raise
        return _fail(str(err), 1)
    except Exception as err:  # one line for the user; --debug shows the traceback
        if debug:
            raise
        text = str(err).strip().splitlines()
        detail = f": {text[0]}" if text else ""
        return _fail(f"{type(err).__name__}{detail} (run with --debug for the traceback)", 1)


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code
