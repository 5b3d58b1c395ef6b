"""Plain-files adapter: PNGs, a JSON-lines log and a static HTML page; no dashboard needed."""

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

from featurewatch.loggers._page import find_metrics_csv, read_metrics_csv, render_page
from featurewatch.loggers._shared import bin_values, check_pixels, safe_segments
from featurewatch.loggers.base import Event, FailedItem, Sink, WriteReport

__all__ = ["FilesSink"]

#: Text entries per key kept in ``index.html`` (``events.jsonl`` keeps all of them).
TEXTS_PER_KEY_ON_PAGE = 20


class FilesSink(Sink):
    """Write events as files under ``root``, viewable with nothing but a browser.

    Layout::

        root/images/<key path>/step_<step:08d>.png   one PNG per image (exact uint8 pixels)
        root/images/<key path>/step_<step:08d>.gif   its animation, for an animated image
        root/events.jsonl                            one JSON object per logged item
        root/index.html                              self-contained page; open it in a browser

    Each line of ``events.jsonl`` has ``kind`` (``image``/``scalar``/``histogram``/``text``),
    ``key``, ``step``, ``epoch`` and ``time`` (Unix seconds), plus: images ``path`` (relative to
    ``root``),
    ``caption``, ``width``, ``height``; scalars ``value`` (``null`` if not finite, with
    ``nonfinite`` giving ``"nan"``/``"inf"``/``"-inf"``); an image that comes with an animation
    (:class:`~featurewatch.loggers.LoggedAnimation`) also ``animation``, the path of its ``.gif``
    (written next to the PNG, same name); histograms ``counts``, ``edges`` (30 bins
    over the finite values), ``count`` and ``nonfinite``; texts ``value``. The file is strict JSON
    (no ``NaN``), so any JSON reader, including a browser's, can read it.

    ``index.html`` is re-written atomically (at most every ``page_every`` seconds), with the
    records embedded (a ``file://`` page cannot fetch files), and with the curves of the run's
    ``metrics.csv`` (Lightning's ``CSVLogger``) when ``root/..`` or ``root`` holds one; see
    :mod:`featurewatch.loggers._page` for what it shows.
    Key segments are made safe as file names (other characters become ``_``); two keys that end up
    in the same folder are told apart by a short hash. Nothing is created before the first write.
    Several writers may share a ``root`` (every featurewatch callback builds its own sinks; a
    resumed run writes into the old folder): each appends to ``events.jsonl`` and reads what the
    others appended before re-writing the page, so the page always shows every record.

    Args:
        root: directory to write into (created on the first write).
        page_every: seconds between rewrites of ``index.html`` (it embeds every record, so a long
            run would otherwise rewrite a growing page at every event); the first event and
            :meth:`close` (called at the end of ``fit``) always write it. ``0``: after every event.
        title: heading of the page (default: ``"featurewatch · <last two folders above root>"``,
            e.g. ``"featurewatch · lightning_logs/version_3"``).
    """

    def __init__(
        self, root: str | os.PathLike[str], *, title: str | None = None, page_every: float = 5.0
    ) -> None:
        if not isinstance(root, (str, os.PathLike)):
            raise TypeError(
                "FilesSink root must be a path (str or os.PathLike), "
                f"got {type(root).__name__} {root!r}"
            )
        if title is not None and not isinstance(title, str):
            raise TypeError(f"FilesSink title must be a str or None, got {type(title).__name__}")
        if (
            isinstance(page_every, bool)
            or not isinstance(page_every, (int, float))
            or page_every < 0
        ):
            raise ValueError(
                f"FilesSink page_every must be a number of seconds >= 0, got {page_every!r}"
            )
        self.page_every = float(page_every)
        self._page_written = -math.inf  # monotonic time of the last page write
        self._page_stale = False
        self.root = Path(root)
        run = "/".join(self.root.resolve().parent.parts[1:][-2:])  # e.g. lightning_logs/version_3
        self.title = title or (f"featurewatch · {run}" if run else "featurewatch")
        # Records are not kept in memory (a long run, with one sink per callback, would grow the
        # process by every record times every sink): the page reads them back from the log.
        self._read_up_to = 0  # bytes of events.jsonl this sink has looked at
        self._folders: dict[str, str] = {}  # image folder (relative to root) -> its key

    @property
    def index_html(self) -> Path:
        """The page to open in a browser."""
        return self.root / "index.html"

    @property
    def events_jsonl(self) -> Path:
        """The JSON-lines log of every item."""
        return self.root / "events.jsonl"

    @property
    def destination(self) -> str:
        return f"FilesSink ({self.root})"

    def write(self, event: Event) -> None:
        if not event:
            return
        # Other writers may share this folder: every featurewatch callback builds its own sinks,
        # and a resumed run appends to the old log. The log is the one truth; read what they added.
        # If the folder cannot be made or read, nothing can be written: that raises (and the sink
        # is marked broken, see Sink).
        self._catch_up()
        report = WriteReport(self, event)
        base = {"step": event.step, "epoch": event.epoch, "time": round(time.time(), 3)}
        records: list[dict[str, Any]] = []
        taken: set[str] = set()
        for image in event.images:
            path = None
            with report.item("image", image.key):
                pixels = check_pixels(image)
                path = self._image_path(image.key, event.step, taken)
                _atomic_write(self.root / path, _png_bytes(pixels))
                taken.add(path)
                height, width = pixels.shape[:2]
                records.append(
                    {
                        "kind": "image",
                        "key": image.key,
                        **base,
                        "path": path,
                        "caption": image.caption,
                        "width": int(width),
                        "height": int(height),
                    }
                )
            gif = getattr(image, "gif", b"")  # a LoggedAnimation: its GIF next to the PNG
            if gif and path is not None and records and records[-1].get("path") == path:
                with report.item("animation", image.key):
                    animation = path[: -len(".png")] + ".gif"
                    _atomic_write(self.root / animation, gif)
                    records[-1]["animation"] = animation
        for key, value in event.scalars.items():
            with report.item("scalar", key):
                record: dict[str, Any] = {"kind": "scalar", "key": key, **base, "value": value}
                if not math.isfinite(value):
                    record.update(value=None, nonfinite=str(value))
                records.append(record)
        for key, values in event.histograms.items():
            with report.item("histogram", key):
                hist = bin_values(values)
                records.append(
                    {
                        "kind": "histogram",
                        "key": key,
                        **base,
                        "counts": hist.counts.tolist(),
                        "edges": hist.edges.tolist(),
                        "count": int(hist.counts.sum()),
                        "nonfinite": hist.nonfinite,
                    }
                )
        for key, text in event.texts.items():
            with report.item("text", key):
                records.append({"kind": "text", "key": key, **base, "value": text})

        lines = "".join(json.dumps(r, allow_nan=False, ensure_ascii=False) + "\n" for r in records)
        try:
            with open(self.events_jsonl, "ab") as f:
                f.write(lines.encode("utf-8"))
                self._read_up_to = f.tell()
        except Exception as err:  # noqa: BLE001 - no record reached the log: every item is lost
            report.lost(err)
            report.raise_failures()
        # The page embeds every record, so rewriting it costs O(run length): do it at most every
        # `page_every` seconds (the first event at once), and always in close().
        self._page_stale = True
        if time.monotonic() - self._page_written >= self.page_every:
            try:
                self._flush_page()
            except Exception as err:  # noqa: BLE001 - the log has the records; the page lags
                report.failed.append(FailedItem("page", str(self.index_html), err))
        report.raise_failures()

    def close(self) -> None:
        """Write the page if events arrived since it was last written (with what other writers of
        this folder added meanwhile, so the last sink to close leaves the complete page)."""
        if self._page_stale and not self.broken:
            self._catch_up()
            self._flush_page()

    def _flush_page(self) -> None:
        self._write_page(self._read_log())
        self._page_written = time.monotonic()
        self._page_stale = False

    # ------------------------------------------------------------------ internals
    def _catch_up(self) -> None:
        """Look at the records other writers appended to ``events.jsonl`` since this sink last
        looked (the image folders they use are theirs).

        A last line without a newline is the remnant of a run killed mid-write: it is skipped (with
        a warning) and terminated, so that the next record starts on a line of its own.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.events_jsonl, "a+b") as f:
            f.seek(self._read_up_to)
            chunk = f.read()
            if chunk and not chunk.endswith(b"\n"):
                f.write(b"\n")
            self._read_up_to = f.tell()
        bad = 0
        for line in chunk.splitlines():
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                bad += 1
                continue
            if not (isinstance(record, dict) and {"kind", "key", "step"} <= record.keys()):
                bad += 1
                continue
            if record["kind"] == "image" and isinstance(record.get("path"), str):
                self._folders.setdefault(posixpath.dirname(record["path"]), record["key"])
        if bad:
            warnings.warn(
                f"featurewatch: skipped {bad} unreadable line(s) of {self.events_jsonl}; "
                "the page leaves them out",
                stacklevel=3,
            )

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

    def _read_log(self) -> list[dict[str, Any]]:
        """Every readable record of ``events.jsonl``, in file order (:meth:`_catch_up` warns about
        the unreadable lines)."""
        records = []
        with open(self.events_jsonl, "rb") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue
                if isinstance(record, dict) and {"kind", "key", "step"} <= record.keys():
                    records.append(record)
        return records

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
        metrics_csv = find_metrics_csv(self.root)
        metrics = read_metrics_csv(metrics_csv) if metrics_csv is not None else None
        if metrics is not None:
            data["metrics"] = metrics
        _atomic_write(self.index_html, render_page(self.title, data).encode("utf-8"))


def _png_bytes(pixels: Any) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _atomic_write(path: Path, data: bytes) -> None:
    """Write via a temporary file and ``os.replace``, so a reader never sees half a file."""
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
