// The dashboard, driven in headless Chromium against a running vibehq.
//
// What it needs, by environment:
//   VIBEHQ_URL           the API's base URL, e.g. http://127.0.0.1:18080
//   VIBEHQ_TOKEN         an operator's API token (empty: the API has none configured)
//   VIBEHQ_SCREENSHOTS   a folder for <page>.png and <page>-dark.png (created)
//   VIBEHQ_FAKE_OPENAI   optional: the fake OpenAI server's base URL, scripted for the AI call
//   CHROMIUM             optional: the browser (default /usr/bin/chromium; none is downloaded)
// The vibehq under test runs a load balancer (1-2 instances) and an AI provider; everything
// else (tasks, a dead letter, a plan waiting for approval) this script makes over REST.
//
// Each check prints `ok - <what>`; the first failure prints `not ok - <what>: <why>` and the
// script exits 1. Waits are Playwright's (selectors, functions, responses) with deadlines,
// never fixed sleeps. Run: `npm ci && node dashboard.mjs` in tests/browser.

import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const BASE = (process.env.VIBEHQ_URL || "http://127.0.0.1:8080").replace(/\/$/, "");
const TOKEN = process.env.VIBEHQ_TOKEN || "";
const SHOTS = process.env.VIBEHQ_SCREENSHOTS || "dashboard-screenshots";
const FAKE = (process.env.VIBEHQ_FAKE_OPENAI || "").replace(/\/$/, "");
const WAIT = 10_000;
const started = Date.now();

mkdirSync(SHOTS, { recursive: true });

class Failure extends Error {}

function ok(what) {
  console.log(`ok - ${what}`);
}

async function check(what, fn) {
  try {
    const detail = await fn();
    ok(detail ? `${what} (${detail})` : what);
  } catch (error) {
    throw new Failure(`${what}: ${error.message.split("\n")[0]}`);
  }
}

