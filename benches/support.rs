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
