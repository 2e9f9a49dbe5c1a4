// #/tasks/<id>: one task — what it is, its timeline, its output and error, and the operator's
// actions on it (cancel one that has not ended, retry a dead one).
//
// The timeline is the task's events as the stream holds them (GET /api/tasks/{id}/history),
// each with the status it moved the task to or why the lifecycle refused it. The page follows
// /ws/tasks and reads the task again whenever one of its events goes by.

import { api, feed, qs, ApiError } from "./api.js";
import { h, fill, badge, when, facts, pretty, notice, section, duration, toDate, tail } from "./dom.js";

const ENDED = ["completed", "failed", "cancelled"];
const DEAD = ["failed", "cancelled"];

/** The payload fields worth a line in the timeline, in reading order. */
const DETAIL_FIELDS = ["attempt", "lease_ms", "backoff_ms", "reason", "outcome", "error", "output", "retry_of"];

function payloadOf(entry) {
  const ev = entry.event || {};
  const p = ev.payload && typeof ev.payload === "object" ? ev.payload : ev;
  // Some encodings nest the fields one level deeper ({type, data}).
  return p.data && typeof p.data === "object" ? p.data : p;
}

/** `14:03:22.481`: entries of one task are often milliseconds apart. */
function precise(t) {
  const d = toDate(t);
  if (!d) return "—";
  const p = (n, w = 2) => String(n).padStart(w, "0");
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

function since(previous, entry) {
  if (!previous) return "";
  const gap = (toDate(entry.stored_at) - toDate(previous.stored_at)) / 1000;
  if (!(gap >= 0)) return "";
  return gap < 1 ? `+${Math.round(gap * 1000)} ms` : `+${duration(gap)}`;
}

function timelineEntry(entry, index, all) {
  const p = payloadOf(entry);
  const details = [];
  for (const k of DETAIL_FIELDS) {
    if (p[k] === undefined || p[k] === null || p[k] === "") continue;
    let v = p[k];
    if (k === "lease_ms" || k === "backoff_ms") v = duration(v / 1000);
    else if (typeof v === "object") v = JSON.stringify(v);
    details.push(h("span", { class: "kv" }, h("b", { text: k.replace(/_ms$/, "") }), " ", String(v)));
  }
  const outcome = entry.refused
    ? h("span", { class: "refused", text: `refused: ${entry.refused}` })
    : entry.undecodable
      ? h("span", { class: "refused", text: `unreadable: ${entry.undecodable}` })
      : entry.status
        ? ["→ ", badge(entry.status)]
        : null;
  const kind = entry.kind || entry.subject;
  return h(
    "li",
    {
      class: ["tl", entry.refused || entry.undecodable ? "tl-bad" : `tl-${(entry.status || "").replace(/\W/g, "")}`],
      "data-testid": "timeline-entry",
      "data-kind": entry.kind || "",
    },
    h(
      "div",
      { class: "tl-head" },
      h("time", { datetime: entry.stored_at, title: entry.stored_at, text: precise(entry.stored_at) }),
      h("span", { class: "gap", text: since(all[index - 1], entry) }),
      h("b", { class: "mono", text: kind }),       outcome,
      h("span", { class: "muted", text: entry.actor ? `by ${entry.actor}` : "" }),
      h("span", { class: "muted mono small", title: "sequence in VIBEHQ_TASKS", text: `#${entry.sequence}` }),
    ),
    details.length ? h("div", { class: "tl-body" }, details) : null,
  );
}

export function mount(root, ctx) {
  const id = ctx.id;
  let row = null;
  let retries = [];
  let reloadTimer = null;
  let busy = false;
  let cancelOpen = false;

  root.dataset.testid = "page-task";
  const head = h("div", { class: "page-head" });
  const actions = h("div", { class: "actions", "data-testid": "task-actions" });
  const result = h("div", { class: "action-result" });
  const info = h("div", { class: "cols" });
  const timeline = h("ol", { class: "timeline", "data-testid": "timeline" });
  const outputs = h("div");
  const waiting = h("div", { "data-testid": "why-pending" });
  fill(root, h("p", { class: "crumbs" }, h("a", { href: "#/tasks", text: "← Tasks" }), h("span", { class: "muted", text: " (u)" })), head, actions, result, waiting, info, outputs, section("Timeline", timeline));

  function drawActions() {
    const status = row?.status;
    const cancel = h("button", { type: "button", class: "danger", "data-testid": "cancel-button", disabled: !row || ENDED.includes(status) || busy, text: "Cancel task…" });
    cancel.addEventListener("click", () => {
      cancelOpen = true;
      drawActions();
      actions.querySelector("#cancel-reason")?.focus();
    });
    const retry = h("button", { type: "button", "data-testid": "retry-button", disabled: !row || !DEAD.includes(status) || busy, title: "Submit the same work again as a new task that names this one (retry_of)", text: "Retry as new task" });
    retry.addEventListener("click", doRetry);
    const parts = [cancel, retry];
    if (cancelOpen && row && !ENDED.includes(status)) {
      const reason = h("input", { id: "cancel-reason", type: "text", placeholder: "reason (optional)", "data-testid": "cancel-reason", spellcheck: "false" });
      const confirm = h("button", { type: "submit", class: "danger", "data-testid": "confirm-cancel", disabled: busy, text: "Confirm cancel" });
      const back = h("button", { type: "button", class: "ghost", text: "keep it" });
      back.addEventListener("click", () => {
        cancelOpen = false;
        drawActions();
      });
      const form = h("form", { class: "inline-form" }, reason, confirm, back);
      form.addEventListener("submit", (e) => {
        e.preventDefault();
        doCancel(reason.value.trim());
      });
      parts.push(form);
    }
    fill(actions, parts);
  }

  async function doCancel(reason) {
    busy = true;
    drawActions();
    try {
      await api(`/api/tasks/${encodeURIComponent(id)}/cancel`, { method: "POST", body: reason ? { reason, cancelled_by: "dashboard" } : { cancelled_by: "dashboard" } });
      cancelOpen = false;
      ctx.toast(`cancelled ${tail(id)}`, "ok");
    } catch (error) {
      fill(result, notice(`cancel refused: ${error.message}`, "error", "action-error"));
    } finally {
      busy = false;
      reload();
    }
  }

  async function doRetry() {
    busy = true;
    drawActions();
    try {
      const submitted = await api(`/api/tasks/${encodeURIComponent(id)}/retry`, { method: "POST", body: { submitted_by: "dashboard" } });
      fill(
        result,
        h(
          "p",
          { class: "notice n-ok" },
          "Retried as ",
          h("a", { href: `#/tasks/${encodeURIComponent(submitted.task_id)}`, class: "mono", "data-testid": "retry-link", "data-task-id": submitted.task_id, "data-sequence": String(submitted.sequence), text: submitted.task_id }),
          ".",
        ),
      );
      ctx.toast("retry submitted", "ok");
      // Read the page again once the projection has the retry, so "retried as" lists it.
      busy = false;
      reload(submitted.sequence);
    } catch (error) {
      fill(result, notice(`retry refused: ${error.message}`, "error", "action-error"));
    } finally {
      busy = false;
      drawActions();
    }
  }

  function drawTask() {
    const r = row;
    const target = r.worker_name ? (r.container_name ? `${r.worker_name}/${r.container_name}` : r.worker_name) : "any worker";
    fill(
      head,
      h("h1", null, "Task ", h("span", { class: "mono", "data-testid": "task-id", text: r.task_id })),
      badge(r.status, "task-status"),
    );
    const secs = (a, b) => (toDate(a) && toDate(b) ? duration((toDate(b) - toDate(a)) / 1000) : "—");
    fill(
      info,
      section(
        "Task",
        facts([
          ["type", r.task_type],
          ["command", h("span", { class: "mono", text: r.command })],
          ["priority", String(r.priority ?? 0)],
          ["target", target],
          ["held by", r.assigned_to || "—"],
          ["attempts", `${r.attempts ?? 0} of ${r.max_attempts ?? "?"}`],
          ["progress", progressText(r)],
          ["retry of", r.retry_of ? h("a", { href: `#/tasks/${encodeURIComponent(r.retry_of)}`, class: "mono", "data-testid": "retry-of", text: r.retry_of }) : "—"],
          ["retried as", retries.length ? retries.map((t) => h("a", { href: `#/tasks/${encodeURIComponent(t.task_id)}`, class: "mono", "data-testid": "retried-as", text: `${tail(t.task_id)} ` })) : "—"],
          ["idempotency key", r.idempotency_key || "—"],
        ]),
      ),
      section(
        "Times",
        facts([
          ["created", when(r.created_at)],
          ["runs at", r.run_at ? when(r.run_at) : "—"],
          ["assigned", when(r.assigned_at)],
          ["started", when(r.started_at)],
          ["ended", when(r.completed_at)],
          ["waited", secs(r.created_at, r.assigned_at)],
          ["took", secs(r.created_at, r.completed_at)],
          ["version", h("span", { class: "mono", title: "stream sequence of the last event applied", text: String(r.version ?? "—") })],
        ]),
      ),
    );
    const params = r.parameters && Object.keys(r.parameters).length ? pretty(r.parameters) : null;
    fill(
      outputs,
      section("Parameters", params ? h("pre", { class: "code", "data-testid": "task-parameters", text: params }) : h("p", { class: "muted", text: "none" })),
      r.output ? section("Output", h("pre", { class: "code", "data-testid": "task-output", text: pretty(r.output) })) : null,
      r.error ? section("Error", h("pre", { class: "code err", "data-testid": "task-error", text: r.error })) : null,
    );
    drawActions();
  }

  /** Why a pending task has not run (GET /api/tasks/{id}/why), a reason a line. */
  function drawWhy(why) {
    if (!why) return fill(waiting);
    const lines = why.reasons.map((r) => h("li", { "data-reason": r.reason, text: reasonText(r) }));
    fill(
      waiting,
      section(
        "Why pending",
        lines.length
          ? h("ul", { class: "reasons" }, lines)
          : h("p", { class: "muted", text: `nothing holds it back in lane ${why.lane}: it is about to be claimed` }),
      ),
    );
  }

  async function reload(minSeq) {
    try {
      const [task, history, retried] = await Promise.all([
        api(`/api/tasks/${encodeURIComponent(id)}${qs({ min_seq: minSeq })}`),
        api(`/api/tasks/${encodeURIComponent(id)}/history`),
        api(`/api/tasks${qs({ retry_of: id, limit: 20, min_seq: minSeq })}`),
      ]);
      row = task;
      retries = retried.items || [];
      drawTask();
      drawWhy(task.status === "pending" ? await api(`/api/tasks/${encodeURIComponent(id)}/why`) : null);
      fill(timeline, history.map(timelineEntry));
      root.dataset.ready = "1";
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        fill(head, h("h1", null, "Task ", h("span", { class: "mono", text: id })));
        fill(info, notice(`no task ${id}`, "warn", "load-error"));
        root.dataset.ready = "1";
      } else {
        fill(info, ctx.failure(error, "cannot read the task"));
      }
    }
  }

  const socket = feed(() => "/ws/tasks", {
    onState: ctx.setLive,
    onOpen: () => reload(),
    onMessage(event) {
      if (event.task_id !== id) return;
      clearTimeout(reloadTimer);
      const seq = event.sequence;
      reloadTimer = setTimeout(() => reload(seq), 50);
    },
  });
  drawActions();
  return () => {
    socket.close();
    clearTimeout(reloadTimer);
  };
}

/** The latest progress report, e.g. "40% cloning", or "—" without one. */
function progressText(r) {
  const parts = [];
  if (r.progress_percent != null) parts.push(`${Math.round(r.progress_percent * 10) / 10}%`);
  if (r.progress_message) parts.push(r.progress_message);
  return parts.length ? parts.join(" ") : "—";
}

/** One reason from GET /api/tasks/{id}/why, in words. */
function reasonText(r) {
  switch (r.reason) {
    case "backoff":
      return `attempt ${r.attempt} waits out its backoff until ${when(r.retry_at)}`;
    case "no_lane":
      return `its lane has no consumer on the server (${r.consumer}); the next submission into it creates one`;
    case "no_claimer":
      return `no claimer that may take it has pulled its lane for ${duration(r.idle_secs)} (${r.undelivered} waiting; last active ${when(r.last_active)})`;
    case "ahead":
      return `${r.higher_priority} pending task(s) of a higher priority and ${r.earlier_in_lane} earlier in its lane go first`;
    default:
      return `${r.reason}: ${JSON.stringify(r)}`;
  }
}
