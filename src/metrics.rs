//! Counters and a latency histogram, rendered in the Prometheus text format
//! at `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Routes with their own latency series; everything else is `other`.
const ROUTES: [&str; 9] = [
    "/add", "/remove", "/delete", "/renew", "/cleanup", "/list", "/healthz", "/metrics", "other",
];
/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

#[derive(Default)]
pub struct Metrics {
    pub adds: AtomicU64,
    pub removes: AtomicU64,
    pub renews: AtomicU64,
    /// Users removed by the sweeper because their expiry passed.
    pub expired: AtomicU64,
    /// Users removed by cleanup.
    pub cleaned_up: AtomicU64,
    latency: [Histogram; ROUTES.len()],
}

/// Adds one to a counter.
pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    pub fn observe(&self, path: &str, seconds: f64) {
        let route = ROUTES
            .iter()
            .position(|r| *r == path)
            .unwrap_or(ROUTES.len() - 1);
        let h = &self.latency[route];
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            h.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        h.count.fetch_add(1, Ordering::Relaxed);
        h.sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// The exposition text. `live_users` is None when the database did not
    /// answer (the gauge is then left out rather than reported wrong).
    pub fn render(&self, live_users: Option<u64>, database_errors: u64) -> String {
        let mut out = String::with_capacity(4096);
        if let Some(live) = live_users {
            gauge(
                &mut out,
                "rubber_live_users",
                "Users whose credentials currently work.",
                live,
            );
        }
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        counter(
            &mut out,
            "rubber_adds_total",
            "Users added or replaced.",
            get(&self.adds),
        );
        counter(
            &mut out,
            "rubber_removes_total",
            "Remove requests that found their user.",
            get(&self.removes),
        );
        counter(
            &mut out,
            "rubber_renews_total",
            "Successful renewals.",
            get(&self.renews),
        );
        counter(
            &mut out,
            "rubber_expired_total",
            "Expired users removed by the sweeper.",
            get(&self.expired),
        );
        counter(
            &mut out,
            "rubber_cleanup_removed_total",
            "Users removed by cleanup.",
            get(&self.cleaned_up),
        );
        counter(
            &mut out,
            "rubber_database_errors_total",
            "Database operations that failed.",
            database_errors,
        );
        let name = "rubber_request_duration_seconds";
        let _ = writeln!(out, "# HELP {name} Time to answer a request, by route.");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (route, h) in ROUTES.iter().zip(&self.latency) {
            let mut cumulative = 0;
            for (bound, n) in BUCKETS.iter().zip(&h.buckets) {
                cumulative += get(n);
                let _ = writeln!(
                    out,
                    "{name}_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let count = get(&h.count);
            let _ = writeln!(
                out,
                "{name}_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "{name}_sum{{route=\"{route}\"}} {}",
                get(&h.sum_micros) as f64 / 1e6
            );
            let _ = writeln!(out, "{name}_count{{route=\"{route}\"}} {count}");
        }
        out
    }
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.observe("/add", 0.0004);
        m.observe("/add", 0.003);
        m.observe("/add", 9.0);
        m.observe("/elsewhere", 0.0001);
        let text = m.render(Some(2), 0);
        assert!(
            text.contains("rubber_request_duration_seconds_bucket{route=\"/add\",le=\"0.0005\"} 1")
        );
        assert!(
            text.contains("rubber_request_duration_seconds_bucket{route=\"/add\",le=\"0.005\"} 2")
        );
        assert!(text.contains("rubber_request_duration_seconds_bucket{route=\"/add\",le=\"5\"} 2"));
        assert!(
            text.contains("rubber_request_duration_seconds_bucket{route=\"/add\",le=\"+Inf\"} 3")
        );
        assert!(text.contains("rubber_request_duration_seconds_count{route=\"other\"} 1"));
        assert!(text.contains("rubber_live_users 2"));
    }

    #[test]
    fn an_unknown_live_count_is_left_out() {
        assert!(!Metrics::default()
            .render(None, 3)
            .contains("rubber_live_users"));
        assert!(Metrics::default()
            .render(None, 3)
            .contains("rubber_database_errors_total 3"));
    }
}
