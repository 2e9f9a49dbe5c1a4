// Time-series charts drawn as SVG by hand: one x axis of evenly spaced buckets (minutes),
// one or more series as lines or bars, a y axis with round ticks, and a native tooltip per
// bucket. Colours come from the stylesheet (`.series-N`), so both themes apply.

import { h, s } from "./dom.js";

const W = 720;
const H = 200;
const PAD = { left: 44, right: 10, top: 10, bottom: 22 };

/** A "nice" upper bound and step for the y axis. */
function ticks(max) {
  if (!(max > 0)) return { top: 1, step: 1 };
  const rough = max / 4;
  const mag = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((m) => m >= rough) || 10 * mag;
  return { top: Math.ceil(max / step) * step, step };
}

/** A series' colour class: its own (`cls`), or one by position. */
const cls = (sr, idx) => sr.cls || `series-${idx}`;

function label(v) {
  if (Math.abs(v) >= 1000) return `${(v / 1000).toFixed(v % 1000 ? 1 : 0)}k`;
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

/**
 * A chart of `points` (objects with `at`, unix seconds) where each series is
 * `{key, label, kind: "line" | "bar"}`; `unit` follows the numbers in tooltips.
 */
export function timeChart(points, series, { title, unit = "", testid } = {}) {
  const innerW = W - PAD.left - PAD.right;
  const innerH = H - PAD.top - PAD.bottom;
  const n = Math.max(points.length, 1);
  const slot = innerW / n;
  let max = 0;
  for (const p of points) for (const sr of series) max = Math.max(max, Number(p[sr.key]) || 0);
  const { top, step } = ticks(max);
  const y = (v) => PAD.top + innerH - (v / top) * innerH;
  const x = (i) => PAD.left + slot * i + slot / 2;

  const svg = s("svg", {
    viewBox: `0 0 ${W} ${H}`,
    class: "chart",
    role: "img",
    "aria-label": title,
    "data-testid": testid,
  });

  // Grid and y labels.
  for (let v = 0; v <= top + 1e-9; v += step) {
    svg.append(
      s("line", { class: "grid-line", x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }),
      s("text", { class: "axis", x: PAD.left - 6, y: y(v) + 4, "text-anchor": "end", text: label(v) }),
    );
  }
  // X labels: about six, at whole buckets.
  const every = Math.max(1, Math.ceil(n / 6));
  points.forEach((p, i) => {
    if (i % every !== 0 && i !== n - 1) return;
    const d = new Date(p.at * 1000);
    const text = `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
    svg.append(s("text", { class: "axis", x: x(i), y: H - 6, "text-anchor": "middle", text }));
  });

  // Bars first (side by side within a bucket), then lines over them.
  const bars = series.filter((sr) => sr.kind === "bar");
  const barW = Math.max(1, (slot * 0.8) / Math.max(bars.length, 1));
  bars.forEach((sr, b) => {
    const idx = series.indexOf(sr);
    points.forEach((p, i) => {
      const v = Number(p[sr.key]) || 0;
      if (!v) return;
      const x0 = PAD.left + slot * i + slot * 0.1 + barW * b;
      svg.append(s("rect", { class: `bar ${cls(sr, idx)}`, x: x0, y: y(v), width: barW, height: Math.max(0.5, y(0) - y(v)) }));
    });
  });
  series.forEach((sr, idx) => {
    if (sr.kind === "bar") return;
    // A line breaks where a bucket has no value (null), rather than dropping to zero.
    let d = "";
    let pen = false;
    points.forEach((p, i) => {
      const v = p[sr.key];
      if (v === null || v === undefined) {
        pen = false;
        return;
      }
      d += `${pen ? "L" : "M"}${x(i).toFixed(1)},${y(Number(v)).toFixed(1)}`;
      pen = true;
    });
    if (d) svg.append(s("path", { class: `line ${cls(sr, idx)}`, d }));
    points.forEach((p, i) => {
      const v = p[sr.key];
      if (v === null || v === undefined) return;
      svg.append(s("circle", { class: `dot ${cls(sr, idx)}`, cx: x(i), cy: y(Number(v)), r: 2 }));
    });
  });

  // One transparent column per bucket carries the bucket's numbers as a tooltip.
  points.forEach((p, i) => {
    const d = new Date(p.at * 1000);
    const lines = [d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })];
    for (const sr of series) {
      const v = p[sr.key];
      lines.push(`${sr.label}: ${v === null || v === undefined ? "—" : label(Number(v)) + unit}`);
    }
    svg.append(
      s(
        "rect",
        { class: "hover", x: PAD.left + slot * i, y: PAD.top, width: slot, height: innerH },
        s("title", { text: lines.join("\n") }),
      ),
    );
  });

  // Nothing to draw: no bar above zero and no line with a value.
  const empty = !points.some((p) => series.some((sr) => (sr.kind === "bar" ? Number(p[sr.key]) > 0 : p[sr.key] !== null && p[sr.key] !== undefined)));
  if (empty) {
    svg.append(s("text", { class: "empty-note", x: PAD.left + innerW / 2, y: PAD.top + innerH / 2, "text-anchor": "middle", text: "nothing in this range" }));
  }
  const legend = h(
    "div",
    { class: "legend" },
    series.map((sr, idx) => h("span", { class: `key ${cls(sr, idx)}` }, h("i"), sr.label)),
  );
  return h("figure", { class: "chart-box" }, h("figcaption", null, title, legend), svg);
}

/** A row of small squares, one per health check, newest last. */
export function checkStrip(checks) {
  const size = 9;
  const gap = 2;
  const svg = s("svg", {
    class: "strip",
    viewBox: `0 0 ${Math.max(1, checks.length) * (size + gap)} ${size}`,
    width: Math.max(1, checks.length) * (size + gap),
    height: size,
    role: "img",
    "aria-label": `${checks.filter((c) => c.healthy).length} of ${checks.length} recent checks healthy`,
  });
  checks.forEach((c, i) => {
    const when = new Date(c.checked_at * 1000).toLocaleTimeString();
    const what = c.healthy ? `healthy ${c.status_code ?? ""}` : `unhealthy ${c.error ?? c.status_code ?? ""}`;
    svg.append(
      s(
        "rect",
        { class: c.healthy ? "ok" : "bad", x: i * (size + gap), y: 0, width: size, height: size, rx: 1.5 },
        s("title", { text: `${when}: ${what} (${Math.round(c.latency_ms)} ms)` }),
      ),
    );
  });
  return svg;
}
