"""Read what a run logged - a files-sink folder or TensorBoard event files - into one model.

Both back-ends end up as the same :class:`Run`: per key, the images (PNG bytes with step, epoch
and caption), scalars, histograms and texts, in step order. Subcommands (``report`` now, ``replay``
and ``render`` later) work on that model and never on a back-end's format.

Where the data is (:func:`find_run`): ``RUN`` may be a files-sink folder (holding
``events.jsonl``), a logger's ``log_dir`` (holding ``featurewatch/events.jsonl``, or TensorBoard
event files), or any folder above exactly one of those (a TensorBoard ``--logdir``).

What TensorBoard lacks and how it is recovered: images there have no caption or epoch. The
TensorBoard sink logs each call's captions as one Markdown table under
``featurewatch/<what>/captions`` headed ``epoch E · step S``; those tables give back the captions
and the epoch. Steps that have no table take the epoch from Lightning's own ``epoch`` scalar at
that step when there is one.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featurewatch.cli.common import CLIError, progress
from featurewatch.loggers import strip_context

__all__ = [
    "HistogramFrame",
    "ImageFrame",
    "Run",
    "RunLocation",
    "ScalarPoint",
    "TextEntry",
    "find_run",
    "natural_key",
    "read_run",
]

FILES_LOG = "events.jsonl"
TFEVENTS = "events.out.tfevents."
#: Folder names a files sink writes into inside a logger's folder / the trainer's root dir.
FILES_DIRS = ("featurewatch", "featurewatch_logs")
PREFIX = "featurewatch/"
#: Uniform bins TensorBoard histograms are re-binned into (TensorBoard's own buckets are
#: exponential, hundreds of them).
HISTOGRAM_BINS = 30


def natural_key(text: str) -> list[Any]:
    """Sort key that orders numbers by value: ``features.2`` before ``features.13``."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t.lower()) for t in re.split(r"(\d+)", text)]


# ---------------------------------------------------------------------------------------- model
@dataclass(frozen=True)
class ImageFrame:
    """One logged image: where in training it is from, its caption, and how to get its PNG."""

    step: int
    epoch: int | None
    caption: str
    width: int
    height: int
    load: Callable[[], bytes] = field(repr=False, compare=False)

    def png(self) -> bytes:
        """The PNG bytes, exactly as logged."""
        return self.load()


@dataclass(frozen=True)
class ScalarPoint:
    step: int
    epoch: int | None
    #: ``None`` for a non-finite value (NaN, inf), which breaks a curve.
    value: float | None


@dataclass(frozen=True)
class HistogramFrame:
    """Counts between ``edges`` (``len(edges) == len(counts) + 1``, increasing)."""

    step: int
    epoch: int | None
    edges: tuple[float, ...]
    counts: tuple[float, ...]


@dataclass(frozen=True)
class TextEntry:
    step: int
    epoch: int | None
    text: str


@dataclass
class Run:
    """Everything featurewatch logged in one run, per kind and key, each list in step order."""

    source: Path
    #: ``"files"`` (a files-sink folder) or ``"tensorboard"`` (event files)
    format: str
    images: dict[str, list[ImageFrame]] = field(default_factory=dict)
    scalars: dict[str, list[ScalarPoint]] = field(default_factory=dict)
    histograms: dict[str, list[HistogramFrame]] = field(default_factory=dict)
    texts: dict[str, list[TextEntry]] = field(default_factory=dict)
    #: Things the reader skipped or could not recover (shown on the report).
    notes: list[str] = field(default_factory=list)

    @property
    def steps(self) -> list[int]:
        """Every step at which something was logged, increasing."""
        found: set[int] = set()
        for by_key in (self.images, self.scalars, self.histograms, self.texts):
            for entries in by_key.values():
                found.update(e.step for e in entries)
        return sorted(found)

    def epochs(self) -> dict[int, int]:
        """``{step: epoch}`` for every step some entry knows the epoch of."""
        found: dict[int, int] = {}
        for by_key in (self.images, self.scalars, self.histograms, self.texts):
            for entries in by_key.values():
                for e in entries:
                    if e.epoch is not None:
                        found.setdefault(e.step, e.epoch)
        return found

    def __bool__(self) -> bool:
        return bool(self.images or self.scalars or self.histograms or self.texts)


def _ordered(by_key: dict[tuple[str, int], Any]) -> dict[str, list[Any]]:
    """``{(key, step): entry}`` (the last entry per step won) -> ``{key: [entries by step]}``."""
    out: dict[str, list[Any]] = {}
    for (key, _), entry in sorted(by_key.items(), key=lambda kv: (natural_key(kv[0][0]), kv[0][1])):
        out.setdefault(key, []).append(entry)
    return out


