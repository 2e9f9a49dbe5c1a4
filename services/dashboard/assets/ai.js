// #/ai: the AI gateway as operators watch it — steps waiting for a human's approval (with
// approve and reject), plans, model calls (provider, model, outcome, latency, tokens, cost),
// the fallbacks among them, and routing decisions. #/ai/plans/<id>: one plan.
//
// Everything is read from the projection's tables (ai_tasks_hitl, ai_tasks, ai_model_calls,
// ai_routing_decisions) and from GET /api/ai/plans/{id}; decisions go to
// POST /api/ai/approvals/{id}/approve|reject. There is no live AI feed (/ws/ai runs calls; it
// does not report them), so the page reads again every few seconds.

import { api, poll, qs } from "./api.js";
import { h, fill, badge, table, patchRows, when, num, ms, usd, section, notice, shortId, idLink, pretty } from "./dom.js";

const REFRESH_MS = 5000;
const OPERATOR_KEY = "vibehq.operator";

function operator() {
  try {
    return localStorage.getItem(OPERATOR_KEY) || "dashboard";
  } catch {
    return "dashboard";
  }
}

/** A plan's status from its steps, as the agent computes it. */
function planStatus(steps) {
  const st = steps.map((s) => s.status);
  if (st.includes("awaiting_approval")) return "awaiting_approval";
  if (st.includes("rejected")) return "rejected";
  if (st.includes("failed")) return "failed";
  if (st.every((s) => s === "completed" || s === "cancelled")) return "completed";
  return "running";
}

function percentile(values, p) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

/** The decision controls shared by the AI page and a plan's page. */
function decisionBar() {
  const as = h("input", { id: "decide-as", type: "text", value: operator(), spellcheck: "false", "data-testid": "decide-as" });
  as.addEventListener("change", () => {
    try {
      localStorage.setItem(OPERATOR_KEY, as.value.trim() || "dashboard");
    } catch {
      // Storage off: the name lasts for this page.
    }
  });
  const comment = h("input", { id: "decide-comment", type: "text", placeholder: "optional", spellcheck: "false", "data-testid": "decide-comment" });
  const bar = h("div", { class: "inline-form" }, h("label", { for: "decide-as", text: "Decide as" }), as, h("label", { for: "decide-comment", text: "Comment" }), comment);
  return { bar, as, comment };
}

function approvalColumns(decide, plans) {
  return [
    { label: "Requested", cell: (a) => when(a.requested_at) },
    { label: "Action", cell: (a) => h("b", { text: a.action }) },
    {
      label: "Details",
      cell: (a) => {
        const d = a.details || {};
        return [d.command ? h("span", { class: "mono", text: d.command }) : null, d.description ? h("span", { class: "muted", text: ` ${d.description}` }) : null];
      },
    },
    {
      label: "Plan",
      cell: (a) => {
        const planId = plans?.get(a.task_id);
        return planId ? idLink(`#/ai/plans/${encodeURIComponent(planId)}`, planId) : shortId(a.task_id);
      },
    },
    { label: "Worker", cell: (a) => a.worker_name },
    { label: "Status", cell: (a) => badge(a.status, "approval-status") },
    {
      label: "",
      cell: (a) => {
        if (a.status !== "pending") return a.decided_by ? h("span", { class: "muted", text: `by ${a.decided_by}${a.comment ? `: ${a.comment}` : ""}` }) : "";
        const yes = h("button", { type: "button", class: "primary small", "data-testid": "approve-button", "data-approval-id": a.approval_id, text: "approve" });
        const no = h("button", { type: "button", class: "danger small", "data-testid": "reject-button", "data-approval-id": a.approval_id, text: "reject" });
        yes.addEventListener("click", () => decide(a.approval_id, true, [yes, no]));
        no.addEventListener("click", () => decide(a.approval_id, false, [yes, no]));
        return h("span", { class: "btns" }, yes, no);
      },
    },
  ];
}

function makeDecide(ctx, controls, after) {
  return async (approvalId, approve, buttons) => {
    for (const b of buttons) b.disabled = true;
    try {
      const body = { worker_name: controls.as.value.trim() || "dashboard" };
      if (controls.comment.value.trim()) body.comment = controls.comment.value.trim();
      const plan = await api(`/api/ai/approvals/${encodeURIComponent(approvalId)}/${approve ? "approve" : "reject"}`, { method: "POST", body });
      controls.comment.value = "";
      ctx.toast(`${approve ? "approved" : "rejected"}; plan is ${plan.status}`, "ok");
    } catch (error) {
      ctx.toast(`decision refused: ${error.message}`, "error");
    }
    after();
  };
}