/** A REST call with the token; non-2xx throws naming the route and the API's error. */
async function rest(method, path, body) {
  const headers = { accept: "application/json" };
  if (TOKEN) headers.authorization = `Bearer ${TOKEN}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(BASE + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) throw new Error(`${method} ${path} answered ${response.status}: ${text.slice(0, 300)}`);
  return data;
}

const submit = (task) => rest("POST", "/api/tasks", { task_type: "browser-check", command: "audit", ...task });

// ---- The browser, and everything it complains about ----

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, colorScheme: "light" });
const page = await context.newPage();
page.setDefaultTimeout(WAIT);

let loggingIn = Boolean(TOKEN);
const problems = [];
page.on("console", (message) => {
  const type = message.type();
  if (type !== "error" && type !== "warning") return;
  // Before the token is entered, the app's one probe is answered 401 by design.
  if (loggingIn && /status of 401/.test(message.text())) return;
  problems.push(`console ${type}: ${message.text()}`);
});
page.on("pageerror", (error) => problems.push(`uncaught: ${error.message}`));
page.on("requestfailed", (request) => problems.push(`request failed: ${request.method()} ${request.url()} (${request.failure()?.errorText})`));
page.on("response", (response) => {
  if (response.status() < 400) return;
  if (loggingIn && response.status() === 401) return;
  problems.push(`HTTP ${response.status()} for ${response.request().method()} ${response.url()}`);
});

function noProblems() {
  if (problems.length) throw new Error(problems.join("; "));
}

async function shot(name) {
  // No toast over the page; let pending frames paint (the lists draw on requestAnimationFrame).
  await page.evaluate(() => {
    document.getElementById("toast").hidden = true;
    return new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
  });
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

/** Goes to a page with the keyboard (g + key) and waits until it has drawn its data. */
async function goByKey(key, testid) {
  await page.locator("body").press("Escape");
  await page.keyboard.press("g");
  await page.keyboard.press(key);
  await page.waitForSelector(`[data-testid="${testid}"][data-ready="1"]`);
}

async function openHash(hash, testid) {
  await page.evaluate((h) => (location.hash = h), hash);
  await page.waitForSelector(`[data-testid="${testid}"][data-ready="1"]`);
}

const row = (id) => `[data-testid="task-row"][data-task-id="${id}"]`;

try {
  // Some work in the queue before the first look, so the pages have something to show.
  for (const [priority, worker] of [[7, "factory-1"], [5, null], [2, "factory-2"]]) {
    await submit({ priority, worker_name: worker, parameters: { repo: `repo-${priority}` } });
  }
  // And one that ran to completion, for the latency chart.
  const done = await submit({ worker_name: "factory-1", task_type: "browser-done", parameters: { repo: "done" } });
  await rest("POST", `/api/tasks/${done.task_id}/claim`, { worker_name: "factory-1", container_name: "c1" });
  await rest("POST", `/api/tasks/${done.task_id}/complete`, { worker_name: "factory-1", container_name: "c1", output: '{"findings":0}' });

  await check("the dashboard loads (token form, then the app) with no console errors or failed requests", async () => {
    await page.goto(`${BASE}/`);
    if (TOKEN) {
      await page.waitForSelector('[data-testid="token-form"]', { state: "visible" });
      await page.fill('[data-testid="token-input"]', TOKEN);
      await page.click('[data-testid="token-submit"]');
      await page.waitForSelector('[data-testid="token-form"]', { state: "hidden" });
    }
    await page.waitForSelector('[data-testid="page-tasks"][data-ready="1"]');
    loggingIn = false;
    await page.waitForSelector('[data-testid="live-status"][data-state="open"]');
    if (!TOKEN && (await page.isVisible('[data-testid="token-form"]'))) throw new Error("the token form showed with no token configured");
    noProblems();
  });

  let live;
  await check("a task submitted over REST appears in the live list within 1 s", async () => {
    const submitted = await submit({ worker_name: "factory-1", priority: 3, parameters: { repo: "live", depth: 2 } });
    const t0 = Date.now();
    await page.waitForSelector(row(submitted.task_id), { timeout: 1000 });
    live = submitted.task_id;
    return `${Date.now() - t0} ms after the POST answered`;
  });
  await shot("tasks");

  await check("j/k select rows and Enter opens the selected task", async () => {
    await page.locator("body").press("Escape");
    await page.keyboard.press("j");
    const first = await page.getAttribute('[data-testid="task-row"].sel', "data-task-id");
    await page.keyboard.press("j");
    await page.keyboard.press("k");
    const again = await page.getAttribute('[data-testid="task-row"].sel', "data-task-id");
    if (first !== again) throw new Error(`j then k moved from ${first} to ${again}`);
    await page.keyboard.press("Enter");
    await page.waitForSelector(`[data-testid="page-task"][data-ready="1"]`);
    const shown = await page.textContent('[data-testid="task-id"]');
    if (shown !== first) throw new Error(`Enter opened ${shown}, not ${first}`);
  });

  await check("a task's page shows why it is pending, then its timeline: the submission, the claim and the failure as they happen", async () => {
    await openHash(`#/tasks/${live}`, "page-task");
    await page.waitForSelector('[data-testid="timeline-entry"][data-kind="task.submitted"]');
    const before = await page.locator('[data-testid="timeline-entry"]').count();
    if (before !== 1) throw new Error(`${before} entries before the claim, not 1`);
    // Pending behind higher-priority work for factory-1: the page says so, from /why.
    await page.waitForSelector('[data-testid="why-pending"] li[data-reason="ahead"]');
    await rest("POST", `/api/tasks/${live}/claim`, { worker_name: "factory-1", container_name: "c1" });
    await rest("POST", `/api/tasks/${live}/fail`, { worker_name: "factory-1", container_name: "c1", error: "exit status 2: repo not found", retry: false });
    await page.waitForSelector('[data-testid="timeline-entry"][data-kind="task.failed"]');
    await page.waitForSelector('[data-testid="task-status"]:text-is("failed")');
    await page.waitForSelector('[data-testid="task-error"]');
    if (await page.locator('[data-testid="why-pending"] li').count()) throw new Error("a failed task still shows why it is pending");
    const kinds = await page.$$eval('[data-testid="timeline-entry"]', (els) => els.map((e) => e.dataset.kind));
    return kinds.join(", ");
  });
  await shot("task");

  let retried;
  await check("retry of a dead letter from its page makes a new task that names it (retry_of)", async () => {
    await page.click('[data-testid="retry-button"]');
    const link = await page.waitForSelector('[data-testid="retry-link"]');
    retried = await link.getAttribute("data-task-id");
    // Read the retry back once the projection has it (its submission's sequence).
    const sequence = await link.getAttribute("data-sequence");
    const task = await rest("GET", `/api/tasks/${retried}?min_seq=${sequence}`);
    if (task.retry_of !== live) throw new Error(`the new task ${retried} has retry_of ${task.retry_of}, not ${live}`);
    // The dead task's page now links its retry.
    await page.waitForSelector(`[data-testid="retried-as"][href="#/tasks/${retried}"]`);
    return `…${live.slice(-8)} retried as …${retried.slice(-8)}`;
  });

  await check("cancel from a task's page ends the task cancelled", async () => {
    await page.click('[data-testid="retry-link"]');
    await page.waitForSelector(`[data-testid="page-task"][data-ready="1"] [data-testid="retry-of"]`);
    await page.click('[data-testid="cancel-button"]');
    await page.fill('[data-testid="cancel-reason"]', "browser test");
    await page.click('[data-testid="confirm-cancel"]');
    await page.waitForSelector('[data-testid="task-status"]:text-is("cancelled")');
    const task = await rest("GET", `/api/tasks/${retried}`);
    if (task.status !== "cancelled") throw new Error(`REST says ${task.status}`);
  });

  await check("the status filter narrows the live list", async () => {
    await goByKey("t", "page-tasks");
    await page.keyboard.press("/");
    const focused = await page.evaluate(() => document.activeElement?.id);
    if (focused !== "filter-status") throw new Error(`/ focused ${focused}`);
    await page.selectOption("#filter-status", "failed");
    await page.waitForSelector(row(live));
    await page.waitForFunction(() => [...document.querySelectorAll('[data-testid="task-row"]')].every((r) => r.dataset.status === "failed"));
    await page.selectOption("#filter-status", "");
    await page.waitForSelector(row(retried));
  });

  await check("the queues page shows lanes and the throughput and latency charts", async () => {
    await goByKey("q", "page-queues");
    const lanes = await page.locator('[data-testid="lanes"] tbody tr').count();
    await page.waitForSelector('[data-testid="chart-throughput"] rect.bar');
    await page.waitForSelector('[data-testid="chart-latency"]');
    if (lanes < 1) throw new Error("no lanes");
    return `${lanes} lanes`;
  });
  await shot("queues");

  await check("scale from the containers page changes the instance count", async () => {
    await goByKey("c", "page-containers");
    const before = (await rest("GET", "/api/containers/status")).instances.length;
    const target = before + 1;
    await page.fill('[data-testid="scale-input"]', String(target));
    await page.click('[data-testid="scale-button"]');
    await page.waitForFunction((n) => document.querySelectorAll('[data-testid="instance-row"]').length === n, target);
    const after = await rest("GET", "/api/containers/status");
    if (after.desired !== target || after.instances.length !== target) throw new Error(`REST says desired ${after.desired}, ${after.instances.length} instances; wanted ${target}`);
    await page.waitForFunction((n) => [...document.querySelectorAll('[data-testid="instance-row"]')].filter((r) => r.dataset.state === "running").length === n, target, { timeout: 15_000 });
    return `${before} → ${target}`;
  });
  await shot("containers");

  await check("−1 on the containers page scales back down", async () => {
    const before = (await rest("GET", "/api/containers/status")).desired;
    await page.click('[data-testid="scale-down"]');
    await page.waitForFunction((n) => document.querySelectorAll('[data-testid="instance-row"]').length === n, before - 1);
    const after = await rest("GET", "/api/containers/status");
    if (after.desired !== before - 1 || after.instances.length !== before - 1) throw new Error(`REST says desired ${after.desired}, ${after.instances.length} instances; wanted ${before - 1}`);
    return `${before} → ${before - 1}`;
  });

  // A plan that waits for approval, and an AI call and a routing decision to list.
  // Scripting the fake provider is a nicety (unscripted, it answers "ok"), so a refusal only notes it.
  if (FAKE) {
    const scripted = await fetch(`${FAKE.replace(/\/v1$/, "")}/_script`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify([{ text: "All checks pass." }]) }).catch((e) => ({ ok: false, status: e.message }));
    if (!scripted.ok) console.log(`# the fake OpenAI server did not take a script (${scripted.status}); it answers "ok"`);
  }
  await rest("POST", "/api/ai/ask", { worker_name: "factory-1", prompt: "Summarise the failed audit." });
  await rest("POST", "/api/ai/route", { worker_name: "factory-1", prompt: "Refactor the scheduler and explain why, step by step, with tests." });
  const plan = (goal) =>
    rest("POST", "/api/ai/plans", {
      worker_name: "factory-1",
      goal,
      steps: [{ title: "Inventory the keys" }, { title: "Rotate the keys", description: "replaces every deploy key", requires_approval: true }, { title: "Tell the owners" }],
    });
  const approveMe = await plan("rotate the deploy keys");
  await plan("rotate the staging keys");
  const approvalId = approveMe.approvals.find((a) => a.status === "pending")?.approval_id;
  if (!approvalId) throw new Failure(`the plan ${approveMe.plan_id} asked for no approval: ${JSON.stringify(approveMe)}`);

  await check("approve from the AI page settles a waiting approval", async () => {
    await goByKey("a", "page-ai");
    await page.waitForSelector(`[data-testid="approval-row"][data-approval-id="${approvalId}"]`);
    await page.waitForSelector('[data-testid="model-call-row"]');
    await shot("ai");
    await page.click(`[data-testid="approve-button"][data-approval-id="${approvalId}"]`);
    await page.waitForSelector(`[data-testid="approvals"] [data-testid="approval-row"][data-approval-id="${approvalId}"]`, { state: "detached" });
    const row = await rest("GET", `/api/tables/ai_tasks_hitl/${approvalId}`);
    if (row.status !== "approved") throw new Error(`REST says ${row.status}`);
    const after = await rest("GET", `/api/ai/plans/${approveMe.plan_id}`);
    return `plan ${after.status}`;
  });

  await check("a plan's page shows its steps and approvals", async () => {
    await openHash(`#/ai/plans/${approveMe.plan_id}`, "page-plan");
    await page.waitForSelector(`[data-testid="plan-approvals"] [data-approval-id="${approvalId}"]`);
  });
  await shot("plan");

  await check("the system page shows NATS, every stream and the projection's lag", async () => {
    await goByKey("s", "page-system");
    await page.waitForSelector('[data-testid="nats-connected"]:text-is("yes")');
    const streams = await page.locator('[data-testid="stream-row"]').count();
    if (streams < 3) throw new Error(`${streams} streams`);
    return `${streams} streams`;
  });
  await shot("system");

  await check("the theme toggle switches to dark and is kept across a reload (the token too)", async () => {
    await page.click('[data-testid="theme-toggle"]');
    await page.reload();
    await page.waitForSelector('[data-testid="page-system"][data-ready="1"]');
    const theme = await page.evaluate(() => document.documentElement.dataset.theme);
    if (theme !== "dark") throw new Error(`data-theme is ${theme}`);
    if (await page.isVisible('[data-testid="token-form"]')) throw new Error("the token was asked for again");
  });
  await shot("system-dark");
  for (const [hash, testid, name] of [
    ["#/tasks", "page-tasks", "tasks-dark"],
    [`#/tasks/${live}`, "page-task", "task-dark"],
    ["#/queues", "page-queues", "queues-dark"],
    ["#/containers", "page-containers", "containers-dark"],
    ["#/ai", "page-ai", "ai-dark"],
  ]) {
    await openHash(hash, testid);
    await shot(name);
  }
  ok(`screenshots in ${SHOTS} (light and dark)`);

  await check("no console errors or warnings and no failed requests during the run", async () => noProblems());
  console.log(`# ${((Date.now() - started) / 1000).toFixed(1)} s`);
  await browser.close();
} catch (error) {
  const message = error instanceof Failure ? error.message : `${error.stack || error}`;
  console.log(`not ok - ${message}`);
  if (problems.length) console.log(`# browser problems: ${problems.join("; ")}`);
  try {
    await page.screenshot({ path: join(SHOTS, "failure.png"), fullPage: true });
    console.log(`# screenshot of the failure: ${join(SHOTS, "failure.png")}`);
  } catch {
    // The browser may be gone.
  }
  await browser.close();
  process.exit(1);
}
