//! The agent's state as the probes and Prometheus see it: counters, gauges and histograms kept
//! in atomics, shared by the watchers, the writer and the HTTP server, rendered as Prometheus
//! text.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::cluster::Kind;

/// A histogram of durations with fixed bucket bounds, in seconds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One count per bound, then the overflow (+Inf).
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

/// Bounds from 100 µs to 10 s: enforcement latencies and transaction durations.
const BOUNDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            bounds: BOUNDS,
            counts: (0..=BOUNDS.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let total = self.count();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {total}");
    }
}

/// Everything the agent reports.
#[derive(Debug)]
pub struct Metrics {
    /// Every watch has delivered its first complete list.
    pub synced: AtomicBool,
    /// Synced, and the table in the kernel was read back equal to the last apply.
    pub ready: AtomicBool,
    pub applies_full: AtomicU64,
    pub applies_diff: AtomicU64,
    pub apply_failures: AtomicU64,
    pub verify_failures: AtomicU64,
    pub apply_duration: Histogram,
    pub event_to_enforced: Histogram,
    pub elements: AtomicU64,
    pub rules: AtomicU64,
    pub generation: AtomicU64,
    pub watch_errors: AtomicU64,
    pub malformed_objects: AtomicU64,
    /// Watch events per kind, in [`Kind::ALL`] order.
    pub watch_events: [AtomicU64; 4],
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            synced: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            applies_full: AtomicU64::new(0),
            applies_diff: AtomicU64::new(0),
            apply_failures: AtomicU64::new(0),
            verify_failures: AtomicU64::new(0),
            apply_duration: Histogram::new(),
            event_to_enforced: Histogram::new(),
            elements: AtomicU64::new(0),
            rules: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            watch_errors: AtomicU64::new(0),
            malformed_objects: AtomicU64::new(0),
            watch_events: Default::default(),
        }
    }
}

fn kind_index(kind: Kind) -> usize {
    Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
}

impl Metrics {
    pub fn watch_event(&self, kind: Kind) {
        self.watch_events[kind_index(kind)].fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let flag = |a: &AtomicBool| u64::from(a.load(Ordering::Relaxed));
        let mut gauge = |name: &str, help: &str, kind: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP netfence_{name} {help}\n# TYPE netfence_{name} {kind}\nnetfence_{name} {value}"
            );
        };
        gauge(
            "synced",
            "1 once every watch has delivered its first list.",
            "gauge",
            flag(&self.synced),
        );
        gauge(
            "ready",
            "1 when synced and the last apply was read back equal.",
            "gauge",
            flag(&self.ready),
        );
        gauge(
            "apply_failures_total",
            "Transactions the kernel refused or that could not be sent.",
            "counter",
            get(&self.apply_failures),
        );
        gauge(
            "verify_failures_total",
            "Read-backs that differed from what was applied.",
            "counter",
            get(&self.verify_failures),
        );
        gauge(
            "elements",
            "Set and map elements in the applied table.",
            "gauge",
            get(&self.elements),
        );
        gauge("rules", "Rules in the applied table.", "gauge", get(&self.rules));
        gauge(
            "last_applied_generation",
            "Transactions applied since the agent started.",
            "gauge",
            get(&self.generation),
        );
        gauge(
            "watch_errors_total",
            "Watch and list errors (each retried with backoff).",
            "counter",
            get(&self.watch_errors),
        );
        gauge(
            "malformed_objects_total",
            "Objects that could not be read (logged and skipped).",
            "counter",
            get(&self.malformed_objects),
        );
        let _ = writeln!(
            out,
            "# HELP netfence_applies_total Transactions applied.\n# TYPE netfence_applies_total counter\nnetfence_applies_total{{mode=\"full\"}} {}\nnetfence_applies_total{{mode=\"diff\"}} {}",
            get(&self.applies_full),
            get(&self.applies_diff)
        );
        let _ = writeln!(
            out,
            "# HELP netfence_watch_events_total Watch events received.\n# TYPE netfence_watch_events_total counter"
        );
        for kind in Kind::ALL {
            let _ = writeln!(
                out,
                "netfence_watch_events_total{{resource=\"{}\"}} {}",
                kind.as_str(),
                get(&self.watch_events[kind_index(kind)])
            );
        }
        self.apply_duration.render(
            &mut out,
            "netfence_apply_duration_seconds",
            "From the compiled ruleset to the acknowledged transaction.",
        );
        self.event_to_enforced.render(
            &mut out,
            "netfence_event_to_enforced_seconds",
            "From a watch event's arrival to the acknowledged transaction that enforces it.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.event_to_enforced.observe(Duration::from_micros(50));
        m.event_to_enforced.observe(Duration::from_millis(3));
        m.event_to_enforced.observe(Duration::from_secs(30));
        let text = m.render();
        assert!(
            text.contains("netfence_event_to_enforced_seconds_bucket{le=\"0.0001\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("netfence_event_to_enforced_seconds_bucket{le=\"0.005\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("netfence_event_to_enforced_seconds_bucket{le=\"10\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("netfence_event_to_enforced_seconds_bucket{le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("netfence_event_to_enforced_seconds_count 3\n"),
            "{text}"
        );
    }

    #[test]
    fn every_metric_is_prefixed_and_typed() {
        let m = Metrics::default();
        m.watch_event(Kind::Pod);
        m.applies_diff.fetch_add(2, Ordering::Relaxed);
        let text = m.render();
        assert!(text.contains("netfence_watch_events_total{resource=\"pods\"} 1\n"));
        assert!(text.contains("netfence_applies_total{mode=\"diff\"} 2\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("netfence_"), "{line}");
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
        let typed = text.lines().filter(|l| l.starts_with("# TYPE")).count();
        assert_eq!(typed, 13);
    }
}
