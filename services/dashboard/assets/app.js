// The dashboard's shell: hash routing, the token form, the theme, and the keyboard.
//
// Pages are modules with `mount(root, ctx)`, which draws into `root` and answers a cleanup
// function (close feeds, stop timers) that runs when the operator leaves the page. Routes:
// #/tasks, #/tasks/<id>, #/queues, #/containers, #/ai, #/ai/plans/<id>, #/system.

import { api, onUnauthorized, setToken, token, ApiError } from "./api.js";
import { h, fill, notice } from "./dom.js";
import * as tasks from "./tasks.js";
import * as task from "./task.js";
import * as queues from "./queues.js";
import * as containers from "./containers.js";
import * as ai from "./ai.js";
import * as system from "./system.js";

const root = document.getElementById("app");
const live = document.getElementById("live");
const toastEl = document.getElementById("toast");
const tokenLayer = document.getElementById("token-layer");
const tokenForm = document.getElementById("token-form");
const tokenInput = document.getElementById("token-input");
const tokenError = document.getElementById("token-error");
const helpLayer = document.getElementById("help-layer");

let cleanup = null;
let authorized = false;

/** The route of the current hash: the page module, its nav name, path parameters, query. */
function route() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(query);
  if (parts[0] === "tasks" && parts[1]) return { page: task, nav: "tasks", id: parts[1], params };
  if (parts[0] === "ai" && parts[1] === "plans" && parts[2]) return { page: ai, nav: "ai", id: parts[2], params };
  const pages = { tasks, queues, containers, ai, system };
  const name = pages[parts[0]] ? parts[0] : "tasks";
  return { page: pages[name], nav: name, id: null, params };
}

/** Shows a short message at the bottom of the screen. */
export function toast(text, kind = "info") {
  toastEl.textContent = text;
  toastEl.className = `toast t-${kind}`;
  toastEl.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (toastEl.hidden = true), kind === "error" ? 8000 : 3500);
}

/** What pages get: the route, the live indicator, the toast, and a way to go elsewhere. */
const ctx = {
  setLive(state) {
    live.dataset.state = state;
    live.textContent = { open: "live", connecting: "connecting…", closed: "reconnecting…", idle: "idle", polling: "polling" }[state] || state;
    live.title = { open: "Live: following the feed", polling: "This page reads again every few seconds", closed: "The feed dropped; reconnecting" }[state] || "";
  },
  toast,
  go(hash) {
    location.hash = hash;
  },
  /** Rewrites the hash's query (filters) without a new history entry or a remount. */
  setQuery(params) {
    const base = location.hash.split("?")[0] || "#/tasks";
    const q = params.toString();
    history.replaceState(null, "", q ? `${base}?${q}` : base);
  },
  /** A call's failure, as a line on the page (401s are the token form's business). */
  failure(error, what) {
    if (error instanceof ApiError && error.status === 401) return notice("waiting for a token…", "info");
    return notice(`${what}: ${error.message}`, "error", "load-error");
  },
};

function render() {
  if (cleanup) {
    try {
      cleanup();
    } catch {
      // A page that failed to clean up must not stop the next one.
    }
    cleanup = null;
  }
  ctx.setLive("idle");
  toastEl.hidden = true;
  if (!authorized) return;
  const r = route();
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === r.nav);
  const page = h("div", { class: "page" });
  fill(root, page);
  document.title = `vibehq · ${r.nav}`;
  cleanup = r.page.mount(page, { ...ctx, id: r.id, params: r.params }) || null;
}

// ---- The token --------------------------------------------------------------------------

function askForToken(message) {
  authorized = false;
  tokenError.hidden = !message;
  tokenError.textContent = message || "";
  tokenLayer.hidden = false;
  fill(root, notice("This vibehq needs an API token.", "info"));
  tokenInput.focus();
}

onUnauthorized(() => {
  if (!tokenLayer.hidden) return;
  const had = token();
  authorized = false;
  setToken("");
  render();
  askForToken(had ? "The token was refused (401)." : "");
});

/** One cheap call tells whether the token (or none) is good; only then do pages load. */
async function probe() {
  try {
    await api("/api/tables");
    return true;
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return false;
    throw error;
  }
}

tokenForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const value = tokenInput.value.trim();
  if (!value) return;
  setToken(value);
  tokenLayer.hidden = true;
  let ok = false;
  try {
    ok = await probe();
  } catch (error) {
    askForToken(`vibehq did not answer: ${error.message}`);
    return;
  }
  if (!ok) {
    setToken("");
    askForToken("That token was refused (401). Check it and try again.");
    return;
  }
  tokenInput.value = "";
  authorized = true;
  render();
});

// ---- The theme --------------------------------------------------------------------------

// theme.js set the theme before the first paint; the toggle makes it the operator's choice.
function toggleTheme() {
  const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
  document.documentElement.dataset.theme = next;
  try {
    localStorage.setItem("vibehq.theme", next);
  } catch {
    // Storage off: the choice lasts until reload.
  }
  document.getElementById("theme-toggle").title = `Theme: ${next} (click or T to switch)`;
}

document.getElementById("theme-toggle").addEventListener("click", toggleTheme);

// ---- The keyboard -----------------------------------------------------------------------

function toggleHelp(show = helpLayer.hidden) {
  helpLayer.hidden = !show;
}
document.getElementById("help-toggle").addEventListener("click", () => toggleHelp());
helpLayer.addEventListener("click", (e) => e.target === helpLayer && toggleHelp(false));

/** The rows j/k move through: those of the page's first navigable table. */
function navRows() {
  const table = root.querySelector("table[data-nav]");
  return table ? [...table.querySelectorAll("tbody tr[data-href]")] : [];
}

function select(delta) {
  const rows = navRows();
  if (!rows.length) return;
  let i = rows.findIndex((r) => r.classList.contains("sel"));
  if (i >= 0) rows[i].classList.remove("sel");
  i = i < 0 ? (delta > 0 ? 0 : rows.length - 1) : Math.min(rows.length - 1, Math.max(0, i + delta));
  rows[i].classList.add("sel");
  rows[i].scrollIntoView({ block: "nearest" });
}

let pendingG = 0;
document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const field = event.target.closest?.("input, select, textarea, [contenteditable]");
  if (event.key === "Escape") {
    if (field) field.blur();
    toggleHelp(false);
    return;
  }
  if (field || !tokenLayer.hidden) return;
  const key = event.key;
  if (pendingG && Date.now() - pendingG < 1200) {
    pendingG = 0;
    const to = { t: "#/tasks", q: "#/queues", c: "#/containers", a: "#/ai", s: "#/system" }[key];
    if (to) {
      event.preventDefault();
      location.hash = to;
    }
    return;
  }
  switch (key) {
    case "g":
      pendingG = Date.now();
      break;
    case "/": {
      const filter = root.querySelector("[data-filter]");
      if (filter) {
        event.preventDefault();
        filter.focus();
        filter.select?.();
      }
      break;
    }
    case "j":
      select(1);
      break;
    case "k":
      select(-1);
      break;
    case "Enter": {
      const row = root.querySelector("table[data-nav] tbody tr.sel[data-href]");
      if (row && !event.target.closest("a, button")) {
        event.preventDefault();
        location.hash = row.dataset.href;
      }
      break;
    }
    case "r":
      render();
      break;
    case "u":
      if (route().id) location.hash = route().nav === "ai" ? "#/ai" : "#/tasks";
      break;
    case "T":
      toggleTheme();
      break;
    case "?":
      toggleHelp();
      break;
    default:
  }
});

// A click on a row with data-href opens it (links and buttons inside keep their own meaning).
root.addEventListener("click", (event) => {
  const row = event.target.closest("tr[data-href]");
  if (!row || event.target.closest("a, button, input, select, label")) return;
  location.hash = row.dataset.href;
});

// ---- Start ------------------------------------------------------------------------------

window.addEventListener("hashchange", render);

async function start() {
  try {
    if (await probe()) {
      authorized = true;
      render();
    } else {
      askForToken("");
    }
  } catch (error) {
    fill(root, notice(`vibehq did not answer: ${error.message}. Reload to try again.`, "error", "load-error"));
  }
}

start();