export function mount(root, ctx) {
  return ctx.id ? mountPlan(root, ctx) : mountOverview(root, ctx);
}

function mountOverview(root, ctx) {
  root.dataset.testid = "page-ai";
  let polling = null;
  const controls = decisionBar();
  const decide = makeDecide(ctx, controls, () => polling.now());
  const summary = h("div", { class: "counts" });
  const approvalsBox = h("div", { class: "scroll" });
  const plansBox = h("div", { class: "scroll" });
  const byModelBox = h("div", { class: "scroll" });
  const callsBox = h("div", { class: "scroll" });
  const fallbackBox = h("div", { class: "scroll" });
  const routingBox = h("div", { class: "scroll" });
  fill(
    root,
    h("div", { class: "page-head" }, h("h1", { text: "AI" }), summary),
    section("Waiting for approval", controls.bar, approvalsBox),
    section("Plans", plansBox),
    h("div", { class: "cols" }, section("By provider and model (latest 200 attempts)", byModelBox), section("Fallbacks", fallbackBox)),
    section("Model calls", callsBox),
    section("Routing decisions", routingBox),
  );

  let approvalsTable = null;
  const decidedBox = h("div");

  async function load(stopped) {
    try {
      const [pending, recentApprovals, steps, calls, routing] = await Promise.all([
        api(`/api/tables/ai_tasks_hitl${qs({ status: "pending", order: "asc", limit: 100 })}`),
        api(`/api/tables/ai_tasks_hitl${qs({ order: "desc", limit: 10 })}`),
        api(`/api/tables/ai_tasks${qs({ order: "desc", limit: 300 })}`),
        api(`/api/tables/ai_model_calls${qs({ order: "desc", limit: 200 })}`),
        api(`/api/tables/ai_routing_decisions${qs({ order: "desc", limit: 50 })}`),
      ]);
      if (stopped()) return;
      const planOf = new Map(steps.items.map((s) => [s.task_id, s.plan_id]));
      const decided = recentApprovals.items.filter((a) => a.status !== "pending").slice(0, 5);
      // Updated in place, so the buttons under the pointer survive the refresh.
      if (!approvalsTable) {
        approvalsTable = table(approvalColumns(decide, planOf), [], { testid: "approvals", nav: true, empty: "nothing waits for a decision" });
        fill(approvalsBox, approvalsTable, decidedBox);
      }
      patchRows(approvalsTable.tBodies[0], approvalColumns(decide, planOf), pending.items, {
        key: (a) => a.approval_id,
        rowAttrs: (a) => ({ "data-testid": "approval-row", "data-approval-id": a.approval_id, "data-href": planOf.get(a.task_id) ? `#/ai/plans/${encodeURIComponent(planOf.get(a.task_id))}` : undefined }),
        empty: "nothing waits for a decision",
      });
      fill(decidedBox, decided.length ? h("details", { class: "recent", open: decidedBox.querySelector("details")?.open }, h("summary", { text: `last ${decided.length} decisions` }), table(approvalColumns(decide, planOf), decided, { testid: "decided" })) : null);

      // Plans, newest first, from their steps.
      const plans = new Map();
      for (const s of steps.items) {
        if (!plans.has(s.plan_id)) plans.set(s.plan_id, []);
        plans.get(s.plan_id).push(s);
      }
      const planRows = [...plans.entries()].map(([plan_id, list]) => {
        list.sort((a, b) => a.id - b.id);
        return { plan_id, steps: list, status: planStatus(list), created_at: list[0].created_at, updated_at: Math.max(...list.map((s) => s.updated_at || 0)), worker_name: list[0].worker_name };
      });
      planRows.sort((a, b) => b.created_at - a.created_at);
      fill(
        plansBox,
        table(
          [
            { label: "Plan", cell: (p) => idLink(`#/ai/plans/${encodeURIComponent(p.plan_id)}`, p.plan_id) },
            { label: "Status", cell: (p) => badge(p.status, "plan-status") },
            { label: "First step", cell: (p) => p.steps[0]?.title ?? "" },
            { label: "Steps", cell: (p) => h("span", { class: "steps" }, p.steps.map((s) => h("span", { class: `pip b-${s.status}`, title: `${s.title}: ${s.status}` }))) },
            { label: "Worker", cell: (p) => p.worker_name },
            { label: "Created", cell: (p) => when(p.created_at) },
            { label: "Updated", cell: (p) => when(p.updated_at) },
          ],
          planRows.slice(0, 30),
          { testid: "plans", rowAttrs: (p) => ({ "data-testid": "plan-row", "data-plan-id": p.plan_id, "data-href": `#/ai/plans/${encodeURIComponent(p.plan_id)}` }), empty: "no plans" },
        ),
      );

      // Calls: totals, by provider and model, fallbacks, the latest attempts.
      const items = calls.items;
      const ok = items.filter((c) => c.outcome === "ok").length;
      // Unpriced models record no cost: a sum of nothing is "—", not $0.
      const costOf = (list) => (list.some((c) => c.cost_usd !== null && c.cost_usd !== undefined) ? list.reduce((a, c) => a + (c.cost_usd || 0), 0) : null);
      const cost = costOf(items);
      const tokensIn = items.reduce((a, c) => a + (c.input_tokens || 0), 0);
      const tokensOut = items.reduce((a, c) => a + (c.output_tokens || 0), 0);
      fill(
        summary,
        h("span", { class: "stat" }, h("b", { text: num(pending.items.length) }), " waiting"),
        h("span", { class: "stat" }, h("b", { text: num(items.length) }), " attempts"),
        h("span", { class: "stat" }, h("b", { text: items.length ? `${Math.round((100 * ok) / items.length)}%` : "—" }), " ok"),
        h("span", { class: "stat" }, h("b", { text: `${num(tokensIn)} / ${num(tokensOut)}` }), " tokens in/out"),
        h("span", { class: "stat" }, h("b", { text: usd(cost) }), " cost"),
      );
      const groups = new Map();
      for (const c of items) {
        const key = `${c.provider}\u0000${c.model}`;
        if (!groups.has(key)) groups.set(key, { provider: c.provider, model: c.model, calls: [] });
        groups.get(key).calls.push(c);
      }
      fill(
        byModelBox,
        table(
          [
            { label: "Provider", cell: (g) => g.provider },
            { label: "Model", class: "mono", cell: (g) => g.model },
            { label: "Attempts", class: "num", cell: (g) => num(g.calls.length) },
            { label: "OK", class: "num", cell: (g) => `${Math.round((100 * g.calls.filter((c) => c.outcome === "ok").length) / g.calls.length)}%` },
            { label: "p50", class: "num", cell: (g) => ms(percentile(g.calls.map((c) => c.latency_ms), 50)) },
            { label: "p95", class: "num", cell: (g) => ms(percentile(g.calls.map((c) => c.latency_ms), 95)) },
            { label: "Tokens", class: "num", cell: (g) => num(g.calls.reduce((a, c) => a + (c.input_tokens || 0) + (c.output_tokens || 0), 0)) },
            { label: "Cost", class: "num", cell: (g) => usd(costOf(g.calls)) },
          ],
          [...groups.values()],
          { testid: "by-model", empty: "no model calls" },
        ),
      );
      const requests = new Map();
      for (const c of items) {
        if (!requests.has(c.request_id)) requests.set(c.request_id, []);
        requests.get(c.request_id).push(c);
      }
      const fallbacks = [...requests.entries()].filter(([, list]) => list.length > 1).map(([request_id, list]) => ({ request_id, list: list.sort((a, b) => a.attempt - b.attempt) }));
      fill(
        fallbackBox,
        table(
          [
            { label: "At", cell: (f) => when(f.list[0].created_at) },
            { label: "Request", cell: (f) => shortId(f.request_id) },
            { label: "Operation", cell: (f) => f.list[0].operation },
            {
              label: "Chain",
              cell: (f) =>
                f.list.map((c, i) => [i ? h("span", { class: "muted", text: " → " }) : null, h("span", { class: c.outcome === "ok" ? "yes" : "no", title: c.error || c.outcome, text: `${c.provider} ${c.outcome}` })]),
            },
            { label: "Total", class: "num", cell: (f) => ms(f.list.reduce((a, c) => a + c.latency_ms, 0)) },
          ],
          fallbacks,
          { testid: "fallbacks", empty: "no request fell back to another provider" },
        ),
      );
      fill(
        callsBox,
        table(
          [
            { label: "At", cell: (c) => when(c.created_at) },
            { label: "Op", cell: (c) => c.operation },
            { label: "Provider", cell: (c) => c.provider },
            { label: "Model", class: "mono", cell: (c) => c.model },
            { label: "#", class: "num", title: "Attempt within its request", cell: (c) => String(c.attempt) },
            { label: "Outcome", cell: (c) => badge(c.outcome) },
            { label: "Code", class: "num", cell: (c) => (c.status_code ? String(c.status_code) : "—") },
            { label: "Latency", class: "num", cell: (c) => ms(c.latency_ms) },
            { label: "First token", class: "num", cell: (c) => ms(c.first_token_ms) },
            { label: "In", class: "num", cell: (c) => num(c.input_tokens) },
            { label: "Out", class: "num", cell: (c) => num(c.output_tokens) },
            { label: "Cached", class: "num", cell: (c) => num(c.cached_tokens) },
            { label: "Cost", class: "num", cell: (c) => usd(c.cost_usd) },
            { label: "Error", class: "err-text", cell: (c) => c.error ?? "" },
          ],
          items.slice(0, 50),
          { testid: "model-calls", rowAttrs: (c) => ({ "data-testid": "model-call-row", title: `request ${c.request_id}` }), empty: "no model calls" },
        ),
      );
      fill(
        routingBox,
        table(
          [
            { label: "At", cell: (d) => when(d.created_at) },
            { label: "Tier", cell: (d) => badge(d.tier) },
            { label: "Provider", cell: (d) => d.provider },
            { label: "Model", class: "mono", cell: (d) => d.model },
            { label: "Complexity", class: "num", cell: (d) => num(d.complexity, 2) },
            { label: "Reasons", cell: (d) => (Array.isArray(d.reasons) ? d.reasons.join("; ") : pretty(d.reasons)) },
            { label: "Prompt", class: "clip", cell: (d) => h("span", { title: d.prompt, text: d.prompt }) },
          ],
          routing.items,
          { testid: "routing", empty: "no routing decisions" },
        ),
      );
      root.dataset.ready = "1";
    } catch (error) {
      if (!stopped()) {
        approvalsTable = null;
        fill(approvalsBox, ctx.failure(error, "cannot read the AI tables"));
      }
    }
  }

  ctx.setLive("polling");
  polling = poll(REFRESH_MS, load);
  return polling.stop;
}

