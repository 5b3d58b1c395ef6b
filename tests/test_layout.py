"""The package's layout rules (issue 13), read from the source: rooms, private names, module size.

Rooms are the sub-packages ``core``, ``callbacks``, ``loggers`` and ``cli``. The core is pure torch
and imports no other room; loggers know nothing of callbacks or the command line; callbacks do not
import the command line. A name (or module) starting with ``_`` is private: no module imports a
private name of another module, and a private module (``callbacks/_probe.py``, ``loggers/_page.py``)
is imported only inside its own room.
"""

from __future__ import annotations

import ast
from pathlib import Path

import featurewatch

ROOT = Path(featurewatch.__file__).parent
#: Which rooms a room may import (besides itself and the top-level package's own modules).
ALLOWED = {
    "core": set(),
    "loggers": {"core"},
    "callbacks": {"core", "loggers"},
    "cli": {"core", "loggers", "callbacks"},
}


def _imports() -> list[tuple[Path, str, list[str]]]:
    """(file, imported featurewatch module, imported names) for every ``from featurewatch...``."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("featurewatch"):
                found.append((path, node.module, [a.name for a in node.names]))
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("featurewatch"):
                        found.append((path, a.name, []))
    return found


def _room(path: Path) -> str:
    parts = path.relative_to(ROOT).parts
    return parts[0] if len(parts) > 1 else ""


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_the_scan_reads_real_imports() -> None:
    rooms = {_room(p) for p, _, _ in _imports()}
    assert {"core", "loggers", "callbacks", "cli"} <= rooms


def test_rooms_import_only_the_rooms_below_them() -> None:
    bad = []
    for path, module, _ in _imports():
        room, target = _room(path), (module.split(".") + [""])[1]
        if room in ALLOWED and target in ALLOWED and target not in ALLOWED[room] | {room}:
            bad.append(f"{path.relative_to(ROOT)} imports {module}")
    assert bad == []


def test_no_module_imports_a_private_name_or_another_rooms_private_module() -> None:
    bad = []
    for path, module, names in _imports():
        parts = module.split(".")
        target = (parts + [""])[1]
        if any(_private(p) for p in parts[1:]) and target != _room(path):
            bad.append(f"{path.relative_to(ROOT)} imports private module {module}")
        bad += [f"{path.relative_to(ROOT)} imports {module}.{n}" for n in names if _private(n)]
    assert bad == []


#: "No package module over about 700 lines" (issue 13): a module past this holds two mechanisms.
MAX_LINES = 720


def test_no_module_is_a_grab_bag() -> None:
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in ROOT.rglob("*.py")}
    assert max(sizes.values()) > 500  # the scan reads real modules
    assert {k: v for k, v in sizes.items() if v > MAX_LINES} == {}
