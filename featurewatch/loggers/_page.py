"""The self-contained ``index.html`` that :class:`~featurewatch.loggers.files.FilesSink` writes.

One static file, no external CSS/JS and no ``fetch`` (``file://`` pages may not fetch): the records
of ``events.jsonl`` are embedded as JSON and drawn by a small script. Images are referenced by their
relative paths, which ``<img>`` may load from ``file://``.

What the page shows:

* a sticky step slider over every logged step (arrow keys step through it); each card shows the
  latest item at or before the selected step, greyed out if the key was first logged later;
* per image key, the image (small images scaled up without smoothing; click opens the PNG), its
  step, epoch and caption, and its own slider to scrub that key alone; an image logged with an
  animation (its record has ``animation``, a GIF path) shows the animated GIF below the still;
* per scalar key, an inline SVG line chart with the selected step marked;
* per histogram key, the bar chart at the selected step; per text key, the latest entries.

URL parameters (query or hash): ``step=N`` selects the latest step ``<= N``; ``live=1`` reloads
the page every 10 s (keeping the scroll position). The hash follows the slider, so a reload or a
shared link shows the same step. When every displayed image has loaded, ``<body data-ready="1">``
(``"error"`` if one failed) and every ``<img>`` records ``data-natural-width``/``-height``.
"""

from __future__ import annotations

import html
import json
from functools import cache
from importlib.resources import files
from typing import Any

__all__ = ["render_page"]


def render_page(title: str, data: dict[str, Any]) -> str:
    """Return the page for ``data`` (``{"title", "root", "updated", "records": [...]}``)."""
    # "<" escaped so that no string in the data can close the <script> element.
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    return _template().replace("__TITLE__", html.escape(title)).replace("__DATA__", payload)


@cache
def _template() -> str:
    """The page's HTML, CSS and script: ``page.html`` next to this module (package data, so the
    page is edited as HTML, not inside a Python string)."""
    return files("featurewatch.loggers").joinpath("page.html").read_text(encoding="utf-8")
