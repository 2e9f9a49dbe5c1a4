// #/containers: the load balancer's instances — state, whether the proxy sends them requests,
// restarts, recent health checks — live over /ws/containers, with scale and restart controls;
// then what every worker's instances have run (GET /api/containers/usage) and the latest
// health checks the projection holds (container_health_checks).
//
// Without a configured service the balancer's routes answer 409 `not_configured`; the page
// says so and still shows what the projection knows (other vibehq processes may run pools).

import { api, feed, ApiError } from "./api.js";
import { h, fill, badge, table, patchRows, when, num, duration, section, notice, ms, shortId, tail } from "./dom.js";
import { checkStrip } from "./chart.js";

const REFRESH_MS = 5000;

export function mount(root, ctx) {
  root.dataset.testid = "page-containers";
  let pool = null;
  let configured = null;
  let socket = null;
  let stopped = false;
  let timer = null;
  let statusTimer = null;
  let busy = false;

  const head = h("div", { class: "page-head" }, h("h1", { text: "Containers" }));
  const summary = h("div", { class: "counts" });
  head.append(summary);
  const poolBox = h("div");
  const controls = h("div", { class: "actions" });
  const usageBox = h("div", { class: "scroll" });
  const checksBox = h("div", { class: "scroll" });
  const knownBox = h("div", { class: "scroll" });
  fill(
    root,
    head,
    section("Load balancer", controls, poolBox),
    h("div", { class: "cols" }, section("Usage per worker", usageBox), section("Recent health checks", checksBox)),
    section("Instances in the projection (every vibehq process)", knownBox),
  );

  const instanceColumns = [
    { label: "Instance", cell: (i) => shortId(i.instance_id) },
    { label: "State", cell: (i) => badge(i.state, "instance-state") },
    { label: "In rotation", cell: (i) => h("span", { class: i.in_rotation ? "yes" : "no", "data-testid": "in-rotation", text: i.in_rotation ? "yes" : "no" }) },
    { label: "Port", class: "num", cell: (i) => (i.port ? String(i.port) : "—") },
    { label: "PID", class: "num", cell: (i) => (i.pid ? String(i.pid) : "—") },
    { label: "Restarts", class: "num", cell: (i) => h("span", { class: i.restart_count > 0 ? "warn-text" : undefined, text: String(i.restart_count) }) },
    { label: "In flight", class: "num", cell: (i) => String(i.outstanding ?? 0) },
    { label: "Checks", cell: (i) => checkStrip(i.checks || []) },
    { label: "Last check", class: "num", cell: (i) => (i.checks?.length ? ms(i.checks[i.checks.length - 1].latency_ms) : "—") },
    { label: "Last error", class: "err-text", cell: (i) => i.last_error ?? "" },
    {
      label: "",
      cell: (i) => {
        const b = h("button", { type: "button", class: "small", "data-testid": "restart-button", "data-instance-id": i.instance_id, disabled: busy, text: "restart" });
        b.addEventListener("click", () => restart(i.instance_id));
        return b;
      },
    },
  ];

  // The pool's part of the page is built once and then updated in place: live updates come
  // several times a second, and a control rebuilt under the pointer would lose its click.
  let parts = null;

  function build() {
    const input = h("input", { id: "scale-input", type: "number", min: "0", max: "64", step: "1", "data-testid": "scale-input", "data-filter": "" });
    // A number the operator is typing is not overwritten by live updates.
    input.addEventListener("input", () => (input.dataset.dirty = "1"));
    const go = h("button", { type: "submit", class: "primary", "data-testid": "scale-button", text: "Scale" });
    const minus = h("button", { type: "button", "data-testid": "scale-down", title: "one fewer", text: "−1" });
    const plus = h("button", { type: "button", "data-testid": "scale-up", title: "one more", text: "+1" });
    minus.addEventListener("click", () => scale((pool?.desired ?? 1) - 1));
    plus.addEventListener("click", () => scale((pool?.desired ?? 0) + 1));
    const form = h("form", { class: "inline-form", "data-testid": "scale-form" }, h("label", { for: "scale-input", text: "Instances" }), input, go, minus, plus);
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const n = Number(input.value);
      if (Number.isInteger(n) && n >= 0) scale(n);
    });
    const health = h("span", { class: "lb-health", "data-testid": "lb-health" });
    fill(controls, form, health);
    const service = h("dd");
    const grid = table(instanceColumns, [], { testid: "instances", empty: "no instances (scale up to start some)" });
    fill(poolBox, h("dl", { class: "facts" }, h("dt", { text: "service" }), service), grid);
    parts = { input, go, minus, plus, health, service, body: grid.tBodies[0] };
  }

  function drawPool() {
    if (!pool) return;
    if (!parts) build();
    const instances = [...pool.instances].sort((a, b) => a.instance_id.localeCompare(b.instance_id));
    fill(
      summary,
      h("span", { class: "stat", "data-testid": "desired" }, h("b", { text: String(pool.desired) }), " desired"),
      h("span", { class: "stat", "data-testid": "healthy" }, h("b", { text: String(pool.healthy) }), " in rotation"),
      h("span", { class: "stat" }, h("b", { text: String(instances.length) }), " instances"),
    );
    parts.service.textContent = `${pool.worker_name}/${pool.container_name}`;
    patchRows(parts.body, instanceColumns, instances, {
      key: (i) => i.instance_id,
      rowAttrs: (i) => ({ "data-testid": "instance-row", "data-instance-id": i.instance_id, "data-state": i.state }),
      empty: "no instances (scale up to start some)",
    });
    drawControls();
  }

  function drawControls(health) {
    if (!parts) return;
    const { input, go, minus, plus } = parts;
    if (!input.dataset.dirty && document.activeElement !== input) input.value = String(pool?.desired ?? 0);
    go.disabled = busy;
    plus.disabled = busy;
    minus.disabled = busy || !pool?.desired;
    if (health) {
      parts.health.title = `/health/load-balancer: ${health.healthy} of ${health.desired} in rotation`;
      fill(parts.health, "balancer ", badge(health.status));
    }
  }

  async function scale(n) {
    busy = true;
    drawControls();
    try {
      pool = await api(`/api/containers/scale/${n}`, { method: "POST" });
      if (parts) delete parts.input.dataset.dirty;
      ctx.toast(`scaled to ${n}`, "ok");
    } catch (error) {
      ctx.toast(`scale refused: ${error.message}`, "error");
    } finally {
      busy = false;
      drawPool();
    }
  }

  async function restart(id) {
    busy = true;
    drawPool();
    try {
      await api(`/api/containers/${encodeURIComponent(id)}/restart`, { method: "POST" });
      ctx.toast(`restarting ${tail(id)}`, "ok");
    } catch (error) {
      ctx.toast(`restart refused: ${error.message}`, "error");
    } finally {
      busy = false;
      drawPool();
    }
  }

  /** The whole pool again, shortly after a change (an instance that went away drops out). */
  function refreshStatusSoon() {
    if (statusTimer) return; // at most one read in flight per quarter second, however busy the feed
    statusTimer = setTimeout(async () => {
      try {
        pool = await api("/api/containers/status");
        if (!stopped) drawPool();
      } catch {
        // The next change or refresh tries again.
      }
      statusTimer = null;
    }, 250);
  }

  function notConfigured() {
    configured = false;
    parts = null;
    fill(controls);
    fill(poolBox, notice("No load balancer configured in this vibehq process: set [balancer] program in the configuration file (see deploy/vibehq.example.toml).", "info", "no-balancer"));
    fill(summary);
  }

  async function loadPool() {
    try {
      // The health route answers 200 either way; where it says whether a service is
      // configured, an unconfigured balancer costs no refused request.
      const health = await api("/health/load-balancer", { accept: [503] });
      if (health && health.configured === false) return notConfigured();
    } catch {
      // The status call below says what is wrong.
    }
    try {
      pool = await api("/api/containers/status");
      configured = true;
      drawPool();
    } catch (error) {
      if (error instanceof ApiError && (error.status === 409 || error.status === 404)) return notConfigured();
      fill(poolBox, ctx.failure(error, "cannot read the pool"));
      return;
    }
    socket = feed(() => "/ws/containers", {
      onState: ctx.setLive,
      onMessage(message) {
        if (Array.isArray(message.instances)) pool = message;
        else if (message.instance_id && pool) {
          const i = pool.instances.findIndex((x) => x.instance_id === message.instance_id);
          if (i >= 0) pool.instances[i] = message;
          else pool.instances.push(message);
          pool.healthy = pool.instances.filter((x) => x.in_rotation).length;
          refreshStatusSoon();
        }
        drawPool();
      },
    });
  }

  async function refresh() {
    clearTimeout(timer);
    const jobs = [
      api("/api/containers/usage").then((usage) =>
        fill(
          usageBox,
          table(
            [
              { label: "Worker", cell: (u) => u.worker_name },
              { label: "Instances", class: "num", cell: (u) => num(u.instances) },
              { label: "Running", class: "num", cell: (u) => num(u.running) },
              { label: "Instance time", class: "num", title: "Seconds their processes have run", cell: (u) => duration(u.instance_seconds) },
            ],
            usage,
            { testid: "usage", empty: "no instances recorded" },
          ),
        ),
      ),
      api("/api/tables/container_health_checks?order=desc&limit=12").then((page) =>
        fill(
          checksBox,
          table(
            [
              { label: "At", cell: (c) => when(c.checked_at) },
              { label: "Instance", cell: (c) => shortId(c.instance_id) },
              { label: "Healthy", cell: (c) => h("span", { class: c.healthy ? "yes" : "no", text: c.healthy ? "yes" : "no" }) },
              { label: "Code", class: "num", cell: (c) => (c.status_code ? String(c.status_code) : "—") },
              { label: "Latency", class: "num", cell: (c) => ms(c.latency_ms) },
              { label: "Error", class: "err-text", cell: (c) => c.error ?? "" },
            ],
            page.items,
            { testid: "health-checks", empty: "no health checks recorded" },
          ),
        ),
      ),
      api("/api/tables/container_instances?order=desc&limit=30").then((page) =>
        fill(
          knownBox,
          table(
            [
              { label: "Instance", cell: (i) => shortId(i.instance_id) },
              { label: "Worker", cell: (i) => i.worker_name },
              { label: "Container", cell: (i) => i.container_name ?? "—" },
              { label: "State", cell: (i) => badge(i.state) },
              { label: "Port", class: "num", cell: (i) => (i.port ? String(i.port) : "—") },
              { label: "Restarts", class: "num", cell: (i) => String(i.restart_count ?? 0) },
              { label: "Last health", cell: (i) => when(i.last_health_check) },
              { label: "Updated", cell: (i) => when(i.updated_at) },
              { label: "Last error", class: "err-text", cell: (i) => i.last_error ?? "" },
            ],
            page.items,
            { testid: "known-instances", empty: "no instances recorded" },
          ),
        ),
      ),
    ];
    if (configured) {
      jobs.push(api("/health/load-balancer", { accept: [503] }).then((health) => drawControls(health)));
    }
    const results = await Promise.allSettled(jobs);
    if (stopped) return;
    const failed = results.find((r) => r.status === "rejected");
    if (failed) ctx.toast(`containers: ${failed.reason.message}`, "error");
    root.dataset.ready = "1";
    timer = setTimeout(refresh, REFRESH_MS);
  }

  ctx.setLive("polling");
  loadPool().then(() => !stopped && refresh());
  return () => {
    stopped = true;
    clearTimeout(timer);
    clearTimeout(statusTimer);
    socket?.close();
  };
}
