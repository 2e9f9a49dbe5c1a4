// Talking to vibehq: REST with the operator's bearer token, and live feeds over WebSockets.
//
// The token lives in sessionStorage (gone with the tab). A 401 from any call asks the app to
// show the token form (`onUnauthorized`); with no tokens configured (the loopback default) no
// call ever gets one and the form never shows.

const TOKEN_KEY = "vibehq.token";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** A call that did not answer 2xx: `status`, and the API's error body (`{error: {code, message, field}}`). */
export class ApiError extends Error {
  constructor(status, body) {
    const detail = body && typeof body === "object" && body.error ? body.error : null;
    super(detail?.message || (typeof body === "string" && body) || `HTTP ${status}`);
    this.status = status;
    this.code = detail?.code;
    this.field = detail?.field;
    this.body = body;
  }
}

let unauthorized = () => {};

/** What to do when a call is refused for want of a (valid) token. */
export function onUnauthorized(fn) {
  unauthorized = fn;
}

/**
 * Calls the API and answers its JSON (null for an empty body). Any status outside 2xx throws
 * an ApiError, except those listed in `accept` (e.g. /health's 503, which still carries the
 * report): those answer their body too.
 */
export async function api(path, { method = "GET", body, accept = [] } = {}) {
  const headers = { accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  const t = token();
  if (t) headers.authorization = `Bearer ${t}`;
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (response.status === 401) {
    unauthorized();
    throw new ApiError(401, data);
  }
  if (!response.ok && !accept.includes(response.status)) throw new ApiError(response.status, data);
  return data;
}

/** A query string from an object, leaving out empty values. */
export function qs(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  const text = q.toString();
  return text ? `?${text}` : "";
}

/**
 * Runs `load` now, and again `ms` after each run ends, until `stop()`: for a page whose data
 * has no live feed. `load(stopped)` checks `stopped()` after its awaits, so a page left
 * meanwhile draws nothing. `now()` loads at once (after an action on the page).
 */
export function poll(ms, load) {
  let stopped = false;
  let timer = null;
  const now = async () => {
    clearTimeout(timer);
    await load(() => stopped);
    if (!stopped) timer = setTimeout(now, ms);
  };
  now();
  return {
    now,
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}

/**
 * A live feed over a WebSocket that reconnects on its own. `path` is called on every connect
 * (so it can resume, e.g. `after_seq`); `onMessage` gets each JSON message; `onState` gets
 * `connecting`, `open` or `closed`. Answers `{close()}`.
 */
export function feed(path, { onMessage, onState = () => {}, onOpen = () => {} }) {
  let socket = null;
  let stopped = false;
  let delay = 500;
  let timer = null;

  function connect() {
    if (stopped) return;
    const url = new URL(path(), location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    const t = token();
    if (t) url.searchParams.set("access_token", t);
    onState("connecting");
    socket = new WebSocket(url);
    socket.addEventListener("open", () => {
      delay = 500;
      onState("open");
      onOpen();
    });
    socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      onMessage(message);
    });
    socket.addEventListener("close", () => {
      socket = null;
      if (stopped) return;
      onState("closed");
      timer = setTimeout(connect, delay);
      delay = Math.min(delay * 2, 10000);
    });
  }

  connect();
  return {
    close() {
      stopped = true;
      clearTimeout(timer);
      if (!socket) return;
      // Closing a socket still connecting makes the browser warn; close it once it opens.
      if (socket.readyState === WebSocket.CONNECTING) {
        const pending = socket;
        pending.addEventListener("open", () => pending.close(1000, "page left"));
      } else if (socket.readyState === WebSocket.OPEN) socket.close(1000, "page left");
    },
  };
}
