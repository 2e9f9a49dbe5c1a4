//! What this process measures as it works, for `/metrics` (Prometheus text format, from the
//! maintained [`prometheus_client`] crate).
//!
//! Two kinds of figures reach `/metrics`:
//! - **This process's**, recorded here as things happen: HTTP requests, queue operations,
//!   lease expiries it found, events its projector applied, requests its proxy forwarded, model
//!   calls its gateway made. Each `vibehq` process counts its own (sum them across processes);
//!   they start from zero with the process, as Prometheus expects of counters.
//! - **The fleet's**, read from the projection at each scrape by `vibehq_api::metrics`: tasks
//!   by status, pending depth and age, instances, probe failures, refusals, AI calls, tokens and
//!   cost. Every process that projects the same streams reports the same values.
//!
//! Every family of the first kind is a field of [`Metrics`], the one place its name, help and
//! labels are written; crates record through [`metrics()`], and [`Metrics::register`] hands
//! them to a scrape's registry.

use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

pub use prometheus_client;

/// A histogram family with the buckets its constructor gives.
pub type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// An HTTP request: the route's template (`/api/tasks/{task_id}`, never the raw path, so the
/// label set stays small), the method and the answer's status.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

/// A queue operation (`submitTask`, `claimTask`, …, REST and RPC alike) and how it ended:
/// the status class of its answer (`2xx`, `4xx`, `5xx`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OpLabels {
    pub op: String,
    pub outcome: String,
}

/// One of the event streams (`VIBEHQ_TASKS`, …).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StreamLabels {
    pub stream: String,
}

/// A request through the load balancer's proxy: the worker whose instances serve it and the
/// status answered (502/503 when no instance could).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ProxyLabels {
    pub worker_name: String,
    pub status: u16,
}

/// One attempt of a model call: where it went and how it ended (`ok`, `timeout`, …).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ModelLabels {
    pub provider: String,
    pub model: String,
    pub outcome: String,
}

/// Every family this process records. Cheap to clone: clones share their values.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub http_requests: Histograms<HttpLabels>,
    pub queue_operations: Histograms<OpLabels>,
    pub lease_expiries: Counter,
    pub projector_applied: Family<StreamLabels, Counter>,
    pub proxy_requests: Histograms<ProxyLabels>,
    pub model_calls: Histograms<ModelLabels>,
}

/// 0.5 ms to ~16 s: local work (a queue append, a proxied request) through a slow model call.
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.000_5, 2.0, 16))
}

/// 50 ms to ~200 s: model calls take longer than local work.
fn model_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 13))
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    http_requests: Family::new_with_constructor(seconds),
    queue_operations: Family::new_with_constructor(seconds),
    lease_expiries: Counter::default(),
    projector_applied: Family::default(),
    proxy_requests: Family::new_with_constructor(seconds),
    model_calls: Family::new_with_constructor(model_seconds),
});

/// This process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    /// Adds every family to `registry` (names get the registry's `vibehq` prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "http_request_duration",
            "HTTP requests this process answered, by route template, method and status",
            Unit::Seconds,
            self.http_requests.clone(),
        );
        registry.register_with_unit(
            "queue_operation_duration",
            "Queue operations (REST and RPC) this process answered, by operation and status class",
            Unit::Seconds,
            self.queue_operations.clone(),
        );
        registry.register(
            "lease_expiries",
            "Claims whose lease expired, found by this process's claimers (the task was requeued)",
            self.lease_expiries.clone(),
        );
        registry.register(
            "projector_applied_events",
            "Stream sequences this process's projector took in (applied, refused or rejected), by stream",
            self.projector_applied.clone(),
        );
        registry.register_with_unit(
            "proxy_request_duration",
            "Requests the load balancer's proxy forwarded, by worker and answered status",
            Unit::Seconds,
            self.proxy_requests.clone(),
        );
        registry.register_with_unit(
            "ai_model_call_duration",
            "Model call attempts this process's AI gateway made, by provider, model and outcome",
            Unit::Seconds,
            self.model_calls.clone(),
        );
    }
}

/// The status class of an HTTP status: `2xx`, `4xx`, …
pub fn status_class(status: u16) -> String {
    format!("{}xx", status / 100)
}

/// Figures a service reads from the projection at each scrape: the fleet's state (tasks by
/// status, instances by state, AI spend), the same from every process that projects the same
/// streams. Each service owns the queries over its own tables; the API runs them all in one
/// read of the projection per scrape.
pub trait Figures: std::fmt::Debug + Send + Sync + 'static {
    /// Reads the figures from `conn` and registers them as families of `registry`.
    fn read(&self, conn: &rusqlite::Connection, registry: &mut Registry) -> rusqlite::Result<()>;
}

/// Every row of `sql` (no parameters), mapped by `map`: the shape of every figures query.
pub fn rows<T>(
    conn: &rusqlite::Connection,
    sql: &str,
    map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    conn.prepare_cached(sql)?.query_map([], map)?.collect()
}

/// A gauge that holds a float.
pub type FloatGauge = Gauge<f64, AtomicU64>;
/// A counter that holds a float (a total the projection keeps, such as a cost).
pub type FloatCounter = Counter<f64, AtomicU64>;

/// A gauge family filled from query rows: each row's labels and value.
pub fn gauges<L>(rows: impl IntoIterator<Item = (L, f64)>) -> Family<L, FloatGauge>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    let family = Family::<L, FloatGauge>::default();
    for (labels, value) in rows {
        family.get_or_create(&labels).set(value);
    }
    family
}

/// A counter family filled from query rows (totals the projection keeps, such as tokens used).
pub fn counters<L>(rows: impl IntoIterator<Item = (L, f64)>) -> Family<L, FloatCounter>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    let family = Family::<L, FloatCounter>::default();
    for (labels, value) in rows {
        family.get_or_create(&labels).inc_by(value);
    }
    family
}
