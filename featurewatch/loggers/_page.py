"""The self-contained ``index.html`` that :class:`~featurewatch.loggers.files.FilesSink` writes.

One static file, no external CSS/JS and no ``fetch`` (``file://`` pages may not fetch): the records
of ``events.jsonl`` (and the run's ``metrics.csv``, when there is one) are embedded as JSON and
drawn by a small script. Images are referenced by their relative paths, which ``<img>`` may load
from ``file://``.

What the page shows:

* a sticky bar with a step slider over every logged step (arrow keys step through it; each card
  shows the latest item at or before the selected step, greyed out if the key was first logged
  later) and a filter box (``/`` focuses it): cards whose key does not contain every word typed
  are hidden;
* one section per callback (keys ``featurewatch/<name>/...``), within it one group per layer
  (``featurewatch/<name>/<layer>[/<metric>]``; the callback's ``seconds`` and ``error`` last);
  sections, layers and keys in natural order (``features.2`` before ``features.13``); a key of
  another scheme goes to the section named by its first segment;
* per image key, the image at its own aspect ratio (small images scaled up by a whole factor
  without smoothing, large ones scaled down to fit), its step, epoch and caption, and its own
  slider to scrub that key alone; an image logged with an animation (its record has
  ``animation``, a GIF path) shows the animated GIF below the still. Clicking the image opens a
  zoom view at native resolution or a whole multiple of it (nearest-neighbour, ``image-rendering:
  pixelated``); "compare" shows two steps of the key side by side, each step chosen in a list;
* per scalar key, an inline SVG line chart with the selected step marked; per histogram key, the
  bar chart at the selected step; per text key, the latest entries;
* the run's own metrics (Lightning's ``CSVLogger`` writes ``<log_dir>/metrics.csv``; the sink is
  usually ``<log_dir>/featurewatch``) as one chart per column against ``step``, first, when the
  file exists (read each time the page is written).

URL parameters (query or hash): ``step=N`` selects the latest step ``<= N``; ``filter=TEXT`` fills
the filter box; ``zoom=KEY&at=N`` opens the zoom view of ``KEY`` at step ``N``, ``&vs=M`` beside
step ``M``; ``live=1`` reloads the page every 10 s (keeping the scroll position). The hash follows
the controls, so a reload or a shared link shows the same view. When every displayed image has
loaded, ``<body data-ready="1">`` (``"error"`` if one failed) and every ``<img>`` records
``data-natural-width``/``-height``.
"""

from __future__ import annotations

import csv
import html
import json
import math
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

__all__ = ["METRIC_POINTS_ON_PAGE", "find_metrics_csv", "read_metrics_csv", "render_page"]

#: Points per ``metrics.csv`` column embedded in the page (longer columns are thinned evenly,
#: keeping the first and last point).
METRIC_POINTS_ON_PAGE = 1000
#: Columns of ``metrics.csv`` that are the x axis or bookkeeping, not curves.
_NOT_CURVES = ("step", "epoch")


def render_page(title: str, data: dict[str, Any]) -> str:
    """Return the page for ``data`` (``{"title", "root", "updated", "records": [...]}``, optionally
    ``"metrics"`` as returned by :func:`read_metrics_csv`)."""
    # "<" escaped so that no string in the data can close the <script> element.
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    return _template().replace("__TITLE__", html.escape(title)).replace("__DATA__", payload)


def find_metrics_csv(root: Path) -> Path | None:
    """The run's ``metrics.csv`` for a files-sink folder ``root``: ``root/metrics.csv`` or, the
    usual place, ``root/../metrics.csv`` (the sink writes into ``<log_dir>/featurewatch``)."""
    for candidate in (root / "metrics.csv", root.parent / "metrics.csv"):
        if candidate.is_file():
            return candidate
    return None


def read_metrics_csv(path: Path) -> dict[str, Any] | None:
    """The curves of a Lightning ``metrics.csv``: ``{"path", "columns": {name: [[step, value,
    epoch], ...]}}``, every column but ``step`` and ``epoch`` with its finite values in file
    order (empty cells, text and non-finite values left out; ``epoch`` is ``None`` without an
    ``epoch`` column; the row number stands in for a missing ``step``), at most
    :data:`METRIC_POINTS_ON_PAGE` points each. ``None`` if the file cannot be read as CSV or has
    no curve: the page is drawn without it.
    """
    columns: dict[str, list[list[Any]]] = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for row_number, row in enumerate(csv.DictReader(f)):
                step = _number(row.get("step"))
                epoch = _number(row.get("epoch"))
                x = int(step) if step is not None else row_number
                e = int(epoch) if epoch is not None else None
                for name, cell in row.items():
                    if not isinstance(name, str) or name in _NOT_CURVES:
                        continue
                    value = _number(cell)
                    if value is not None:
                        columns.setdefault(name, []).append([x, value, e])
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    if not columns:
        return None
    return {"path": str(path), "columns": {k: _thin(v) for k, v in columns.items()}}


def _number(cell: Any) -> float | None:
    if not isinstance(cell, str) or not cell.strip():
        return None
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _thin(points: list[list[Any]]) -> list[list[Any]]:
    n = len(points)
    if n <= METRIC_POINTS_ON_PAGE:
        return points
    last = METRIC_POINTS_ON_PAGE - 1
    return [points[round(i * (n - 1) / last)] for i in range(METRIC_POINTS_ON_PAGE)]


@cache
def _template() -> str:
    """The page's HTML, CSS and script: ``page.html`` next to this module (package data, so the
    page is edited as HTML, not inside a Python string)."""
    return files("featurewatch.loggers").joinpath("page.html").read_text(encoding="utf-8")
