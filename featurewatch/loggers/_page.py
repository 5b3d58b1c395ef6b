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
from typing import Any

__all__ = ["render_page"]


def render_page(title: str, data: dict[str, Any]) -> str:
    """Return the page for ``data`` (``{"title", "root", "updated", "records": [...]}``)."""
    # "<" escaped so that no string in the data can close the <script> element.
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    return _TEMPLATE.replace("__TITLE__", html.escape(title)).replace("__DATA__", payload)


_TEMPLATE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="featurewatch FilesSink">
<title>__TITLE__</title>
<style>
:root { --bg: #f5f6f8; --card: #fff; --fg: #1c2128; --muted: #6a737d; --line: #e1e4e8;
        --accent: #2f6fde; --soft: rgba(47, 111, 222, .12); --bad: #c2410c; color-scheme: light dark; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #14171b; --card: #1d2126; --fg: #e4e8ec; --muted: #98a1ab; --line: #2f353c;
          --accent: #6ea8ff; --soft: rgba(110, 168, 255, .16); --bad: #fb923c; }
}
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       background: var(--bg); color: var(--fg); }
header { padding: 18px 24px 10px; }
h1 { font-size: 19px; margin: 0 0 2px; }
.sub { color: var(--muted); font-size: 12px; overflow-wrap: anywhere; }
.bar { position: sticky; top: 0; z-index: 2; display: flex; flex-wrap: wrap; gap: 10px; align-items: center;
       padding: 10px 24px; background: var(--bg); border-bottom: 1px solid var(--line); }
.bar input[type=range] { flex: 1 1 240px; accent-color: var(--accent); }
.now { font-variant-numeric: tabular-nums; min-width: 15em; }
.bar label { color: var(--muted); font-size: 12px; white-space: nowrap; }
button { font: inherit; border: 1px solid var(--line); background: var(--card); color: var(--fg);
         border-radius: 6px; padding: 2px 10px; cursor: pointer; }
button:disabled { opacity: .4; cursor: default; }
main { padding: 4px 24px 32px; }
h2 { font-size: 12px; font-weight: 600; text-transform: uppercase; letter-spacing: .07em;
     color: var(--muted); margin: 22px 0 10px; }
.grid { display: grid; gap: 14px; grid-template-columns: repeat(auto-fill, minmax(250px, 1fr)); }
.grid.wide { grid-template-columns: repeat(auto-fill, minmax(min(100%, 440px), 1fr)); }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 10px 12px 12px;
        min-width: 0; transition: opacity .15s; }
.card.later { opacity: .45; }
.key { font: 12px/1.3 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; overflow-wrap: anywhere;
       margin-bottom: 8px; }
.key span { color: var(--muted); }
.frame { display: block; border-radius: 6px; overflow: hidden; background: var(--bg); }
.frame img { display: block; width: 100%; height: 220px; object-fit: contain; }
.frame.anim { margin-top: 6px; }
.frame[hidden] { display: none; }
img.upscaled { image-rendering: pixelated; }
img.broken { outline: 2px solid var(--bad); }
.meta { display: flex; justify-content: space-between; gap: 8px; margin-top: 6px; color: var(--muted);
        font-size: 12px; font-variant-numeric: tabular-nums; }
.caption { margin-top: 3px; font-size: 13px; overflow-wrap: anywhere; }
.card input[type=range] { width: 100%; margin: 8px 0 0; accent-color: var(--accent); }
.value { font-size: 20px; font-variant-numeric: tabular-nums; margin-bottom: 4px; }
svg { display: block; width: 100%; height: auto; overflow: visible; }
svg .line { fill: none; stroke: var(--accent); stroke-width: 1.6; stroke-linejoin: round; }
svg .area, svg .bin { fill: var(--soft); }
svg .bin { stroke: var(--accent); stroke-width: .6; }
svg .dot { fill: var(--accent); }
svg .cursor { stroke: var(--muted); stroke-dasharray: 3 3; }
svg .axis { stroke: var(--line); }
svg text { fill: var(--muted); font: 10px system-ui, sans-serif; }
pre { margin: 0; white-space: pre-wrap; overflow-wrap: anywhere; max-height: 260px; overflow: auto;
      font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
      background: var(--bg); padding: 8px 10px; border-radius: 6px; }
.none { color: var(--muted); padding: 24px 0; }
footer { color: var(--muted); font-size: 12px; padding: 0 24px 24px; }
</style>
</head>
<body data-ready="0">
<header><h1 id="title"></h1><div class="sub" id="summary"></div></header>
<div class="bar">
  <button id="prev" title="previous step (&larr;)" aria-label="previous step">&#9664;</button>
  <input type="range" id="step" min="0" max="0" value="0" aria-label="step">
  <button id="next" title="next step (&rarr;)" aria-label="next step">&#9654;</button>
  <span class="now" id="now"></span>
  <button id="latest">latest</button>
  <label><input type="checkbox" id="live"> reload every 10 s</label>