# ------------------------------------------------------------------------------------ discovery
@dataclass(frozen=True)
class RunLocation:
    """A folder holding one run's featurewatch output, and in which format."""

    folder: Path
    format: str  # "files" | "tensorboard"

    def describe(self) -> str:
        what = "files sink" if self.format == "files" else "TensorBoard event files"
        return f"{self.folder} ({what})"


def _has_tfevents(folder: Path) -> bool:
    try:
        return any(p.name.startswith(TFEVENTS) and p.is_file() for p in folder.iterdir())
    except OSError:
        return False


def _direct(folder: Path) -> RunLocation | None:
    """The run in ``folder`` itself or in its files-sink subfolder, if any."""
    if (folder / FILES_LOG).is_file():
        return RunLocation(folder, "files")
    for name in FILES_DIRS:
        if (folder / name / FILES_LOG).is_file():
            return RunLocation(folder / name, "files")
    if _has_tfevents(folder):
        return RunLocation(folder, "tensorboard")
    return None


def find_run(path: str | os.PathLike[str]) -> RunLocation:
    """Locate the one run under ``path`` (see the module docstring for what ``path`` may be).

    Raises:
        CLIError: if ``path`` does not exist, is empty, holds no featurewatch output, or holds
            several runs (the message lists them, so the user can pick one).
    """
    path = Path(path)
    if not path.exists():
        raise CLIError(
            f"RUN {str(path)!r} does not exist; pass a run folder (a logger's log_dir, its "
            "featurewatch/ folder, or a TensorBoard log dir)"
        )
    if path.is_file():
        if path.name == FILES_LOG:
            return RunLocation(path.parent, "files")
        if path.name.startswith(TFEVENTS):
            return RunLocation(path.parent, "tensorboard")
        raise CLIError(
            f"RUN {str(path)!r} is a file, not a run folder; pass the folder that holds "
            f"{FILES_LOG} or TensorBoard event files ({TFEVENTS}*)"
        )
    try:
        empty = not any(path.iterdir())
    except OSError as err:
        raise CLIError(f"cannot read RUN folder {str(path)!r}: {err.strerror or err}") from None
    if empty:
        raise CLIError(
            f"RUN folder {str(path)!r} is empty; point at the folder a featurewatch run wrote "
            "(e.g. lightning_logs/version_0)"
        )
    found = _direct(path)
    if found is not None:
        return found
    runs: list[RunLocation] = []
    for root, dirs, _ in os.walk(path):
        dirs[:] = sorted(
            (d for d in dirs if not d.startswith(".") and d != "images"), key=natural_key
        )
        here = _direct(Path(root))
        if here is not None and here not in runs:
            runs.append(here)
            if here.format == "files":
                dirs[:] = [d for d in dirs if d not in FILES_DIRS]
    if not runs:
        raise CLIError(
            f"no featurewatch output in {str(path)!r}: expected {FILES_LOG} (the files sink's "
            f"folder, <log_dir>/featurewatch/) or TensorBoard event files ({TFEVENTS}*) in it or "
            "in a subfolder"
        )
    if len(runs) > 1:
        listed = ", ".join(r.describe() for r in runs[:6]) + (", ..." if len(runs) > 6 else "")
        raise CLIError(
            f"{str(path)!r} holds {len(runs)} runs: {listed}; pass the folder of the one to show"
        )
    return runs[0]


def read_run(location: RunLocation) -> Run:
    """Read the run at ``location`` (see :func:`find_run`).

    Raises:
        CLIError: if nothing featurewatch logged is found there.
    """
    if location.format == "files":
        return read_files(location.folder)
    return read_tensorboard(location.folder)


