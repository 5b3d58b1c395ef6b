"""Plain-files adapter: PNGs, a JSON-lines log and one static HTML page, for runs without a dashboard."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import posixpath
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from featurewatch.loggers._page import render_page
from featurewatch.loggers._shared import bin_values, check_pixels, safe_segments
from featurewatch.loggers.base import Event, Sink

__all__ = ["FilesSink"]

#: Text entries per key kept in ``index.html`` (``events.jsonl`` keeps all of them).
TEXTS_PER_KEY_ON_PAGE = 20


class FilesSink(Sink):
    """Write events as files under ``root``, viewable with nothing but a browser.

    Layout::

        root/images/<key path>/step_<step:08d>.png   one PNG per image (exact uint8 pixels)
        root/events.jsonl                            one JSON object per logged item
        root/index.html                              self-contained page; open it in a browser

    Each line of ``events.jsonl`` has ``kind`` (``image``/``scalar``/``histogram``/``text``), ``key``,
    ``step``, ``epoch`` and ``time`` (Unix seconds), plus: images ``path`` (relative to ``root``),
    ``caption``, ``width``, ``height``; scalars ``value`` (``null`` if not finite, with
    ``nonfinite`` giving ``"nan"``/``"inf"``/``"-inf"``); histograms ``counts``, ``edges`` (30 bins
    over the finite values), ``count`` and ``nonfinite``; texts ``value``. The file is strict JSON
    (no ``NaN``), so any JSON reader, including a browser's, can read it.

    ``index.html`` is re-written atomically after every event, with the records embedded (a
    ``file://`` page cannot fetch files); see :mod:`featurewatch.loggers._page` for what it shows.
    Key segments are made safe as file names (other characters become ``_``); two keys that end up
    in the same folder are told apart by a short hash. Nothing is created before the first write.
    Writing to a ``root`` that already holds ``events.jsonl`` (a resumed run) appends to it, and the
    page shows old and new records.

    Args:
        root: directory to write into (created on the first write).
        title: heading of the page (default: ``"featurewatch · <parent folder name>"``).
    """

    def __init__(self, root: str | os.PathLike[str], *, title: str | None = None) -> None:
        if not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"FilesSink root must be a path (str or os.PathLike), got {type(root).__name__} {root!r}")
        if title is not None and not isinstance(title, str):
            raise TypeError(f"FilesSink title must be a str or None, got {type(title).__name__}")
        self.root = Path(root)
        self.title = title or f"featurewatch · {self.root.resolve().parent.name or self.root}"
        self._records: list[dict[str, Any]] | None = None
        self._folders: dict[str, str] = {}  # image folder (relative to root) -> the key it belongs to

    @property
    def index_html(self) -> Path:
        """The page to open in a browser."""
        return self.root / "index.html"

    @property
    def events_jsonl(self) -> Path:
        """The JSON-lines log of every item."""
        return self.root / "events.jsonl"

    def write(self, event: Event) -> None:
        if self._records is None:
            self._records = self._load()
        if not event:
            return
        now = round(time.time(), 3)
        base = {"step": event.step, "epoch": event.epoch, "time": now}
        records: list[dict[str, Any]] = []
        written: set[str] = set()
        for image in event.images:
            pixels = check_pixels(image)
            path = self._image_path(image.key, event.step, written)
            _atomic_write(self.root / path, _png_bytes(pixels))
            written.add(path)
            records.append(
                {"kind": "image", "key": image.key, **base, "path": path, "caption": image.caption,
                 "width": int(pixels.shape[1]), "height": int(pixels.shape[0])}
            )
        for key, value in event.scalars.items():
            record: dict[str, Any] = {"kind": "scalar", "key": key, **base, "value": value}
            if not math.isfinite(value):
                record.update(value=None, nonfinite=str(value))
            records.append(record)
        for key, values in event.histograms.items():
            hist = bin_values(values)
            records.append(
                {"kind": "histogram", "key": key, **base, "counts": hist.counts.tolist(),
                 "edges": hist.edges.tolist(), "count": int(hist.counts.sum()), "nonfinite": hist.nonfinite}
            )
        for key, text in event.texts.items():
            records.append({"kind": "text", "key": key, **base, "value": text})

        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.events_jsonl, "a", encoding="utf-8") as f:
            f.writelines(json.dumps(r, allow_nan=False, ensure_ascii=False) + "\n" for r in records)
        self._records.extend(records)
        self._write_page(self._records)

    # ------------------------------------------------------------------ internals
    def _load(self) -> list[dict[str, Any]]:
        """Records already in ``events.jsonl`` (a resumed run writes into the same folder)."""
        if not self.events_jsonl.exists():
            return []
        records, bad = [], 0
        with open(self.events_jsonl, encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # e.g. the last line of a run that was killed mid-write
                    bad += 1
                    continue
                if isinstance(record, dict) and {"kind", "key", "step"} <= record.keys():
                    records.append(record)
                    if record["kind"] == "image" and isinstance(record.get("path"), str):
                        self._folders.setdefault(posixpath.dirname(record["path"]), record["key"])
                else:
                    bad += 1
        if bad:
            warnings.warn(
                f"featurewatch: skipped {bad} unreadable line(s) of {self.events_jsonl}; the page leaves them out",
                stacklevel=3,
            )
        return records

    def _image_path(self, key: str, step: int, taken: set[str]) -> str:
        """``images/<safe key>/step_<step:08d>.png``, unique per key (and within one event)."""
        folder = posixpath.join("images", *safe_segments(key))
        owner = self._folders.setdefault(folder, key)
        if owner != key:
            folder = f"{folder}_{hashlib.sha1(key.encode()).hexdigest()[:8]}"
            self._folders.setdefault(folder, key)
        path, n = f"{folder}/step_{step:08d}.png", 1
        while path in taken:
            path, n = f"{folder}/step_{step:08d}_{n}.png", n + 1
        return path

    def _write_page(self, records: list[dict[str, Any]]) -> None:
        texts_seen: dict[str, int] = {}
        shown = []
        for record in reversed(records):
            if record["kind"] == "text":
                texts_seen[record["key"]] = texts_seen.get(record["key"], 0) + 1
                if texts_seen[record["key"]] > TEXTS_PER_KEY_ON_PAGE:
                    continue
            shown.append(record)
        shown.reverse()
        data = {
            "title": self.title,
            "root": str(self.root.resolve()),
            "updated": time.strftime("%Y-%m-%d %H:%M:%S"),
            "records": shown,
        }
        _atomic_write(self.index_html, render_page(self.title, data).encode("utf-8"))


def _png_bytes(pixels: Any) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _atomic_write(path: Path, data: bytes) -> None:
    """Write via a temporary file and ``os.replace``: a browser reloading meanwhile never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; these are meant to be read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