</div>
<main id="main"><noscript>This page draws its content with JavaScript; the same data is in
events.jsonl next to it.</noscript></main>
<footer>Written by featurewatch's FilesSink. Raw records: <code>events.jsonl</code>; images: <code>images/</code>.</footer>
<script type="application/json" id="fw-data">__DATA__</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("fw-data").textContent);
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  e.append(...children.filter((c) => c !== null && c !== undefined));
  return e;
}
function svg(tag, attrs = {}, text) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function fmt(v) {
  if (v === null || v === undefined) return "non-finite";
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
  return String(Number(v.toPrecision(4)));
}
const urlOf = (path) => path.split("/").map(encodeURIComponent).join("/");
const when = (r) => `step ${r.step} \u00b7 epoch ${r.epoch}`;

// ---- data: one step-sorted list per kind and key
const series = { image: new Map(), scalar: new Map(), histogram: new Map(), text: new Map() };
for (const r of DATA.records) {
  const byKey = series[r.kind];
  if (!byKey) continue;
  if (!byKey.has(r.key)) byKey.set(r.key, []);
  byKey.get(r.key).push(r);
}
for (const byKey of Object.values(series)) for (const list of byKey.values()) list.sort((a, b) => a.step - b.step);
const steps = [...new Set(DATA.records.map((r) => r.step))].sort((a, b) => a - b);
const epochAt = new Map(DATA.records.map((r) => [r.step, r.epoch]));

// Index of the last entry with entry.step <= step, or -1.
function atOrBefore(list, step) {
  let lo = 0, hi = list.length - 1, found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (list[mid].step <= step) { found = mid; lo = mid + 1; } else hi = mid - 1;
  }
  return found;
}

// ---- image loading: <body data-ready> says whether every displayed image has loaded
const pending = new Set();
function loading(img) { pending.add(img); document.body.dataset.ready = "0"; }
function loaded(img) {
  pending.delete(img);
  img.dataset.naturalWidth = img.naturalWidth;
  img.dataset.naturalHeight = img.naturalHeight;
  const scale = img.naturalWidth ? Math.min(img.clientWidth / img.naturalWidth, img.clientHeight / img.naturalHeight) : 0;
  img.classList.toggle("upscaled", scale > 1);
  img.classList.toggle("broken", img.naturalWidth === 0);
  settle();
}
function settle() {
  if (pending.size) return;
  const broken = document.querySelectorAll("img.broken").length;
  document.body.dataset.brokenImages = broken;
  document.body.dataset.ready = broken ? "error" : "1";
}

// ---- cards
const updaters = [];  // called with the selected global step

function keyLabel(key) {
  const cut = key.lastIndexOf("/") + 1;
  return el("div", { class: "key", title: key }, el("span", { text: key.slice(0, cut) }), key.slice(cut));
}

// A card showing one entry of `list` at a time: the latest at or before the global step, or any
// entry through its own slider (unless `scrub` is false). `show(entry)` fills the card's body.
function steppedCard(kind, key, list, body, show, scrub = true) {
  const left = el("span"), right = el("span");
  const slider = el("input", { type: "range", min: 0, max: list.length - 1, value: list.length - 1, "aria-label": `${key} step` });
  const card = el("div", { class: "card", "data-kind": kind, "data-key": key }, keyLabel(key), body,
    el("div", { class: "meta" }, left, right));
  if (scrub && list.length > 1) card.append(slider);
  function pick(i, later) {
    const r = list[i];
    card.classList.toggle("later", later);
    card.dataset.step = r.step;
    slider.value = i;
    left.textContent = later ? `first logged at step ${r.step}` : when(r);
    right.textContent = list.length > 1 ? `${i + 1} / ${list.length}` : "";
    show(r);
  }
  slider.addEventListener("input", () => pick(Number(slider.value), false));
  updaters.push((step) => { const i = atOrBefore(list, step); pick(Math.max(i, 0), i < 0); });
  return card;
}