# ---------------------------------------------------------------------------------- files sink
def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_files(folder: Path) -> Run:
    """Read a :class:`~featurewatch.loggers.FilesSink` folder (``events.jsonl`` + ``images/``)."""
    log = folder / FILES_LOG
    run = Run(source=folder, format="files")
    images: dict[tuple[str, int], ImageFrame] = {}
    scalars: dict[tuple[str, int], ScalarPoint] = {}
    histograms: dict[tuple[str, int], HistogramFrame] = {}
    texts: dict[tuple[str, int], TextEntry] = {}
    bad = missing = 0
    try:
        lines = log.read_bytes().splitlines()
    except OSError as err:
        raise CLIError(f"cannot read {log}: {err.strerror or err}") from None
    for line in progress(lines, desc="reading events.jsonl", unit="records"):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            bad += 1
            continue
        step = _int_or_none(r.get("step")) if isinstance(r, dict) else None
        key = r.get("key") if isinstance(r, dict) else None
        if step is None or not isinstance(key, str):
            bad += 1
            continue
        epoch = _int_or_none(r.get("epoch"))
        kind = r.get("kind")
        try:
            if kind == "image":
                path = folder / str(r["path"])
                if not path.is_file():
                    missing += 1
                    continue
                images[key, step] = ImageFrame(
                    step,
                    epoch,
                    # as the TensorBoard sink's caption tables hold it: no repeated epoch/step
                    strip_context(
                        str(r.get("caption") or ""), step, -1 if epoch is None else epoch
                    ),
                    int(r.get("width") or 0),
                    int(r.get("height") or 0),
                    load=path.read_bytes,
                )
            elif kind == "scalar":
                value = r.get("value")
                value = float(value) if isinstance(value, (int, float)) else None
                scalars[key, step] = ScalarPoint(step, epoch, value)
            elif kind == "histogram":
                edges, counts = tuple(map(float, r["edges"])), tuple(map(float, r["counts"]))
                if counts and len(edges) == len(counts) + 1:
                    histograms[key, step] = HistogramFrame(step, epoch, edges, counts)
            elif kind == "text":
                texts[key, step] = TextEntry(step, epoch, str(r.get("value", "")))
            else:
                bad += 1
        except (KeyError, TypeError, ValueError):
            bad += 1
    run.images, run.scalars = _ordered(images), _ordered(scalars)
    run.histograms, run.texts = _ordered(histograms), _ordered(texts)
    if bad:
        run.notes.append(f"{bad} unreadable line(s) of {log} were skipped")
    if missing:
        run.notes.append(f"{missing} image(s) listed in {log} are missing from {folder / 'images'}")
    if not run:
        raise CLIError(
            f"{log} holds no featurewatch records"
            + (f" ({bad} unreadable line(s))" if bad else "")
            + "; was the run stopped before the first featurewatch call?"
        )
    return run


# --------------------------------------------------------------------------------- TensorBoard
_CAPTION_HEAD = re.compile(r"^epoch (\d+) · step (\d+)")
_CAPTION_ROW = re.compile(r"^\| `(.+?)` \| (.*) \|$")


def _parse_captions(table: str) -> tuple[int | None, dict[str, str]]:
    """A TensorBoard sink captions table -> (epoch, {image name: caption})."""
    head = _CAPTION_HEAD.match(table)
    rows = {}
    for line in table.splitlines():
        m = _CAPTION_ROW.match(line)
        if m:
            rows[m.group(1)] = m.group(2).replace("\\|", "|")
    return (int(head.group(1)) if head else None), rows


def _unindent(text: str) -> str:
    """Undo the TensorBoard sink's Markdown code block (every line indented by 4 spaces)."""
    lines = text.split("\n")
    if all(line.startswith("    ") or not line for line in lines):
        return "\n".join(line[4:] for line in lines)
    return text


def _rebin(lo: float, hi: float, limits: list[float], counts: list[float]) -> HistogramFrame | None:
    """TensorBoard's buckets (right edges ``limits``) -> ``HISTOGRAM_BINS`` uniform bins."""
    if not counts or not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    if hi <= lo:
        return HistogramFrame(0, None, (lo - 0.5, lo + 0.5), (float(sum(counts)),))
    width = (hi - lo) / HISTOGRAM_BINS
    out = [0.0] * HISTOGRAM_BINS
    left = lo
    for right, count in zip(limits, counts):
        right = min(max(right, lo), hi) if math.isfinite(right) else hi
        if count:
            middle = (max(left, lo) + right) / 2
            out[min(int((middle - lo) / width), HISTOGRAM_BINS - 1)] += count
        left = right
    edges = tuple(lo + i * width for i in range(HISTOGRAM_BINS)) + (hi,)
    return HistogramFrame(0, None, edges, tuple(out))


def _event_files(folder: Path) -> list[Path]:
    def order(p: Path) -> tuple[int, str]:
        stamp = p.name[len(TFEVENTS) :].split(".", 1)[0]
        return (int(stamp) if stamp.isdigit() else 0, p.name)

    return sorted((p for p in folder.iterdir() if p.name.startswith(TFEVENTS)), key=order)


