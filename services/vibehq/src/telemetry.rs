//! Logs and traces: structured logs on stderr, and spans exported over OTLP/HTTP when a
//! collector is configured.
//!
//! Both read the same `tracing` spans, each through its own filter: `VIBEHQ_LOG` chooses what
//! is logged, while export takes vibehq's own spans at info level whatever the log level, so
//! quieting the logs never breaks a trace. The trace context itself travels in events' NATS
//! headers ([`vibehq_events::trace`]), so a task's spans in `vibehq up` and in `vibehq worker`
//! are one trace.

use anyhow::{Context, Result};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::LogFormat;

/// What the logs show when `VIBEHQ_LOG` is not set: a service's progress at info.
const DEFAULT_LOG: &str = "info,async_nats=warn,tower_http=warn";
/// The same for a one-shot command at a terminal (`vibehq why`, `vibehq key`, …): its answer
/// is what it prints, so only what went wrong is logged.
const DEFAULT_CLI_LOG: &str = "warn";

/// The service name of the one-shot commands.
pub const CLI_SERVICE: &str = "vibehq-cli";

/// The OTLP path traces are posted to under a collector's base URL.
const TRACES_PATH: &str = "/v1/traces";

/// The installed exporter, flushed by [`Telemetry::shutdown`].
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// Where spans go: nowhere, the URL given, or wherever the standard OTEL_* variables say.
#[derive(Debug, PartialEq)]
enum Export {
    Off,
    To(String),
    FromEnvironment,
}

impl Export {
    fn choose(endpoint: Option<&str>) -> Result<Self> {
        if let Some(endpoint) = endpoint {
            return traces_url(endpoint).map(Export::To);
        }
        let standard = [
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ];
        Ok(
            if standard
                .iter()
                .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
            {
                Export::FromEnvironment
            } else {
                Export::Off
            },
        )
    }
}

/// The traces URL of a collector given by its base URL (`http://host:4318`) or by the full
/// traces URL.
fn traces_url(endpoint: &str) -> Result<String> {
    let endpoint = endpoint.trim().trim_end_matches('/');
    anyhow::ensure!(
        endpoint.starts_with("http://") || endpoint.starts_with("https://"),
        "--otlp-endpoint must be an http:// or https:// URL of an OTLP/HTTP collector \
         (e.g. http://127.0.0.1:4318), not {endpoint:?}"
    );
    Ok(if endpoint.ends_with(TRACES_PATH) {
        endpoint.to_owned()
    } else {
        format!("{endpoint}{TRACES_PATH}")
    })
}

/// Installs logging, and span export when `otlp_endpoint` (or the OTEL_* environment) asks
/// for it; `service` names this process in the traces (OTEL_SERVICE_NAME overrides it).
pub fn init(format: LogFormat, otlp_endpoint: Option<&str>, service: &str) -> Result<Telemetry> {
    let default = if service == CLI_SERVICE {
        DEFAULT_CLI_LOG
    } else {
        DEFAULT_LOG
    };
    let filter = EnvFilter::try_from_env("VIBEHQ_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // Colours only for a terminal: a log file or a collector gets plain text.
    let logs = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Text => logs.boxed(),
        LogFormat::Json => logs.json().boxed(),
    }
    .with_filter(filter);
    let provider = match Export::choose(otlp_endpoint)? {
        Export::Off => None,
        export => Some(provider(export, service)?),
    };
    let spans = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("vibehq"))
            .with_filter(Targets::new().with_target("vibehq", tracing::Level::INFO))
    });
    tracing_subscriber::registry().with(logs).with(spans).init();
    Ok(Telemetry { provider })
}

fn provider(export: Export, service: &str) -> Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_http();
    let exporter = match export {
        Export::To(url) => exporter.with_endpoint(url),
        _ => exporter,
    }
    .build()
    .context("cannot set up the OTLP trace exporter")?;
    let resource = Resource::builder();
    let resource = if std::env::var_os("OTEL_SERVICE_NAME").is_some() {
        resource
    } else {
        resource.with_service_name(service.to_owned())
    };
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

impl Telemetry {
    /// Sends the spans still buffered; called once the command has finished.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            // The exporter's thread blocks on its HTTP client: let it, outside the runtime's
            // polling.
            let result = tokio::task::block_in_place(|| provider.shutdown());
            if let Err(error) = result {
                eprintln!("warning: not every span reached the OTLP collector: {error}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_is_a_collector_base_or_its_traces_url() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").ok().as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(
            traces_url("https://otel.example/").ok().as_deref(),
            Some("https://otel.example/v1/traces")
        );
        assert_eq!(
            traces_url("http://c:4318/v1/traces").ok().as_deref(),
            Some("http://c:4318/v1/traces")
        );
        let refused = traces_url("127.0.0.1:4317").map_err(|e| e.to_string());
        assert!(refused.is_err_and(|e| e.contains("--otlp-endpoint")));
    }
}
