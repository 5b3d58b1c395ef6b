"""``featurewatch report RUN -o report.html``: one self-contained page of a run's evolution.

The page embeds everything (images as ``data:`` URIs, charts as inline SVG, a small inline script
for the sliders): it opens from disk, by mail or in an artifact store, with no network and no
server. It is organized by callback (one section per key group, ``featurewatch/<what>/...``) and
inside each by layer, keys in natural order (``features.2`` before ``features.13``):

* per image key, the frame at a step with its caption, step and epoch, a slider over every logged
  step, and a filmstrip of at most :data:`FILMSTRIP` frames spread evenly over the run (click one
  to show it); small images are scaled up without smoothing;
* per scalar key, an SVG curve (hover a point for its value); a metric logged for several layers
  (drift ``cka_previous``, ``dead_fraction``) also gets one chart of every layer;
* per histogram key, the first and the last histogram; texts (errors, alerts) collapsed;
* a sticky bar whose slider moves every key to its latest frame at or before a step.

``#step=N`` in the URL selects step ``N`` on load (as if the bar's slider was moved there). When
every image has decoded, ``<body data-ready="1">`` (``"error"`` if one failed) and every ``<img>``
carries ``data-natural-width``/``-height``.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

from featurewatch.cli.common import CLIError, progress
from featurewatch.cli.readers import (
    HistogramFrame,
    ImageFrame,
    Run,
    ScalarPoint,
    TextEntry,
    find_run,
    natural_key,
    read_run,
)

__all__ = ["FILMSTRIP", "build_page", "configure", "run"]

#: Frames in an image key's filmstrip (evenly spread, first and last included).
FILMSTRIP = 12
#: Text entries per key on the page (the latest ones).
TEXTS_PER_KEY = 30

#: key group -> (section title, what it shows)
SECTIONS: dict[str, tuple[str, str]] = {
    "filters": ("Filters", "FilterWeights: the filters of the convolution that sees the pixels"),
    "activations": ("Activation grids", "ActivationGrid: feature maps of the fixed probe images"),
    "channels": (
        "Channel visualizations",
        "ChannelVisualization: images optimized to excite each channel",
    ),
    "class_model": (
        "Class model images",
        "ClassModelVisualization: images optimized for each class",
    ),
    "deepdream": ("DeepDream", "DeepDream: probe images that amplify what a layer detects"),
    "examples": (
        "Dataset examples",
        "DatasetExamples: the images that excite each channel most, with receptive fields",
    ),
    "attribution": ("Attribution", "AttributionMaps: where the network looks in the probe images"),
    "drift": (
        "Feature drift",
        (
            "FeatureDrift: linear CKA of each layer's activations on the probe with the previous "
            "and the first call (1 = unchanged)"
        ),
    ),
    "dead": ("Dead filters", "DeadNeuronMonitor: channels that stopped firing"),
}
#: callback name (in ``featurewatch/<name>/seconds`` and ``.../error``) -> its key group
CALLBACK_GROUP = {
    "filter_weights": "filters",
    "activation_grid": "activations",
    "channel_visualization": "channels",
    "deep_dream": "deepdream",
    "dead_neurons": "dead",
    "feature_drift": "drift",
}
#: colours of several layers in one chart, first layer darkest (viridis samples)
PALETTE = (
    "#440154",
    "#482475",
    "#414487",
    "#355f8d",
    "#2a788e",
    "#21918c",
    "#22a884",
    "#44bf70",
    "#7ad151",
    "#bddf26",
)


# ------------------------------------------------------------------------------ command line
def configure(parser: argparse.ArgumentParser) -> None:
    """Add ``report``'s arguments to its subparser."""
    parser.add_argument(
        "run",
        metavar="RUN",
        help="a run's folder: a logger's log_dir, its featurewatch/ folder (files sink), or a "
        "TensorBoard log dir holding one run's event files",
    )
    parser.add_argument(
        "-o",
        "--output",
        default="report.html",
        metavar="FILE",
        help="the page to write (default: %(default)s)",
    )
    parser.add_argument("--title", default=None, help="page heading (default: from RUN's path)")
    parser.add_argument(
        "--max-frames",
        type=int,
        default=200,
        metavar="N",
        help="at most N steps per image key on the page, evenly spread, first and last kept; 0 = "
        "all (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    """Write the report; print one line saying where."""
    if args.max_frames < 0:
        raise CLIError(f"--max-frames must be 0 (all) or a positive number, got {args.max_frames}")
    output = Path(args.output)
    if output.is_dir():
        raise CLIError(
            f"--output {str(output)!r} is a folder; give a file name such as report.html"
        )
    if not output.parent.resolve().is_dir():
        raise CLIError(
            f"cannot write {str(output)!r}: folder {str(output.parent)!r} does not exist"
        )
    location = find_run(args.run)
    data = read_run(location)
    title = args.title or f"featurewatch report · {_short(location.folder)}"
    page = build_page(data, title=title, max_frames=args.max_frames)
    _atomic_write(output, page.encode("utf-8"))
    images = len(data.images)
    print(
        f"wrote {output} ({len(page) / 1e6:.1f} MB): {images} image key{'s' * (images != 1)}, "
        f"{len(data.scalars)} scalar, {len(data.histograms)} histogram, {len(data.texts)} text "
        f"over {len(data.steps)} steps, from {location.describe()}"
    )
    return 0


def _short(folder: Path) -> str:
    parts = folder.resolve().parts
    if parts and parts[-1] in ("featurewatch", "featurewatch_logs") and len(parts) > 1:
        parts = parts[:-1]
    return "/".join(parts[-2:]) if len(parts) > 1 else str(folder)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent.resolve(), prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------------ layout
@dataclass
class _Group:
    """One callback's section: cards that belong to no layer, then one block per layer."""

    name: str
    top: list[str] = field(default_factory=list)  # keys
    layers: dict[str, list[str]] = field(default_factory=dict)


def _place(key: str) -> tuple[str, str | None]:
    """``featurewatch/<what>/<layer>/<item>`` -> (group, layer); ``(group, None)`` for 3 parts."""
    parts = key.split("/")
    if len(parts) < 3 or parts[0] != "featurewatch":
        return "other", None
    group = CALLBACK_GROUP.get(parts[1], parts[1])
    return group, ("/".join(parts[2:-1]) if len(parts) > 3 else None)


def _groups(data: Run) -> list[_Group]:
    keys = sorted({*data.images, *data.scalars, *data.histograms, *data.texts}, key=natural_key)
    groups: dict[str, _Group] = {}
    for key in keys:
        name, layer = _place(key)
        group = groups.setdefault(name, _Group(name))
        if layer is None:
            group.top.append(key)
        else:
            group.layers.setdefault(layer, []).append(key)
    for group in groups.values():
        # featurewatch/filters/<layer> (image) joins featurewatch/filters/<layer>/weights
        for key in list(group.top):
            layer = key.rsplit("/", 1)[1]
            if layer in group.layers:
                group.top.remove(key)
                group.layers[layer].insert(0, key)
        group.layers = dict(sorted(group.layers.items(), key=lambda kv: natural_key(kv[0])))
    known = list(SECTIONS)
    return sorted(
        groups.values(),
        key=lambda g: (known.index(g.name) if g.name in known else len(known), natural_key(g.name)),
    )


def _spread(n: int, k: int) -> list[int]:
    """``k`` indices of ``range(n)`` evenly spread, first and last included (all if ``n <= k``)."""
    if k <= 0 or n <= k:
        return list(range(n))
    if k == 1:
        return [n - 1]
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def _when(step: int, epoch: int | None) -> str:
    return f"step {step} · epoch {epoch if epoch is not None else '?'}"


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _mime(png: bytes) -> str:
    if png.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if png[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return "image/png"


# -------------------------------------------------------------------------------- the page
class _Page:
    def __init__(self, data: Run, max_frames: int) -> None:
        self.data = data
        #: the frames of each image key on the page (at most ``max_frames``, evenly spread)
        self.shown = {
            key: [frames[i] for i in _spread(len(frames), max_frames)]
            for key, frames in data.images.items()
        }
        todo = [(key, i) for key, frames in self.shown.items() for i in range(len(frames))]
        #: every embedded image once, as a data URI; cards refer to them by index
        self.uris: list[str] = []
        self.uri_of: dict[tuple[str, int], int] = {}
        for key, i in progress(todo, total=len(todo), desc="embedding images", unit="images"):
            png = self.shown[key][i].png()
            self.uri_of[key, i] = len(self.uris)
            self.uris.append(f"data:{_mime(png)};base64,{base64.b64encode(png).decode('ascii')}")
        self.specs: list[dict[str, Any]] = []  # image cards: their frames, for the script

    # ---- images
    def image_card(self, key: str, label: str, frames: list[ImageFrame]) -> str:
        total = len(frames)
        frames = self.shown[key]
        rows = [
            [self.uri_of[key, i], f.step, f.epoch, f.caption, f.width, f.height]
            for i, f in enumerate(frames)
        ]
        index = len(self.specs)
        self.specs.append({"key": key, "frames": rows})
        n = len(frames)
        multi = n > 1
        note = f" ({n} of {total} steps shown)" if n < total else ""
        plural = "s" * (n != 1)
        strip = ""
        if multi:
            thumbs = []
            for i in _spread(n, FILMSTRIP):
                f = frames[i]
                thumbs.append(
                    f'<button type="button" class="thumb" data-i="{i}" '
                    f'title="{_esc(_when(f.step, f.epoch))}"><img alt="{_esc(key)} at step '
                    f'{f.step}" data-frame="{i}"><span>step {f.step}'
                    f"{'' if f.epoch is None else f' · ep {f.epoch}'}</span></button>"
                )
            strip = (
                f'<div class="strip" aria-label="filmstrip of {_esc(key)}">'
                f'<div class="strip-title">filmstrip · {len(thumbs)} of {n} frames</div>'
                f'<div class="thumbs">{"".join(thumbs)}</div></div>'
            )
        slider = (
            f'<input type="range" class="scrub" min="0" max="{n - 1}" value="{n - 1}" '
            f'aria-label="{_esc(key)}: step">'
            if multi
            else ""
        )
        # filmstrip thumbnails as wide as the frames' aspect ratio needs (activation grids are
        # wide and short) at a fixed height, so every frame is equally legible
        last = frames[-1]
        aspect = last.width / last.height if last.width > 0 and last.height > 0 else 1.0
        thumb = min(max(96.0, 92.0 * aspect), 300.0)
        thumb_h = round(min(max(thumb / aspect, 56.0), 120.0))
        # small images (kernels, feature maps) are scaled up to be seen; figures (charts,
        # heatmaps with text) are shown at most at their own size, where their text is sharp
        cap = f"{last.width}px" if min(last.width, last.height) >= 160 else "100%"
        return (
            f'<article class="card image{" multi" if multi else ""}" data-kind="image" '
            f'data-key="{_esc(key)}" data-card="{index}" data-frames="{n}" '
            f'style="--ar: {aspect:.4f}; --cap: {cap}; --thumb: {round(thumb) + 8}px; '
            f'--thumb-h: {thumb_h}px">'
            f"{self.head(label, key, f'{n} step{plural}{note}')}"
            f'<div class="body"><div class="viewer"><div class="frame">'
            f'<img class="shown" alt="{_esc(key)}"></div>'
            f'<div class="meta"><span class="when"></span><span class="pos"></span></div>'
            f'{slider}<p class="caption"></p></div>{strip}</div></article>'
        )

    @staticmethod
    def head(label: str, key: str, extra: str = "") -> str:
        more = f'<span class="extra">{_esc(extra)}</span>' if extra else ""
        return (
            f"<header><h4>{_esc(label)}</h4>{more}"
            f'<code title="{_esc(key)}">{_esc(key)}</code></header>'
        )

    # ---- scalars
    def scalar_card(self, key: str, label: str, points: list[ScalarPoint]) -> str:
        finite = [p for p in points if p.value is not None]
        last = points[-1]
        value = _fmt(last.value) if last.value is not None else "non-finite"
        stats = ""
        if len(finite) > 1:
            lo, hi = min(p.value for p in finite), max(p.value for p in finite)  # type: ignore[type-var]
            stats = f'<span class="range">min {_fmt(lo)} · max {_fmt(hi)}</span>'
        chart = _line_chart([(label, points, "var(--accent)")], aria=f"{key} over steps")
        return (
            f'<article class="card scalar" data-kind="scalar" data-key="{_esc(key)}">'
            f"{self.head(label, key, f'{len(points)} points')}"
            f'<div class="value">{_esc(value)} <small>at {_esc(_when(last.step, last.epoch))}'
            f"</small>{stats}</div>{chart}</article>"
        )

    def overlay_card(self, item: str, series: list[tuple[str, str]]) -> str:
        """One chart of ``item`` for every layer: ``series`` = [(layer, key)]."""
        lines = []
        for i, (layer, key) in enumerate(series):
            # first layer darkest, last at most the 9th sample (the 10th is faint on white)
            colour = PALETTE[round(i * (len(PALETTE) - 2) / max(len(series) - 1, 1))]
            lines.append((layer, self.data.scalars[key], colour))
        chart = _line_chart(lines, aria=f"{item} of every layer", height=210)
        first_key = series[0][1]
        pattern = f"{first_key[: -len(series[0][0]) - len(item) - 1]}<layer>/{item}"
        legend = "".join(
            f'<li><i style="background:{c}"></i>{_esc(name)}</li>' for name, _, c in lines
        )
        return (
            f'<article class="card scalar overlay" data-kind="overlay" data-item="{_esc(item)}">'
            f"{self.head(f'{item}: every layer', pattern, f'{len(series)} layers')}"
            f'{chart}<ul class="legend">{legend}</ul></article>'
        )

    # ---- histograms
    def histogram_card(self, key: str, label: str, frames: list[HistogramFrame]) -> str:
        first, last = frames[0], frames[-1]
        chart = _histogram_chart(first if len(frames) > 1 else None, last, aria=f"{key} histogram")
        caption = f"last: {_when(last.step, last.epoch)}, {int(sum(last.counts))} values"
        if len(frames) > 1:
            caption += f"; outline: first ({_when(first.step, first.epoch)})"
        return (
            f'<article class="card histogram" data-kind="histogram" data-key="{_esc(key)}">'
            f"{self.head(label, key, f'{len(frames)} steps')}{chart}"
            f'<p class="caption">{_esc(caption)}</p></article>'
        )

    # ---- texts
    def text_card(self, key: str, label: str, entries: list[TextEntry]) -> str:
        shown = entries[::-1][:TEXTS_PER_KEY]
        bad = key.endswith(("/error", "/alerts"))
        items = "".join(
            f'<details class="entry"{" open" if i == 0 else ""}><summary>'
            f"{_esc(_when(e.step, e.epoch))}</summary><pre>{_esc(e.text)}</pre></details>"
            for i, e in enumerate(shown)
        )
        more = (
            f'<p class="caption">the latest {len(shown)} of {len(entries)} are shown</p>'
            if len(entries) > len(shown)
            else ""
        )
        last = entries[-1]
        return (
            f'<details class="card text{" bad" if bad else ""}" data-kind="text" '
            f'data-key="{_esc(key)}"><summary><b>{_esc(label)}</b> · {len(entries)} '
            f"entr{'ies' if len(entries) != 1 else 'y'}, "
            f"last at {_esc(_when(last.step, last.epoch))}"
            f" <code>{_esc(key)}</code></summary>{items}{more}</details>"
        )

    # ---- assembling
    def card(self, key: str, label: str, kind: str) -> str:
        """The card of ``key``'s ``kind`` (``"images"``, ``"scalars"``, ...)."""
        d = self.data
        if kind == "images":
            return self.image_card(key, label, d.images[key])
        if kind == "scalars":
            return self.scalar_card(key, label, d.scalars[key])
        if kind == "histograms":
            return self.histogram_card(key, label, d.histograms[key])
        return self.text_card(key, label, d.texts[key])

    def cards(self, keys: list[str], label: Callable[[str], str]) -> list[str]:
        """Cards of ``keys``: images first, then scalars, histograms and texts."""
        return [
            self.card(key, label(key), kind)
            for kind in ("images", "scalars", "histograms", "texts")
            for key in keys
            if key in getattr(self.data, kind)
        ]

    def section(self, group: _Group) -> str:
        """The HTML of one callback's section."""
        title, about = SECTIONS.get(group.name, (group.name, f"keys featurewatch/{group.name}/..."))
        top = self.cards(
            [k for k in group.top if not k.endswith("/seconds")], lambda k: k.rsplit("/", 1)[1]
        )
        # a metric several layers log: one chart of all of them
        by_item: dict[str, list[tuple[str, str]]] = {}
        for layer, keys in group.layers.items():
            for key in keys:
                if key in self.data.scalars:
                    by_item.setdefault(key.rsplit("/", 1)[1], []).append((layer, key))
        overlays = [
            self.overlay_card(item, series) for item, series in by_item.items() if len(series) > 1
        ]
        blocks = []
        for layer, keys in group.layers.items():

            def label(key: str, layer: str = layer) -> str:
                item = key.rsplit("/", 1)[1]
                return title.lower() if item == layer else item

            cards = self.cards(keys, label)
            blocks.append(
                f'<section class="layer" data-layer="{_esc(layer)}"><h3>{_esc(layer)}</h3>'
                f'<div class="grid">{"".join(cards)}</div></section>'
            )
        cost = self.cards(
            [k for k in group.top if k.endswith("/seconds")], lambda k: "seconds per call"
        )
        top_html = "".join(top) + "".join(overlays)
        cost_html = "".join(cost)
        return (
            f'<section class="group" id="g-{_esc(group.name)}" data-group="{_esc(group.name)}">'
            f'<h2>{_esc(title)}</h2><p class="about">{_esc(about)}</p>'
            f'<div class="grid">{top_html}</div>{"".join(blocks)}'
            f'<div class="grid cost">{cost_html}</div></section>'
        )


def build_page(data: Run, *, title: str, max_frames: int = 200) -> str:
    """The report page for ``data`` as one HTML string (see the module docstring)."""
    page = _Page(data, max_frames)
    sections, toc = [], []
    for group in _groups(data):
        sections.append(page.section(group))
        name = SECTIONS.get(group.name, (group.name, ""))[0]
        keys = [*group.top, *(k for ks in group.layers.values() for k in ks)]
        n_images = sum(k in data.images for k in keys)
        extra = f" <small>{n_images} image key{'s' * (n_images != 1)}</small>" if n_images else ""
        errors = sum(len(data.texts[k]) for k in keys if k in data.texts and k.endswith("/error"))
        if errors:  # a failing callback should not go unnoticed below the fold
            extra += f' <small class="bad">{errors} error{"s" * (errors != 1)}</small>'
        toc.append(f'<a href="#g-{_esc(group.name)}">{_esc(name)}{extra}</a>')
    steps = data.steps
    epochs = data.epochs()
    known = sorted(set(epochs.values()))
    span = f"steps {steps[0]}–{steps[-1]}" if len(steps) > 1 else f"step {steps[0]}"
    if known:
        span += f" (epochs {known[0]}–{known[-1]})" if len(known) > 1 else f" (epoch {known[0]})"
    what = "files sink" if data.format == "files" else "TensorBoard event files"
    counts = [
        f"{len(by_key)} {name} key{'s' * (len(by_key) != 1)}"
        for name, by_key in (
            ("image", data.images),
            ("scalar", data.scalars),
            ("histogram", data.histograms),
            ("text", data.texts),
        )
        if by_key
    ]
    summary = " · ".join([f"{len(steps)} logged steps, {span}", *counts])
    notes = "".join(f"<li>{_esc(n)}</li>" for n in data.notes)
    payload = {
        "uris": page.uris,
        "cards": page.specs,
        "steps": steps,
        "epochs": {str(s): e for s, e in epochs.items()},
    }
    body = (
        f'<header class="top"><h1>{_esc(title)}</h1>'
        f'<p class="sub">{_esc(str(data.source.resolve()))} ({what}) · generated '
        f'{_esc(time.strftime("%Y-%m-%d %H:%M"))}</p><p class="sub">{_esc(summary)}</p>'
        f"{f'<ul class=notes>{notes}</ul>' if notes else ''}"
        f'<nav class="toc">{"".join(toc)}</nav></header>'
        f'<div class="bar"><button type="button" id="prev" aria-label="previous step">&#9664;'
        f'</button><input type="range" id="step" min="0" max="{max(len(steps) - 1, 0)}" '
        f'value="{max(len(steps) - 1, 0)}" aria-label="every key at step">'
        f'<button type="button" id="next" aria-label="next step">&#9654;</button>'
        f'<span id="now"></span><span class="hint">moves every image to its latest frame at or '
        f"before this step</span></div>"
        f"<main>{''.join(sections)}</main>"
        f"<footer>Made by <code>featurewatch report</code>. Self-contained: images are embedded, "
        f"nothing is loaded from the network.</footer>"
    )
    blob = json.dumps(payload, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    return (
        _template()
        .replace("__TITLE__", _esc(title))
        .replace("__BODY__", body)
        .replace("__DATA__", blob)
    )


# ------------------------------------------------------------------------------------ charts
def _fmt(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "non-finite"
    a = abs(v)
    if a != 0 and (a >= 1e5 or a < 1e-3):
        return f"{v:.3g}"
    return f"{v:.4g}" if a < 0.99 or a >= 1.01 else f"{v:.5g}"


def _nice_ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks, t = [], first
    while t <= hi + 1e-9 * step:
        ticks.append(round(t, 12))
        t += step
    return ticks


def _tick_label(v: float, ticks: Sequence[float]) -> str:
    """``v`` with as many decimals as the tick spacing needs (0.25 steps: two)."""
    if abs(v) >= 1e5 or (v != 0 and abs(v) < 1e-4):
        return f"{v:.2g}"
    spacing = ticks[1] - ticks[0] if len(ticks) > 1 else (abs(v) or 1.0)
    decimals = 0
    while decimals < 8 and abs(round(spacing, decimals) - spacing) > 1e-9 * spacing:
        decimals += 1
    return f"{v:.{decimals}f}"


_W, _PL, _PR, _PT, _PB = 360, 46, 10, 10, 30


def _line_chart(
    series: list[tuple[str, list[ScalarPoint], str]], *, aria: str, height: int = 170
) -> str:
    """Inline SVG of one or more curves over the global step (gaps at non-finite values)."""
    points = [p for _, pts, _ in series for p in pts]
    finite = [p.value for p in points if p.value is not None]
    steps = [p.step for p in points]
    s0, s1 = min(steps), max(steps)
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):  # a flat curve: centre it in a sensible range
        pad = abs(lo) * 0.05 or 0.5
        lo, hi = (0.0, 1.0) if lo == 0 else (lo - pad, hi + pad)
    else:
        pad = (hi - lo) * 0.06
        lo, hi = lo - pad, hi + pad
    ph = height - _PT - _PB

    def x(s: float) -> float:
        return _PL + ((s - s0) / (s1 - s0) if s1 > s0 else 0.5) * (_W - _PL - _PR)

    def y(v: float) -> float:
        return _PT + (1 - (v - lo) / (hi - lo)) * ph

    parts = [
        (
            f'<svg class="chart" viewBox="0 0 {_W} {height}" role="img" aria-label="{_esc(aria)}" '
            f'data-s0="{s0}" data-s1="{s1}" data-x0="{x(s0):.1f}" data-x1="{x(s1):.1f}">'
        )
    ]
    yticks = _nice_ticks(lo, hi, 5)
    for t in yticks:
        ty = y(t)
        parts.append(
            f'<line class="grid" x1="{_PL}" x2="{_W - _PR}" y1="{ty:.1f}" y2="{ty:.1f}"/>'
            f'<text x="{_PL - 5}" y="{ty + 3.5:.1f}" text-anchor="end">'
            f"{_tick_label(t, yticks)}</text>"
        )
    xticks = [int(t) for t in _nice_ticks(s0, s1, 4) if float(t).is_integer()] if s1 > s0 else [s0]
    for t in xticks:
        parts.append(
            f'<line class="axis" x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{height - _PB}" '
            f'y2="{height - _PB + 4}"/><text x="{x(t):.1f}" y="{height - _PB + 15}" '
            f'text-anchor="middle">{t}</text>'
        )
    parts.append(
        f'<line class="axis" x1="{_PL}" x2="{_W - _PR}" y1="{height - _PB}" y2="{height - _PB}"/>'
        f'<text class="xlabel" x="{_W - _PR}" y="{height - 2}" text-anchor="end">global step</text>'
    )
    for name, pts, colour in series:
        run: list[ScalarPoint] = []
        for p in [*pts, None]:
            if p is not None and p.value is not None:
                run.append(p)
                continue
            if len(run) > 1:
                coords = " ".join(f"{x(q.step):.1f},{y(q.value):.1f}" for q in run)  # type: ignore[arg-type]
                parts.append(f'<polyline class="line" style="stroke:{colour}" points="{coords}"/>')
            run = []
        if len(pts) <= 80:
            for p in pts:
                if p.value is not None:
                    parts.append(
                        f'<circle class="dot" style="fill:{colour}" cx="{x(p.step):.1f}" '
                        f'cy="{y(p.value):.1f}" r="2.6"><title>{_esc(name)} · '
                        f"{_esc(_when(p.step, p.epoch))}: {_fmt(p.value)}</title></circle>"
                    )
    parts.append(f'<line class="cursor" x1="-10" x2="-10" y1="{_PT}" y2="{height - _PB}"/></svg>')
    return "".join(parts)


def _histogram_chart(first: HistogramFrame | None, last: HistogramFrame, *, aria: str) -> str:
    height = 150
    frames = [f for f in (first, last) if f is not None]
    lo = min(f.edges[0] for f in frames)
    hi = max(f.edges[-1] for f in frames)
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    top = max(max(f.counts) for f in frames) or 1.0
    ph = height - _PT - _PB

    def x(v: float) -> float:
        return _PL + (v - lo) / (hi - lo) * (_W - _PL - _PR)

    def y(c: float) -> float:
        return _PT + (1 - c / top) * ph

    parts = [
        f'<svg class="chart" viewBox="0 0 {_W} {height}" role="img" aria-label="{_esc(aria)}">'
    ]
    for i, c in enumerate(last.counts):
        x0, x1 = x(last.edges[i]), x(last.edges[i + 1])
        parts.append(
            f'<rect class="bin" x="{x0:.1f}" y="{y(c):.1f}" width="{max(x1 - x0, 0.6):.1f}" '
            f'height="{height - _PB - y(c):.1f}"/>'
        )
    if first is not None:
        pts = []
        for i, c in enumerate(first.counts):
            pts += [
                f"{x(first.edges[i]):.1f},{y(c):.1f}",
                f"{x(first.edges[i + 1]):.1f},{y(c):.1f}",
            ]
        parts.append(f'<polyline class="first" points="{" ".join(pts)}"/>')
    parts.append(
        f'<line class="axis" x1="{_PL}" x2="{_W - _PR}" y1="{height - _PB}" y2="{height - _PB}"/>'
        f'<text x="{_PL - 5}" y="{_PT + 8}" text-anchor="end">{int(top)}</text>'
        f'<text x="{_PL - 5}" y="{height - _PB}" text-anchor="end">0</text>'
        f'<text x="{_PL}" y="{height - _PB + 15}">{_fmt(lo)}</text>'
        f'<text x="{_W - _PR}" y="{height - _PB + 15}" text-anchor="end">{_fmt(hi)}</text></svg>'
    )
    return "".join(parts)


@cache
def _template() -> str:
    """The page's HTML, CSS and script: ``report.html`` next to this module (package data, so the
    page is edited as HTML, not inside a Python string)."""
    return files("featurewatch.cli").joinpath("report.html").read_text(encoding="utf-8")
