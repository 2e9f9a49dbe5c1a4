// Building the DOM without innerHTML: every piece of data reaches the page as text.
//
// The page runs under a strict Content-Security-Policy (no inline scripts, no inline styles),
// so nothing here writes a `style` attribute or an event-handler attribute; listeners are
// added with addEventListener and sizes are set through the CSSOM (`el.style.width`).

const SVG_NS = "http://www.w3.org/2000/svg";

/** Sets `attrs` on `el`: `class`, `text`, `dataset`, `on` (listeners), the rest as attributes. */
function assign(el, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    else if (key === "text") el.textContent = String(value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "on") for (const [event, fn] of Object.entries(value)) el.addEventListener(event, fn);
    else if (key === "style") throw new Error("inline styles break the CSP; use a class");
    else if (key.startsWith("on")) throw new Error("inline handlers break the CSP; use `on`");
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** An HTML element: `h("td", {class: "num"}, "3")`. Strings become text nodes. */
export function h(tag, attrs, ...children) {
  return append(assign(document.createElement(tag), attrs), children);
}

/** An SVG element, the same way. */
export function s(tag, attrs, ...children) {
  return append(assign(document.createElementNS(SVG_NS, tag), attrs), children);
}

/** Replaces everything inside `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** A status word as a coloured badge (the class picks the colour). */
export function badge(word, testid) {
  const text = word ?? "—";
  return h("span", { class: `badge b-${String(text).replace(/[^a-z_]/gi, "")}`, "data-testid": testid, text });
}

/**
 * An id, short: its last 8 characters. Ids are UUIDv7s, whose leading digits are a clock and
 * so the same for everything made in the same minute; the tail is what tells them apart.
 */
export function tail(id) {
  return id && id.length > 13 ? `…${id.slice(-8)}` : id || "—";
}

/** An id as a short span, the whole id in the tooltip. */
export function shortId(id) {
  if (!id) return h("span", { class: "muted", text: "—" });
  return h("span", { class: "mono", title: id, text: tail(id) });
}

/** A link to `href` showing `id` short (the whole id in the tooltip). */
export function idLink(href, id, attrs = {}) {
  return h("a", { href, class: "mono", title: id, text: tail(id), ...attrs });
}

/** Seconds (or an RFC 3339 string) to a Date. */
export function toDate(t) {
  if (t === null || t === undefined || t === "") return null;
  if (typeof t === "number") return new Date(t * 1000);
  const d = new Date(t);
  return Number.isNaN(d.getTime()) ? null : d;
}

const pad = (n) => String(n).padStart(2, "0");

/** A compact local time: `14:03:22` today, `11-26 14:03` otherwise. */
export function clock(t) {
  const d = toDate(t);
  if (!d) return "—";
  const now = new Date();
  const hms = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  if (d.toDateString() === now.toDateString()) return hms;
  return `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hms.slice(0, 5)}`;
}

/** A duration in seconds, short: `42s`, `3m 10s`, `2h 5m`, `3d 4h`. */
export function duration(secs) {
  if (secs === null || secs === undefined || Number.isNaN(secs)) return "—";
  const v = Math.max(0, Math.round(secs));
  if (v < 60) return `${v}s`;
  if (v < 3600) return `${Math.floor(v / 60)}m ${v % 60}s`;
  if (v < 86400) return `${Math.floor(v / 3600)}h ${Math.floor((v % 3600) / 60)}m`;
  return `${Math.floor(v / 86400)}d ${Math.floor((v % 86400) / 3600)}h`;
}

/** How long ago `t` was, short. */
export function ago(t) {
  const d = toDate(t);
  if (!d) return "—";
  return duration((Date.now() - d.getTime()) / 1000) + " ago";
}

/** A time cell: the clock time, the full timestamp in the tooltip. */
export function when(t) {
  const d = toDate(t);
  return h("time", { title: d ? d.toISOString() : undefined, datetime: d ? d.toISOString() : undefined, text: clock(t) });
}

export function num(n, digits = 0) {
  if (n === null || n === undefined || n === "") return "—";
  return Number(n).toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

export function ms(n) {
  if (n === null || n === undefined) return "—";
  return n >= 1000 ? `${(n / 1000).toFixed(2)} s` : `${Math.round(n)} ms`;
}

export function usd(n) {
  if (n === null || n === undefined) return "—";
  return n < 0.01 && n > 0 ? `$${n.toFixed(5)}` : `$${n.toFixed(4)}`;
}

/** JSON, pretty, for a <pre>; strings that hold JSON are parsed first. */
export function pretty(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "string") {
    try {
      return JSON.stringify(JSON.parse(value), null, 2);
    } catch {
      return value;
    }
  }
  return JSON.stringify(value, null, 2);
}

/**
 * A table: `columns` are `{label, cell(row) → Node|string, class}`; `rowAttrs(row)` gives each
 * <tr>'s attributes (e.g. `data-href` makes it a row j/k and Enter can open).
 */
export function table(columns, rows, { rowAttrs, empty = "nothing yet", testid, nav = false } = {}) {
  const head = h("thead", null, h("tr", null, columns.map((c) => h("th", { class: c.class, title: c.title, text: c.label }))));
  const body = h("tbody");
  fillRows(body, columns, rows, rowAttrs, empty);
  return h("table", { class: "grid", "data-testid": testid, "data-nav": nav ? "" : undefined }, head, body);
}

/** Refills a table body made by `table`. */
export function fillRows(body, columns, rows, rowAttrs, empty = "nothing yet") {
  body.replaceChildren();
  if (!rows.length) {
    body.append(h("tr", { class: "empty" }, h("td", { colspan: columns.length, text: empty })));
    return;
  }
  for (const row of rows) {
    const tr = h("tr", rowAttrs ? rowAttrs(row) : null);
    for (const c of columns) tr.append(h("td", { class: c.class }, c.cell(row)));
    body.append(tr);
  }
}

/**
 * Brings a table body up to date with `rows` in place, for tables that live updates redraw
 * many times a second: each row keeps its <tr> (found by `key(row)`), and a cell is replaced
 * only when what it shows changed. So a button or link under the pointer stays the same
 * element and a click on it is never lost to a redraw, and the selection (class `sel`) stays.
 * `sig(row)`, if given, skips rows whose signature is unchanged without drawing them at all.
 */
export function patchRows(body, columns, rows, { key, rowAttrs, empty = "nothing yet", sig } = {}) {
  const seen = new Set();
  const placeholder = body.querySelector("tr.empty");
  if (rows.length && placeholder) placeholder.remove();
  const existing = new Map([...body.querySelectorAll("tr[data-key]")].map((tr) => [tr.dataset.key, tr]));
  rows.forEach((row, index) => {
    const id = String(key(row));
    seen.add(id);
    let tr = existing.get(id);
    if (!tr) {
      tr = h("tr");
      tr.dataset.key = id;
      for (const c of columns) tr.append(h("td", { class: c.class }));
    }
    const signature = sig ? String(sig(row)) : null;
    if (signature === null || tr.dataset.sig !== signature) {
      if (signature !== null) tr.dataset.sig = signature;
      for (const [name, value] of Object.entries(rowAttrs ? rowAttrs(row) : {})) {
        if (name === "class") continue;
        if (value === undefined || value === null || value === false) tr.removeAttribute(name);
        else tr.setAttribute(name, String(value));
      }
      columns.forEach((c, i) => {
        const fresh = h("td", { class: c.class }, c.cell(row));
        const td = tr.children[i];
        if (td.innerHTML !== fresh.innerHTML) tr.replaceChild(fresh, td);
      });
    }
    if (body.children[index] !== tr) body.insertBefore(tr, body.children[index] || null);
  });
  for (const [id, tr] of existing) if (!seen.has(id)) tr.remove();
  if (!rows.length) {
    const text = empty;
    if (!placeholder) body.append(h("tr", { class: "empty" }, h("td", { colspan: columns.length, text })));
    else placeholder.firstChild.textContent = text;
  }
}

/** A titled section of a page. */
export function section(title, ...body) {
  return h("section", { class: "panel" }, h("h2", null, title), ...body);
}

/** A line saying what went wrong, or what is not there. */
export function notice(text, kind = "info", testid) {
  return h("p", { class: `notice n-${kind}`, "data-testid": testid, text });
}

/** A definition list from [label, value] pairs. */
export function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.map(([k, v]) => [h("dt", { text: k }), h("dd", null, v ?? "—")]));
}