function imageCard(key, list) {
  const img = el("img", { alt: key, decoding: "async" });
  img.addEventListener("load", () => loaded(img));
  img.addEventListener("error", () => loaded(img));
  const frame = el("a", { class: "frame", target: "_blank" }, img);
  // an animated image (LoggedAnimation): its GIF below the still (only keys that have one)
  let gif = null, gifFrame = null;
  if (list.some((r) => r.animation)) {
    gif = el("img", { alt: `${key} animation`, decoding: "async", class: "animation" });
    gif.addEventListener("load", () => loaded(gif));
    gif.addEventListener("error", () => loaded(gif));
    gifFrame = el("a", { class: "frame anim", target: "_blank", hidden: "" }, gif);
  }
  const caption = el("div", { class: "caption" });
  return steppedCard("image", key, list, el("div", {}, frame, gifFrame, caption), (r) => {
    const src = urlOf(r.path);
    if (img.getAttribute("src") !== src) { loading(img); img.src = src; }
    frame.href = src;
    img.title = `${r.key} \u00b7 ${when(r)} \u00b7 ${r.width}\u00d7${r.height}`;
    if (gifFrame) gifFrame.hidden = !r.animation;
    if (gif && r.animation) {
      const anim = urlOf(r.animation);
      if (gif.getAttribute("src") !== anim) { loading(gif); gif.src = anim; }
      gifFrame.href = anim;
      gif.title = `${r.key} \u00b7 animation \u00b7 ${when(r)}`;
    }
    caption.textContent = r.caption || "";
  });
}

const CW = 300, CH = 96, PL = 40, PR = 6, PT = 6, PB = 16;  // chart size and padding
function xScale(lo, hi) { return (v) => PL + (hi > lo ? (v - lo) / (hi - lo) : 0.5) * (CW - PL - PR); }
function yScale(lo, hi) { return (v) => CH - PB - (hi > lo ? (v - lo) / (hi - lo) : 0.5) * (CH - PT - PB); }

function scalarCard(key, list) {
  const finite = list.filter((r) => r.value !== null);
  const lo = Math.min(...finite.map((r) => r.value)), hi = Math.max(...finite.map((r) => r.value));
  const x = xScale(list[0].step, list[list.length - 1].step), y = yScale(lo, hi);
  const chart = svg("svg", { viewBox: `0 0 ${CW} ${CH}`, role: "img", "aria-label": `${key} over steps` });
  chart.append(svg("line", { class: "axis", x1: PL, x2: CW - PR, y1: CH - PB, y2: CH - PB }));
  // A non-finite value breaks the line.
  let run = [];
  const flush = () => {
    if (run.length > 1) {
      const pts = run.map((r) => `${x(r.step).toFixed(1)},${y(r.value).toFixed(1)}`);
      const base = (CH - PB).toFixed(1);
      chart.append(svg("polygon", { class: "area", points: `${x(run[0].step).toFixed(1)},${base} ${pts.join(" ")} ${x(run[run.length - 1].step).toFixed(1)},${base}` }));
      chart.append(svg("polyline", { class: "line", points: pts.join(" ") }));
    }
    run = [];
  };
  for (const r of list) { if (r.value === null) flush(); else run.push(r); }
  flush();
  if (finite.length) {
    chart.append(svg("text", { x: PL - 4, y: PT + 8, "text-anchor": "end" }, fmt(hi)));
    chart.append(svg("text", { x: PL - 4, y: CH - PB, "text-anchor": "end" }, fmt(lo)));
  }
  chart.append(svg("text", { x: PL, y: CH - 3 }, `step ${list[0].step}`));
  chart.append(svg("text", { x: CW - PR, y: CH - 3, "text-anchor": "end" }, `${list[list.length - 1].step}`));
  const cursor = svg("line", { class: "cursor", y1: PT, y2: CH - PB });
  const dot = svg("circle", { class: "dot", r: 3 });
  chart.append(cursor, dot);
  const value = el("div", { class: "value" });
  return steppedCard("scalar", key, list, el("div", {}, value, chart), (r) => {
    value.textContent = fmt(r.value);
    cursor.setAttribute("x1", x(r.step)); cursor.setAttribute("x2", x(r.step));
    dot.setAttribute("visibility", r.value === null ? "hidden" : "visible");
    if (r.value !== null) { dot.setAttribute("cx", x(r.step)); dot.setAttribute("cy", y(r.value)); }
  }, false);
}

function histogramCard(key, list) {
  const chart = svg("svg", { viewBox: `0 0 ${CW} ${CH}`, role: "img", "aria-label": `${key} histogram` });
  const info = el("div", { class: "caption" });
  return steppedCard("histogram", key, list, el("div", {}, chart, info), (r) => {
    chart.replaceChildren(svg("line", { class: "axis", x1: PL, x2: CW - PR, y1: CH - PB, y2: CH - PB }));
    const n = r.counts.length;
    if (n) {
      const lo = r.edges[0], hi = r.edges[n], top = Math.max(...r.counts);
      const x = xScale(lo, hi), y = yScale(0, top);
      r.counts.forEach((c, i) => {
        const x0 = n > 1 || hi > lo ? x(r.edges[i]) : PL, x1 = n > 1 || hi > lo ? x(r.edges[i + 1]) : CW - PR;
        chart.append(svg("rect", { class: "bin", x: x0, width: Math.max(x1 - x0, 0.5), y: y(c), height: CH - PB - y(c) }));
      });
      chart.append(svg("text", { x: PL - 4, y: PT + 8, "text-anchor": "end" }, String(top)));
      chart.append(svg("text", { x: PL, y: CH - 3 }, fmt(lo)));
      chart.append(svg("text", { x: CW - PR, y: CH - 3, "text-anchor": "end" }, fmt(hi)));
    }
    info.textContent = `${r.count} values` + (r.nonfinite ? `, ${r.nonfinite} non-finite left out` : "");
  });
}

