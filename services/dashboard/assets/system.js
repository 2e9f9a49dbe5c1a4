// #/system: is vibehq able to do its job? The NATS connection, each stream's size and how far
// the projection lags behind it (GET /health, which answers 503 with the same report when
// degraded), the messages the projector could not apply (projector_rejected), and the tables
// the API serves.

import { api, poll, qs } from "./api.js";
import { h, fill, badge, table, when, num, section, facts } from "./dom.js";

const REFRESH_MS = 3000;

export function mount(root, ctx) {
  root.dataset.testid = "page-system";
  let polling = null;
  const head = h("div", { class: "page-head" }, h("h1", { text: "System" }));
  const degradedBox = h("div");
  const natsBox = h("div");
  const streamsBox = h("div", { class: "scroll" });
  const rejectedBox = h("div", { class: "scroll" });
  const tablesBox = h("div", { class: "scroll" });
  fill(root, head, degradedBox, h("div", { class: "cols" }, section("NATS", natsBox), section("Tables", tablesBox)), section("Streams and projection", streamsBox), section("Rejected messages", rejectedBox));

  async function load(stopped) {
    try {
      const [health, rejected, tables] = await Promise.all([
        api("/health", { accept: [503] }),
        api(`/api/tables/projector_rejected${qs({ order: "desc", limit: 50 })}`),
        api("/api/tables"),
      ]);
      if (stopped()) return;
      fill(head, h("h1", { text: "System" }), badge(health.status, "health-status"));
      fill(degradedBox, health.degraded.length ? h("ul", { class: "notice n-error", "data-testid": "degraded" }, health.degraded.map((d) => h("li", { text: d }))) : null);
      fill(
        natsBox,
        facts([
          ["connected", h("span", { class: health.nats.connected ? "yes" : "no", "data-testid": "nats-connected", text: health.nats.connected ? "yes" : "no" })],
          ["server", health.nats.server_version || "—"],
          ["url", h("span", { class: "mono", text: health.nats.url })],
        ]),
      );
      fill(
        streamsBox,
        table(
          [
            { label: "Stream", class: "mono", cell: (st) => st.name },
            { label: "Subjects", class: "mono small", cell: (st) => st.subjects.join(" ") },
            { label: "Messages", class: "num", cell: (st) => num(st.messages) },
            { label: "Last seq", class: "num", cell: (st) => num(st.last_sequence) },
            { label: "Projected", class: "num", cell: (st) => num(st.projected_sequence) },
            { label: "Lag", class: "num", cell: (st) => h("span", { class: st.lag > 0 ? "warn-text" : "yes", "data-testid": "stream-lag", text: st.lag === null || st.lag === undefined ? "—" : num(st.lag) }) },
            { label: "Error", class: "err-text", cell: (st) => st.error ?? "" },
          ],
          health.streams,
          { testid: "streams", rowAttrs: (st) => ({ "data-testid": "stream-row", "data-stream": st.name }) },
        ),
      );
      fill(
        rejectedBox,
        table(
          [
            { label: "At", cell: (r) => when(r.published_at) },
            { label: "Stream", class: "mono", cell: (r) => r.stream_name },
            { label: "Seq", class: "num", cell: (r) => num(r.stream_sequence) },
            { label: "Subject", class: "mono", cell: (r) => r.subject },
            { label: "Reason", class: "err-text", cell: (r) => r.reason },
          ],
          rejected.items,
          { testid: "rejected", empty: "none: the projector applied every message" },
        ),
      );
      fill(
        tablesBox,
        table(
          [
            { label: "Table", class: "mono", cell: (t) => t.name },
            { label: "Key", class: "mono", cell: (t) => t.key },
            { label: "Filters", class: "mono small", cell: (t) => [t.status_column, ...t.filters].filter(Boolean).join(" ") },
          ],
          tables,
          { testid: "tables" },
        ),
      );
      root.dataset.ready = "1";
    } catch (error) {
      if (!stopped()) fill(degradedBox, ctx.failure(error, "cannot read the health report"));
    }
  }

  ctx.setLive("polling");
  polling = poll(REFRESH_MS, load);
  return polling.stop;
}
