// #/tasks: the task list, live.
//
// The list is the projection's newest tasks (GET /api/tasks, filtered by the server where it
// can), kept current by the tasks stream itself (/ws/tasks): each feed event names the status
// it moves its task to and carries the stream sequence, and a row's `version` is the sequence
// of the last event the projection applied to it, so an event is applied only if it is newer
// than the row. The socket opens first and the list loads once it is open, so nothing that
// happens in between is missed. Reconnects resume with `after_seq`.

import { api, feed, qs } from "./api.js";
import { h, fill, badge, when, ago, table, patchRows, toDate, idLink, tail } from "./dom.js";

const LIMIT = 200;
const KEEP = 500;
export const STATUSES = ["pending", "assigned", "running", "completed", "failed", "cancelled"];
const FILTERS = [
  { key: "status", label: "Status", kind: "select", options: STATUSES },
  { key: "worker_name", label: "Worker" },
  { key: "container_name", label: "Container" },
  { key: "task_type", label: "Type" },
  { key: "priority", label: "Priority", kind: "select", options: ["9", "8", "7", "6", "5", "4", "3", "2", "1", "0"] },
];

/** A row of the list from a `task.submitted` feed event (what the projection will hold). */
function rowFromSubmission(event) {
  const p = event.payload || {};
  const at = toDate(event.occurred_at);
  const secs = at ? Math.floor(at.getTime() / 1000) : null;
  return {
    task_id: event.task_id,
    task_type: p.task_type,
    command: p.command,
    parameters: p.parameters ?? null,
    priority: p.priority ?? 0,
    worker_name: p.worker_name ?? null,
    container_name: p.container_name ?? null,
    max_attempts: p.max_attempts ?? 3,
    retry_of: p.retry_of ?? null,
    status: event.status || "pending",
    attempts: 0,
    assigned_to: null,
    created_at: secs,
    updated_at: secs,
    version: event.sequence,
  };
}

/** What a feed event changes in a row the list already holds. */
function applyEvent(row, event) {
  if (event.sequence <= (row.version ?? 0)) return false;
  row.version = event.sequence;
  if (!event.status) return true; // refused, or a refusal record: the row does not move
  row.status = event.status;
  const at = toDate(event.occurred_at);
  if (at) row.updated_at = Math.floor(at.getTime() / 1000);
  const p = event.payload || {};
  if (event.type === "task.assigned") {
    row.assigned_to = event.container_name ? `${event.worker_name}:${event.container_name}` : event.worker_name;
    if (p.attempt) row.attempts = p.attempt;
  }
  if (event.type === "task.requeued") row.assigned_to = null;
  if (event.type === "task.completed" && p.output !== undefined) row.output = p.output;
  if (event.type === "task.failed" && p.error !== undefined) row.error = p.error;
  return true;
}