function textCard(key, list) {
  const pre = el("pre");
  return steppedCard("text", key, list, pre, (r) => { pre.textContent = r.value; });
}

function section(title, byKey, makeCard, wide) {
  if (!byKey.size) return;
  const grid = el("div", { class: wide ? "grid wide" : "grid" });
  for (const key of [...byKey.keys()].sort()) grid.append(makeCard(key, byKey.get(key)));
  $("main").append(el("section", { "data-kind": title.toLowerCase() }, el("h2", { text: `${title} (${byKey.size})` }), grid));
}

// ---- page
document.title = DATA.title;
$("title").textContent = DATA.title;
const counts = [["image", series.image], ["scalar", series.scalar], ["histogram", series.histogram], ["text", series.text]]
  .filter(([, m]) => m.size).map(([n, m]) => `${m.size} ${n} key${m.size > 1 ? "s" : ""}`);
$("summary").textContent = [DATA.root, ...counts, `updated ${DATA.updated}`].join(" \u00b7 ");
section("Images", series.image, imageCard);
section("Scalars", series.scalar, scalarCard);
section("Histograms", series.histogram, histogramCard);
section("Texts", series.text, textCard, true);
if (!steps.length) $("main").append(el("p", { class: "none", text: "Nothing logged yet." }));

// ---- global step, URL state, live reload
const range = $("step"), live = $("live");
range.max = Math.max(steps.length - 1, 0);
let current = steps.length - 1;

function select(i, fromUser) {
  if (!steps.length) return;
  current = Math.min(Math.max(i, 0), steps.length - 1);
  range.value = current;
  const s = steps[current], latest = current === steps.length - 1;
  $("now").textContent = `step ${s} \u00b7 epoch ${epochAt.get(s)}` + (latest ? " (latest)" : ` (latest: ${steps[steps.length - 1]})`);
  $("prev").disabled = current === 0;
  $("next").disabled = latest;
  $("latest").disabled = latest;
  document.body.dataset.step = s;
  for (const update of updaters) update(s);
  if (fromUser) saveState();
}
function params() {
  const p = new URLSearchParams(location.search);
  for (const [k, v] of new URLSearchParams(location.hash.slice(1))) p.set(k, v);
  return p;
}
function fromUrl() {
  const p = params();
  live.checked = p.get("live") === "1";
  const wanted = Number(p.get("step"));
  select(p.has("step") && Number.isFinite(wanted) ? atOrBefore(steps.map((s) => ({ step: s })), wanted) : steps.length - 1);
}
function saveState() {
  const p = new URLSearchParams();
  if (current !== steps.length - 1) p.set("step", steps[current]);
  if (live.checked) p.set("live", "1");
  history.replaceState(null, "", p.toString() ? `#${p}` : location.pathname + location.search);
}
range.addEventListener("input", () => select(Number(range.value), true));
$("prev").addEventListener("click", () => select(current - 1, true));
$("next").addEventListener("click", () => select(current + 1, true));
$("latest").addEventListener("click", () => select(steps.length - 1, true));
live.addEventListener("change", () => { saveState(); scheduleReload(); });
window.addEventListener("hashchange", fromUrl);
document.addEventListener("keydown", (e) => {
  if (e.target instanceof HTMLInputElement || e.altKey || e.ctrlKey || e.metaKey) return;
  if (e.key === "ArrowLeft") select(current - 1, true);
  if (e.key === "ArrowRight") select(current + 1, true);
});
let reloadTimer = null;
function scheduleReload() {
  clearTimeout(reloadTimer);
  if (!live.checked) return;
  reloadTimer = setTimeout(() => {
    try { sessionStorage.setItem("featurewatch-scroll", String(window.scrollY)); } catch (e) { /* storage off */ }
    location.reload();
  }, 10000);
}
fromUrl();
scheduleReload();
try {
  const y = sessionStorage.getItem("featurewatch-scroll");
  if (y !== null) { sessionStorage.removeItem("featurewatch-scroll"); window.scrollTo(0, Number(y)); }
} catch (e) { /* storage off */ }
settle();
</script>
</body>
</html>
"""
