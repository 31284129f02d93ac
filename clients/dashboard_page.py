"""The dashboard's one HTML page: inline CSS and plain JavaScript that draws SVG charts, no external resource.

The state is embedded in the page (so it draws on load, even with no network) and polled from ``/api/state``.
Each chart's container gets ``data-points`` (the marks it drew) and the body ``data-rendered`` (renders so far) and
``data-errors`` (script errors caught), which the headless-browser test reads.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["render_page"]


def render_page(state: dict[str, Any]) -> str:
    """The page with ``state`` embedded."""
    embedded = json.dumps(state).replace("<", "\\u003c")  # no "</script>" inside the script
    return PAGE.replace("__STATE__", embedded)


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>nautilus-mesh latency</title>
<style>
  body { font: 13px/1.4 system-ui, sans-serif; margin: 16px; background: #fafafa; color: #222; }
  h1 { font-size: 18px; margin: 0 0 4px; }
  h2 { font-size: 14px; margin: 0 0 6px; }
  .grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 12px; }
  .card { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 10px; }
  .wide { grid-column: 1 / -1; }
  .muted { color: #777; }
  svg { display: block; width: 100%; }
  svg text { font: 11px system-ui, sans-serif; fill: #333; }
  #status span { margin-right: 12px; }
  .up { color: #2a7; } .down { color: #c33; }
</style>
</head>
<body data-rendered="0" data-errors="0">
<h1>nautilus-mesh: signal to fill</h1>
<div id="status" class="muted"></div>
<div class="grid">
  <div class="card"><h2>Signal to fill percentiles (ms)</h2><div id="chart-latency" class="chart"></div></div>
  <div class="card"><h2>Throughput (per second)</h2><div id="chart-throughput" class="chart"></div></div>
  <div class="card wide"><h2>Stage breakdown of filled signals (p50, ms)</h2>
    <div id="chart-stages" class="chart"></div></div>
  <div class="card wide"><h2>Slowest recent traces</h2><div id="chart-waterfalls" class="chart"></div></div>
  <div class="card"><h2>Allocations (USD)</h2><div id="chart-allocations" class="chart"></div></div>
  <div class="card"><h2>Canary weights</h2><div id="chart-weights" class="chart"></div></div>
</div>
<pre id="errors" class="down"></pre>
<script id="initial" type="application/json">__STATE__</script>
<script>
"use strict";
(function () {
  var NS = "http://www.w3.org/2000/svg";
  var COLORS = ["#3b7dd8", "#e8833a", "#c33d3d", "#2a9d6f", "#8e5cc7", "#b8862b", "#4aa3b5", "#d45a9a"];
  var KIND_COLORS = { span: "#3b7dd8", wire: "#e8833a", queue: "#b0b0b0" };
  var errors = [];
  var renders = 0;

  window.addEventListener("error", function (event) {
    errors.push(String(event.message));
    document.body.setAttribute("data-errors", String(errors.length));
    document.getElementById("errors").textContent = errors.join("\\n");
  });

  function el(name, attrs, parent, text) {
    var node = document.createElementNS(NS, name);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, String(attrs[k])); });
    if (text !== undefined) { node.textContent = text; }
    if (parent) { parent.appendChild(node); }
    return node;
  }

  function widthOf(id) {
    return Math.max(320, Math.floor(document.getElementById(id).clientWidth || 600));
  }

  function canvas(id, height, width) {
    var box = document.getElementById(id);
    width = width || widthOf(id);
    while (box.firstChild) { box.removeChild(box.firstChild); }
    var svg = el("svg", { viewBox: "0 0 " + width + " " + height, width: width, height: height }, box);
    return { box: box, svg: svg, width: width, height: height };
  }

  function done(c, points) {
    c.box.setAttribute("data-points", String(points));
    if (!points) { el("text", { x: 10, y: 20, class: "muted" }, c.svg, "no data yet"); }
  }

  function fmt(v) { return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2); }

  function lineChart(id, rows, series) {
    var c = canvas(id, 200);
    var left = 44, right = 110, top = 8, bottom = 22;
    var w = c.width - left - right, h = c.height - top - bottom;
    var max = 0, points = 0;
    rows.forEach(function (r) { series.forEach(function (s) {
      if (r[s.key] !== null && r[s.key] !== undefined) { max = Math.max(max, r[s.key]); }
    }); });
    if (!rows.length || max <= 0) { done(c, 0); return; }
    var t0 = rows[0].t, t1 = Math.max(rows[rows.length - 1].t, t0 + 1);
    function x(t) { return left + (t - t0) / (t1 - t0) * w; }
    function y(v) { return top + h - v / max * h; }
    el("line", { x1: left, y1: top + h, x2: left + w, y2: top + h, stroke: "#999" }, c.svg);
    el("text", { x: 2, y: top + 10 }, c.svg, fmt(max));
    el("text", { x: 2, y: top + h }, c.svg, "0");
    el("text", { x: left, y: c.height - 6, class: "muted" }, c.svg, Math.round(t1 - t0) + " s shown");
    series.forEach(function (s, i) {
      var d = "", pen = "M";
      rows.forEach(function (r) {
        var v = r[s.key];
        if (v === null || v === undefined) { pen = "M"; return; }
        d += pen + x(r.t).toFixed(1) + " " + y(v).toFixed(1) + " ";
        pen = "L";
        points += 1;
        el("circle", { cx: x(r.t).toFixed(1), cy: y(v).toFixed(1), r: 1.5, fill: s.color, class: "datum" }, c.svg);
      });
      if (d) { el("path", { d: d, fill: "none", stroke: s.color, "stroke-width": 1.5 }, c.svg); }
      el("rect", { x: left + w + 10, y: top + i * 16, width: 10, height: 10, fill: s.color }, c.svg);
      el("text", { x: left + w + 24, y: top + 9 + i * 16 }, c.svg, s.label);
    });
    done(c, points);
  }

  function stackedBar(id, stages) {
    var width = widthOf(id), columns = Math.max(1, Math.floor(width / 300));
    var c = canvas(id, 40 + Math.ceil(stages.length / columns) * 16, width);
    var total = stages.reduce(function (a, s) { return a + Math.max(0, s.p50_ms); }, 0);
    if (!stages.length || total <= 0) { done(c, 0); return; }
    var x = 0;
    stages.forEach(function (s, i) {
      var width = Math.max(0, s.p50_ms) / total * c.width;
      var color = s.kind === "span" ? COLORS[i % COLORS.length] : KIND_COLORS[s.kind] || "#999";
      var rect = el("rect", { x: x, y: 0, width: Math.max(width, 0.5), height: 22, fill: color,
        stroke: "#fff", class: "datum" }, c.svg);
      el("title", {}, rect, s.name + ": " + fmt(s.p50_ms) + " ms (p50), p99 " + fmt(s.p99_ms) + " ms");
      var lx = (i % columns) * 300, ly = 38 + Math.floor(i / columns) * 16;
      el("rect", { x: lx, y: ly - 9, width: 9, height: 9, fill: color }, c.svg);
      el("text", { x: lx + 12, y: ly }, c.svg, s.name + " " + fmt(s.p50_ms));
      x += width;
    });
    done(c, stages.length);
  }

  function waterfalls(id, traces) {
    var rows = 0;
    traces.forEach(function (t) { rows += t.segments.length + 1; });
    var c = canvas(id, Math.max(40, rows * 13 + 8));
    var labelWidth = 260, w = c.width - labelWidth - 60, y = 12, marks = 0;
    traces.forEach(function (t) {
      el("text", { x: 0, y: y }, c.svg, t.trace_id.slice(0, 16) + "\\u2026 " + fmt(t.end_to_end_ms) + " ms, " +
        (t.coverage * 100).toFixed(1) + "% explained");
      y += 13;
      var scale = w / Math.max(t.end_to_end_ms, 1e-6);
      t.segments.forEach(function (s) {
        el("text", { x: 8, y: y }, c.svg, s.name);
        el("rect", { x: labelWidth + s.offset_ms * scale, y: y - 9, width: Math.max(s.duration_ms * scale, 0.5),
          height: 10, fill: KIND_COLORS[s.kind] || "#999", class: "datum" }, c.svg);
        el("text", { x: c.width - 56, y: y }, c.svg, fmt(s.duration_ms));
        marks += 1;
        y += 13;
      });
    });
    done(c, marks);
  }

  function bars(id, data, format) {
    var keys = Object.keys(data);
    var c = canvas(id, Math.max(30, keys.length * 18 + 6));
    var max = 0;
    keys.forEach(function (k) { max = Math.max(max, Math.abs(data[k])); });
    keys.forEach(function (k, i) {
      var width = max > 0 ? Math.abs(data[k]) / max * (c.width - 300) : 0;
      el("text", { x: 0, y: i * 18 + 14 }, c.svg, k);
      el("rect", { x: 200, y: i * 18 + 4, width: Math.max(width, 0.5), height: 12, fill: COLORS[i % COLORS.length],
        class: "datum" }, c.svg);
      el("text", { x: 205 + width, y: i * 18 + 14 }, c.svg, format(data[k]));
    });
    done(c, keys.length);
  }

  function status(state) {
    var box = document.getElementById("status");
    while (box.firstChild) { box.removeChild(box.firstChild); }
    Object.keys(state.sources).forEach(function (name) {
      var s = state.sources[name], span = document.createElement("span");
      span.className = s.up ? "up" : "down";
      span.textContent = name + " " + s.url + (s.up ? " up" : " down");
      box.appendChild(span);
    });
    var filled = state.traces.filled;
    var note = document.createElement("span");
    note.textContent = filled.count + " filled traces (" + filled.within_tolerance + " add up within " +
      Math.round(filled.tolerance * 100) + "%), " + state.traces.rejected.count + " rejected";
    box.appendChild(note);
  }

  function render(state) {
    status(state);
    lineChart("chart-latency", state.latency_ms, [
      { key: "p50", label: "p50", color: COLORS[0] },
      { key: "p90", label: "p90", color: COLORS[1] },
      { key: "p99", label: "p99", color: COLORS[2] }
    ]);
    lineChart("chart-throughput", state.throughput, [
      { key: "signals_per_s", label: "signals/s", color: COLORS[0] },
      { key: "fills_per_s", label: "fills/s", color: COLORS[3] }
    ]);
    stackedBar("chart-stages", state.traces.filled.stages);
    waterfalls("chart-waterfalls", state.traces.slowest);
    bars("chart-allocations", state.allocations_usd, function (v) { return "$" + v.toFixed(0); });
    bars("chart-weights", state.canary_weights, function (v) { return (v * 100).toFixed(1) + "%"; });
    renders += 1;
    document.body.setAttribute("data-rendered", String(renders));
  }

  render(JSON.parse(document.getElementById("initial").textContent));
  setInterval(function () {
    fetch("/api/state").then(function (r) { return r.json(); }).then(render).catch(function () {
      document.getElementById("status").textContent = "dashboard server unreachable; retrying";
    });
  }, 2000);
})();
</script>
</body>
</html>
"""