function mountPlan(root, ctx) {
  root.dataset.testid = "page-plan";
  const id = ctx.id;
  let polling = null;
  const controls = decisionBar();
  const decide = makeDecide(ctx, controls, () => polling.now());
  const head = h("div", { class: "page-head" }, h("h1", null, "Plan ", h("span", { class: "mono", text: id })));
  const stepsBox = h("div", { class: "scroll" });
  const approvalsBox = h("div", { class: "scroll" });
  fill(root, h("p", { class: "crumbs" }, h("a", { href: "#/ai", text: "← AI" }), h("span", { class: "muted", text: " (u)" })), head, section("Steps", stepsBox), section("Approvals", controls.bar, approvalsBox));

  async function load(stopped) {
    try {
      const plan = await api(`/api/ai/plans/${encodeURIComponent(id)}`);
      if (stopped()) return;
      fill(head, h("h1", null, "Plan ", h("span", { class: "mono", text: id })), badge(plan.status, "plan-status"));
      fill(
        stepsBox,
        table(
          [
            { label: "#", class: "num", cell: (s) => String(plan.tasks.indexOf(s) + 1) },
            { label: "Step", cell: (s) => [h("b", { text: s.title }), s.description ? h("div", { class: "muted small", text: s.description }) : null] },
            { label: "Status", cell: (s) => badge(s.status) },
            { label: "Approval", cell: (s) => (s.requires_approval ? "required" : "") },
            { label: "Command", class: "mono", cell: (s) => s.command ?? "" },
            { label: "Queue task", cell: (s) => (s.queue_task_id ? idLink(`#/tasks/${encodeURIComponent(s.queue_task_id)}`, s.queue_task_id) : "") },
            { label: "Result", class: "clip", cell: (s) => (s.result ? h("span", { title: s.result, text: s.result }) : "") },
            { label: "Updated", cell: (s) => when(s.updated_at) },
          ],
          plan.tasks,
          { testid: "plan-steps" },
        ),
      );
      const planOf = new Map(plan.tasks.map((s) => [s.task_id, plan.plan_id]));
      fill(
        approvalsBox,
        table(approvalColumns(decide, planOf), plan.approvals, {
          testid: "plan-approvals",
          rowAttrs: (a) => ({ "data-testid": "approval-row", "data-approval-id": a.approval_id }),
          empty: "no step of this plan asked for approval",
        }),
        plan.approvals.some((a) => a.details) ? h("details", { class: "recent" }, h("summary", { text: "approval details (JSON)" }), h("pre", { class: "code", text: pretty(plan.approvals.map((a) => ({ approval_id: a.approval_id, details: a.details }))) })) : null,
      );
      root.dataset.ready = "1";
    } catch (error) {
      if (!stopped()) fill(stepsBox, error.status === 404 ? notice(`no plan ${id}`, "warn", "load-error") : ctx.failure(error, "cannot read the plan"));
      if (error.status === 404) root.dataset.ready = "1";
    }
  }

  ctx.setLive("polling");
  polling = poll(REFRESH_MS, load);
  return polling.stop;
}