export function mount(root, ctx) {
  const rows = new Map();
  const filters = Object.fromEntries(FILTERS.map((f) => [f.key, ctx.params.get(f.key) || ""]));
  let lastSeq = null;
  let loaded = false;
  let drawQueued = false;
  let loadTimer = null;
  let loadToken = 0;
  const fetching = new Set();

  const matches = (row) =>
    (!filters.status || row.status === filters.status) &&
    (!filters.worker_name || row.worker_name === filters.worker_name) &&
    (!filters.container_name || row.container_name === filters.container_name) &&
    (!filters.task_type || row.task_type === filters.task_type) &&
    (!filters.priority || String(row.priority ?? 0) === filters.priority);

  // ---- Filters ----
  const bar = h("form", { class: "filters", "data-testid": "task-filters", role: "search" });
  bar.addEventListener("submit", (e) => e.preventDefault());
  FILTERS.forEach((f, i) => {
    const id = `filter-${f.key}`;
    let input;
    if (f.kind === "select") {
      input = h(
        "select",
        { id, name: f.key, "data-testid": id },
        h("option", { value: "", text: "any" }),
        f.options.map((o) => h("option", { value: o, text: o })),
      );
    } else {
      input = h("input", { id, name: f.key, type: "search", placeholder: "any", "data-testid": id, spellcheck: "false" });
    }
    if (i === 0) input.dataset.filter = "";
    input.value = filters[f.key];
    input.addEventListener(f.kind === "select" ? "change" : "input", () => {
      filters[f.key] = input.value.trim();
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(filters)) if (v) q.set(k, v);
      ctx.setQuery(q);
      clearTimeout(loadTimer);
      loadTimer = setTimeout(load, f.kind === "select" ? 0 : 250);
      draw();
    });
    bar.append(h("label", { for: id }, h("span", { text: f.label }), input));
  });
  const clear = h("button", { type: "button", class: "ghost", text: "clear" });
  clear.addEventListener("click", () => {
    for (const f of FILTERS) {
      filters[f.key] = "";
      bar.querySelector(`#filter-${f.key}`).value = "";
    }
    ctx.setQuery(new URLSearchParams());
    load();
  });
  bar.append(clear);

  // ---- The table ----
  const columns = [
    { label: "Task", cell: (r) => idLink(`#/tasks/${encodeURIComponent(r.task_id)}`, r.task_id) },
    { label: "Type", cell: (r) => r.task_type ?? "—" },
    { label: "Command", class: "mono", cell: (r) => r.command ?? "—" },
    { label: "Status", cell: (r) => badge(r.status, "task-status") },
    { label: "Pri", class: "num", title: "Priority (higher first)", cell: (r) => String(r.priority ?? 0) },
    {
      label: "Target",
      cell: (r) => (r.worker_name ? (r.container_name ? `${r.worker_name}/${r.container_name}` : r.worker_name) : h("span", { class: "muted", text: "any" })),
    },
    { label: "Held by", class: "mono", cell: (r) => r.assigned_to ?? "" },
    { label: "Att", class: "num", title: "Attempts / max", cell: (r) => `${r.attempts ?? 0}/${r.max_attempts ?? "?"}` },
    { label: "Created", cell: (r) => when(r.created_at) },
    { label: "Updated", cell: (r) => h("span", { class: "muted", text: ago(r.updated_at) }) },
    { label: "", cell: (r) => (r.retry_of ? h("span", { class: "tag", title: `retry of ${r.retry_of}`, text: `retry of ${tail(r.retry_of)}` }) : "") },
  ];
  const grid = table(columns, [], { testid: "task-list", nav: true, empty: "loading…" });
  const body = grid.tBodies[0];
  const counts = h("div", { class: "counts", "data-testid": "task-counts" });
  const status = h("p", { class: "muted small" });

  root.dataset.testid = "page-tasks";
  fill(root, h("div", { class: "page-head" }, h("h1", { text: "Tasks" }), counts), bar, h("div", { class: "scroll" }, grid), status);

  function draw() {
    if (drawQueued) return;
    drawQueued = true;
    requestAnimationFrame(() => {
      drawQueued = false;
      const shown = [...rows.values()].filter(matches).sort((a, b) => (b.created_at ?? 0) - (a.created_at ?? 0) || (b.task_id < a.task_id ? -1 : 1));
      patchRows(body, columns, shown, {
        key: (r) => r.task_id,
        // A row is drawn again when its task moved, or when its age reads differently.
        sig: (r) => `${r.version}|${r.status}|${ago(r.updated_at)}`,
        rowAttrs: (r) => ({
          "data-testid": "task-row",
          "data-task-id": r.task_id,
          "data-status": r.status,
          "data-href": `#/tasks/${encodeURIComponent(r.task_id)}`,
        }),
        empty: loaded ? "no tasks match" : "loading…",
      });
      const byStatus = Object.fromEntries(STATUSES.map((s) => [s, 0]));
      for (const r of rows.values()) if (r.status in byStatus) byStatus[r.status]++;
      fill(
        counts,
        STATUSES.map((s) => {
          const chip = h("button", { type: "button", class: ["chip", filters.status === s && "on"], title: `show ${s} tasks (of those loaded)` }, badge(s), ` ${byStatus[s]}`);
          chip.addEventListener("click", () => {
            const select = bar.querySelector("#filter-status");
            select.value = filters.status === s ? "" : s;
            select.dispatchEvent(new Event("change"));
          });
          return chip;
        }),
      );
      status.textContent = `${shown.length} shown of ${rows.size} loaded (newest ${LIMIT} per query; Type and Priority filter what is loaded).`;
      root.dataset.ready = loaded ? "1" : "";
    });
  }

  async function load() {
    const mine = ++loadToken;
    const q = { order: "desc", limit: LIMIT };
    for (const k of ["status", "worker_name", "container_name", "task_type"]) if (filters[k]) q[k] = filters[k];
    try {
      const page = await api(`/api/tasks${qs(q)}`);
      if (mine !== loadToken) return;
      for (const row of page.items) {
        const known = rows.get(row.task_id);
        if (!known || (known.version ?? 0) <= (row.version ?? 0)) rows.set(row.task_id, row);
      }
      trim();
      loaded = true;
      draw();
    } catch (error) {
      if (mine !== loadToken) return;
      fill(status, ctx.failure(error, "cannot list tasks"));
    }
  }

  function trim() {
    if (rows.size <= KEEP) return;
    const oldest = [...rows.values()].sort((a, b) => (a.created_at ?? 0) - (b.created_at ?? 0));
    for (const r of oldest.slice(0, rows.size - KEEP)) rows.delete(r.task_id);
  }

  /** A task first met mid-life: read its row once the projection has the event. */
  async function fetchRow(taskId, sequence) {
    if (fetching.has(taskId) || fetching.size > 20) return;
    fetching.add(taskId);
    try {
      const row = await api(`/api/tasks/${encodeURIComponent(taskId)}${qs({ min_seq: sequence })}`);
      const known = rows.get(taskId);
      if (!known || (known.version ?? 0) <= (row.version ?? 0)) rows.set(taskId, row);
      draw();
    } catch {
      // Gone or not projected yet: the next event of the task tries again.
    } finally {
      fetching.delete(taskId);
    }
  }

  const socket = feed(() => `/ws/tasks${qs({ after_seq: lastSeq })}`, {
    onState: ctx.setLive,
    onOpen: () => {
      if (!loaded) load();
    },
    onMessage(event) {
      if (typeof event.sequence !== "number") return;
      lastSeq = event.sequence;
      const row = rows.get(event.task_id);
      if (row) {
        if (applyEvent(row, event)) draw();
      } else if (event.type === "task.submitted") {
        rows.set(event.task_id, rowFromSubmission(event));
        trim();
        draw();
      } else if (event.status) {
        fetchRow(event.task_id, event.sequence);
      }
    },
  });

  // Ages ("12s ago") move on their own.
  const tick = setInterval(draw, 5000);
  return () => {
    socket.close();
    clearInterval(tick);
    clearTimeout(loadTimer);
    loadToken++;
  };
}