def read_tensorboard(folder: Path) -> Run:
    """Read the TensorBoard event files in ``folder`` (one run; resumed runs' files in order)."""
    try:
        from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
        from tensorboard.util import tensor_util
    except ImportError:
        raise CLIError(
            "reading TensorBoard event files needs the tensorboard package: "
            "pip install tensorboard (or featurewatch[tensorboard])"
        ) from None
    files = _event_files(folder)
    raw_images: dict[tuple[str, int], tuple[bytes, int, int]] = {}
    scalars: dict[tuple[str, int], float | None] = {}
    histograms: dict[tuple[str, int], HistogramFrame] = {}
    texts: dict[tuple[str, int], str] = {}
    captions: dict[tuple[str, int], tuple[int | None, dict[str, str]]] = {}
    lightning_epoch: dict[int, int] = {}
    other_tags: set[str] = set()
    unreadable: list[str] = []

    def events(path: Path) -> Iterable[Any]:
        try:
            yield from LegacyEventFileLoader(str(path)).Load()
        except Exception as err:  # noqa: BLE001 - a truncated/corrupt file: keep what was read
            unreadable.append(f"{path.name}: {type(err).__name__}: {err}")

    for path in progress(files, desc="reading event files", unit="files"):
        for event in events(path):
            if not event.HasField("summary"):
                continue
            step = int(event.step)
            for value in event.summary.value:
                tag, kind = value.tag, value.WhichOneof("value")
                if tag == "epoch" and kind == "simple_value":
                    lightning_epoch[step] = round(value.simple_value)
                    continue
                if not tag.startswith(PREFIX):
                    other_tags.add(tag)
                    continue
                plugin = value.metadata.plugin_data.plugin_name
                if kind == "image":
                    image = value.image
                    raw_images[tag, step] = (
                        image.encoded_image_string,
                        int(image.width),
                        int(image.height),
                    )
                elif kind == "simple_value":
                    v = float(value.simple_value)
                    scalars[tag, step] = v if math.isfinite(v) else None
                elif kind == "histo":
                    h = value.histo
                    frame = _rebin(h.min, h.max, list(h.bucket_limit), list(h.bucket))
                    if frame is not None:
                        histograms[tag, step] = frame
                elif kind == "tensor" and plugin == "text":
                    key = tag.removesuffix("/text_summary")
                    array = tensor_util.make_ndarray(value.tensor)
                    text = array.reshape(-1)[0] if array.size else b""
                    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
                    if key.endswith("/captions"):
                        captions[key[: -len("/captions")], step] = _parse_captions(text)
                    else:
                        texts[key, step] = _unindent(text)
                elif kind == "tensor" and plugin == "scalars":
                    array = tensor_util.make_ndarray(value.tensor)
                    v = float(array.reshape(-1)[0]) if array.size else math.nan
                    scalars[tag, step] = v if math.isfinite(v) else None

    epochs: dict[int, int] = dict(lightning_epoch)
    for (_, step), (epoch, _) in captions.items():
        if epoch is not None:
            epochs[step] = epoch

    def epoch_of(group: str, step: int) -> int | None:
        own = captions.get((group, step))
        if own is not None and own[0] is not None:
            return own[0]
        return epochs.get(step)

    def group_of(key: str) -> str:
        return key.rsplit("/", 1)[0]

    images: dict[tuple[str, int], ImageFrame] = {}
    for (key, step), (png, width, height) in raw_images.items():
        group = group_of(key)
        caption = captions.get((group, step), (None, {}))[1].get(key[len(group) + 1 :], "")
        images[key, step] = ImageFrame(
            step, epoch_of(group, step), caption, width, height, load=lambda png=png: png
        )
    run = Run(source=folder, format="tensorboard")
    run.images = _ordered(images)
    run.scalars = _ordered(
        {k: ScalarPoint(k[1], epoch_of(group_of(k[0]), k[1]), v) for k, v in scalars.items()}
    )
    run.histograms = _ordered(
        {
            k: HistogramFrame(k[1], epoch_of(group_of(k[0]), k[1]), h.edges, h.counts)
            for k, h in histograms.items()
        }
    )
    run.texts = _ordered(
        {k: TextEntry(k[1], epoch_of(group_of(k[0]), k[1]), t) for k, t in texts.items()}
    )
    run.notes.extend(f"could not read all of event file {u}" for u in unreadable)
    if not run:
        shown = ", ".join(sorted(other_tags, key=natural_key)[:8])
        raise CLIError(
            f"the TensorBoard event files in {str(folder)!r} hold no featurewatch/ tags"
            + (f" (only {len(other_tags)} other tag(s): {shown})" if other_tags else "")
            + "; was a featurewatch callback attached to this run?"
        )
    return run
