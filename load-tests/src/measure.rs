//! Measuring tools: latency histograms, the cost of the timer itself, and resident memory.

use hdrhistogram::Histogram;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Nanosecond latencies from 1 ns to 10 s with 3 significant digits (0.1% resolution).
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 10_000_000_000, 3).expect("valid histogram bounds")
}

/// Records one latency, clamping to the histogram's range instead of failing.
pub fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let nanos = (elapsed.as_nanos() as u64).clamp(1, 10_000_000_000);
    histogram.record(nanos).expect("value within bounds");
}

/// The cost of timing nothing: `samples` back-to-back `Instant::now()` / `elapsed()` pairs, the
/// same pair that wraps each timed command.
pub fn timer_overhead(samples: u64) -> Histogram<u64> {
    let mut histogram = latency_histogram();
    for _ in 0..samples {
        let started = Instant::now();
        black_box(());
        record(&mut histogram, started.elapsed());
    }
    histogram
}

/// `p50=.. p99=.. p99.9=.. max=..` in nanoseconds.
pub fn percentiles(histogram: &Histogram<u64>) -> String {
    format!(
        "p50={}ns p99={}ns p99.9={}ns max={}ns (n={})",
        histogram.value_at_quantile(0.50),
        histogram.value_at_quantile(0.99),
        histogram.value_at_quantile(0.999),
        histogram.max(),
        histogram.len()
    )
}

/// Resident set size of this process in bytes (`VmRSS` of `/proc/self/status`), or 0 where
/// procfs is missing.
pub fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// Operations per second, as a whole number.
pub fn rate(ops: u64, elapsed: Duration) -> u64 {
    (ops as f64 / elapsed.as_secs_f64().max(1e-9)) as u64
}

/// The 1-, 5- and 15-minute load averages (`/proc/loadavg`), to judge how noisy a run was on a
/// shared machine.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| "unknown".to_owned())
}
