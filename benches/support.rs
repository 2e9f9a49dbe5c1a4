//! Shared pieces of the benchmarks: sizes from the environment, timing and reporting.
//!
//! Every benchmark measures the raw JetStream ceiling in the same run, against the same
//! server, and reports vibehq's figure as a ratio of it: absolute numbers vary by machine, the
//! ratio says how much of the broker vibehq leaves on the table.

use std::time::Duration;

use hdrhistogram::Histogram;

/// A size from the environment variable `name`, or `default`.
pub fn size(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// Events (or operations) per second.
pub fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// A latency histogram in microseconds, 1 µs to 60 s.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|e| panic!("histogram: {e}"))
}

/// Records `elapsed` into `histogram`.
pub fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    histogram.saturating_record(micros.max(1));
}

/// `p50 / p99 / max` in milliseconds.
pub fn percentiles(histogram: &Histogram<u64>) -> String {
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    format!(
        "p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms (n = {})",
        ms(0.5),
        ms(0.99),
        histogram.max() as f64 / 1000.0,
        histogram.len()
    )
}

/// One line of the report.
pub fn line(name: &str, value: f64, unit: &str, ceiling: Option<(&str, f64)>) {
    match ceiling {
        Some((what, c)) => println!(
            "{name:<44} {value:>12.0} {unit:<9} {:>6.1}% of {what} ({c:.0} {unit})",
            100.0 * value / c.max(1e-9)
        ),
        None => println!("{name:<44} {value:>12.0} {unit}"),
    }
}

/// CPU time used by this process (all threads) and by the `nats-server`s it started, from
/// `/proc` (zero where there is none). On a small machine the broker and vibehq share the
/// cores, so CPU per operation says more than wall time about where a limit comes from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cpu {
    /// This process: vibehq's services and the benchmark's own clients.
    pub bench: Duration,
    /// The child `nats-server` processes.
    pub server: Duration,
    /// Per server process, so a server that stops between two readings is not subtracted.
    servers: Vec<(u32, Duration)>,
}

impl Cpu {
    /// The CPU time used so far.
    pub fn now() -> Self {
        let me = std::process::id();
        let mut servers = Vec::new();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse().ok()) else {
                    continue;
                };
                if let Some(stat) = ProcStat::read(pid)
                    && stat.parent == me
                    && stat.command == "nats-server"
                {
                    servers.push((pid, stat.cpu));
                }
            }
        }
        Self {
            bench: ProcStat::read(me).map_or(Duration::ZERO, |s| s.cpu),
            server: servers.iter().map(|(_, cpu)| *cpu).sum(),
            servers,
        }
    }

    /// The CPU time used since `earlier`.
    pub fn since(&self, earlier: &Cpu) -> Cpu {
        let before = |pid: u32| {
            earlier
                .servers
                .iter()
                .find(|(p, _)| *p == pid)
                .map_or(Duration::ZERO, |(_, cpu)| *cpu)
        };
        Cpu {
            bench: self.bench.saturating_sub(earlier.bench),
            server: self
                .servers
                .iter()
                .map(|(pid, cpu)| cpu.saturating_sub(before(*pid)))
                .sum(),
            servers: Vec::new(),
        }
    }

    /// In-process and nats-server CPU per operation, in microseconds, for `count` operations.
    pub fn micros_per(&self, count: usize) -> (f64, f64) {
        let us = |d: Duration| d.as_secs_f64() * 1e6 / count.max(1) as f64;
        (us(self.bench), us(self.server))
    }

    /// `… µs in-process + … µs nats-server` per operation, for `count` operations.
    pub fn per(&self, count: usize) -> String {
        let (bench, server) = self.micros_per(count);
        format!("{bench:.0} µs in-process + {server:.0} µs nats-server")
    }
}
/// The fields of `/proc/<pid>/stat` the benchmarks use.
struct ProcStat {
    command: String,
    parent: u32,
    cpu: Duration,
}

impl ProcStat {
    fn read(pid: u32) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // `pid (comm) state ppid … utime stime …`; comm may contain spaces and parentheses.
        let (head, rest) = stat.rsplit_once(')')?;
        let command = head.split_once('(')?.1.to_owned();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
        // utime and stime are in USER_HZ ticks, which Linux fixes at 100 per second.
        let ticks = field(14)? + field(15)?;
        Some(Self {
            command,
            parent: u32::try_from(field(4)?).ok()?,
            cpu: Duration::from_millis(ticks * 10),
        })
    }
}

/// Runs a benchmark's body on a multi-threaded runtime (the benches' `main`).
pub fn block_on<F: std::future::Future>(body: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
        .block_on(body)
}
