// #/queues: the work waiting in each lane (priority × target) with its depth and the age of
// its oldest task (GET /api/queues), and throughput and latency per minute as charts
// (GET /api/queues/throughput?minutes=N). Both are read again every few seconds.

import { api, poll, qs } from "./api.js";
import { h, fill, table, duration, num, section } from "./dom.js";
import { timeChart } from "./chart.js";

const RANGES = [
  ["15", "15 min"],
  ["60", "1 h"],
  ["360", "6 h"],
  ["1440", "24 h"],
];
const REFRESH_MS = 5000;

/** Minutes with more than ~120 buckets are summed into wider ones so bars stay readable. */
function bucket(points, most = 120) {
  if (points.length <= most) return points;
  const size = Math.ceil(points.length / most);
  const out = [];
  for (let i = 0; i < points.length; i += size) {
    const group = points.slice(i, i + size);
    const sum = (k) => group.reduce((a, p) => a + (p[k] || 0), 0);
    const worst = (k) => {
      const vals = group.map((p) => p[k]).filter((v) => v !== null && v !== undefined);
      return vals.length ? Math.max(...vals) : null;
    };
    out.push({
      at: group[0].at,
      submitted: sum("submitted"),
      completed: sum("completed"),
      failed: sum("failed"),
      latency_p50_secs: worst("latency_p50_secs"),
      latency_p95_secs: worst("latency_p95_secs"),
    });
  }
  return out;
}

export function mount(root, ctx) {
  let minutes = ctx.params.get("minutes") || "60";
  if (!RANGES.some(([m]) => m === minutes)) minutes = "60";
  root.dataset.testid = "page-queues";

  const lanesBox = h("div", { class: "scroll" });
  const totals = h("div", { class: "counts" });
  const charts = h("div", { class: "charts" });
  const range = h("div", { class: "seg", role: "group", "aria-label": "Range" });
  for (const [m, label] of RANGES) {
    const b = h("button", { type: "button", "data-minutes": m, class: m === minutes ? "on" : undefined, text: label });
    b.addEventListener("click", () => {
      minutes = m;
      for (const x of range.children) x.classList.toggle("on", x.dataset.minutes === m);
      ctx.setQuery(new URLSearchParams({ minutes: m }));
      polling.now();
    });
    range.append(b);
  }

  fill(
    root,
    h("div", { class: "page-head" }, h("h1", { text: "Queues" }), totals),
    section("Lanes", h("p", { class: "muted small", text: "Pending work by priority and target, best lane first. Held: tasks a claim holds. Undelivered: what the lane's consumer has yet to hand out." }), lanesBox),
    section(h("span", null, "Throughput and latency ", range), charts),
  );

  let maxPending = 1;
  const columns = [
    { label: "Lane", class: "mono", cell: (l) => l.lane },
    { label: "Pri", class: "num", cell: (l) => String(l.priority) },
    { label: "Worker", cell: (l) => l.worker_name ?? h("span", { class: "muted", text: "any" }) },
    { label: "Container", cell: (l) => l.container_name ?? h("span", { class: "muted", text: "any" }) },
    {
      label: "Pending",
      class: "num depth",
      cell: (l) => {
        const bar = h("span", { class: "depth-bar" });
        // CSSOM, not a style attribute: allowed by the page's style-src.
        bar.style.width = `${Math.round((100 * l.pending) / maxPending)}%`;
        return h("span", { class: "depth-cell" }, h("span", { class: "depth-track" }, bar), h("span", { text: num(l.pending) }));
      },
    },
    { label: "Oldest", class: "num", title: "Age of the oldest pending task", cell: (l) => h("span", { class: l.oldest_pending_secs > 300 ? "warn-text" : undefined, text: l.oldest_pending_secs === null ? "—" : duration(l.oldest_pending_secs) }) },
    { label: "Held", class: "num", cell: (l) => num(l.held) },
    { label: "Undelivered", class: "num", cell: (l) => (l.undelivered === null || l.undelivered === undefined ? "—" : num(l.undelivered)) },
  ];

  let polling = null;

  async function load(stopped) {
    try {
      const [lanes, series] = await Promise.all([api("/api/queues"), api(`/api/queues/throughput${qs({ minutes })}`)]);
      if (stopped()) return;
      maxPending = Math.max(1, ...lanes.map((l) => l.pending));
      const pending = lanes.reduce((a, l) => a + l.pending, 0);
      const held = lanes.reduce((a, l) => a + l.held, 0);
      const oldest = Math.max(0, ...lanes.map((l) => l.oldest_pending_secs ?? 0));
      fill(
        totals,
        h("span", { class: "stat", "data-testid": "queue-pending" }, h("b", { text: num(pending) }), " pending"),
        h("span", { class: "stat" }, h("b", { text: num(held) }), " held"),
        h("span", { class: "stat" }, h("b", { text: pending ? duration(oldest) : "—" }), " oldest"),
        h("span", { class: "stat" }, h("b", { text: String(lanes.length) }), " lanes"),
      );
      fill(lanesBox, table(columns, lanes, { testid: "lanes", empty: "no work waiting and no lane consumers" }));
      const points = bucket(series);
      const done = series.reduce((a, p) => a + p.completed, 0);
      const failed = series.reduce((a, p) => a + p.failed, 0);
      const submitted = series.reduce((a, p) => a + p.submitted, 0);
      fill(
        charts,
        h("p", { class: "muted small", text: `${num(submitted)} submitted, ${num(done)} completed, ${num(failed)} failed for good in the last ${RANGES.find(([m]) => m === minutes)[1]}.` }),
        timeChart(
          points,
          [
            { key: "submitted", label: "submitted", kind: "bar", cls: "c-blue" },
            { key: "completed", label: "completed", kind: "bar", cls: "c-green" },
            { key: "failed", label: "failed", kind: "bar", cls: "c-red" },
          ],
          { title: points.length === series.length ? "Tasks per minute" : `Tasks per ${Math.round(series.length / points.length)} minutes`, testid: "chart-throughput" },
        ),
        timeChart(
          points,
          [
            { key: "latency_p50_secs", label: "p50", kind: "line", cls: "c-blue" },
            { key: "latency_p95_secs", label: "p95", kind: "line", cls: "c-amber" },
          ],
          { title: "Submission to completion (seconds)", unit: " s", testid: "chart-latency" },
        ),
      );
      root.dataset.ready = "1";
    } catch (error) {
      if (!stopped()) fill(lanesBox, ctx.failure(error, "cannot read the queues"));
    }
  }

  ctx.setLive("polling");
  polling = poll(REFRESH_MS, load);
  return polling.stop;
}
