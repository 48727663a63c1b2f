//! Counters and a latency histogram, rendered in the Prometheus text format
//! at `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 13] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
/// The route label of requests to paths a door does not serve.
const OTHER: &str = "other";

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, seconds: f64) {
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }
}

/// What the writer and the database report, read when /metrics is asked.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreCounts {
    /// Users whose credentials work now; None when the database did not
    /// answer (the gauge is then left out rather than reported wrong).
    pub live_users: Option<u64>,
    pub errors: u64,
    pub commits: u64,
    pub splits: u64,
    pub queued: usize,
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
    /// Password checks answered from the verifier's cache, computed against
    /// a live user's hash, and computed against the dummy hash (no live
    /// user, so that the refusal costs what a wrong password costs).
    pub verify_cached: AtomicU64,
    pub verify_hashed: AtomicU64,
    pub verify_dummy: AtomicU64,
    /// Requests refused because too many hashings were waiting.
    pub hashing_refused: AtomicU64,
    /// Access tokens and refresh tokens the token door issued.
    pub tokens_issued: AtomicU64,
    pub refresh_tokens_issued: AtomicU64,
    /// When the token door's signing certificate expires (Unix seconds);
    /// 0 without a token door.
    pub token_certificate_expiry: AtomicU64,
    /// The htpasswd file: users written into it, rewrites, and failed
    /// reads or writes.
    pub htpasswd_users: AtomicU64,
    pub htpasswd_writes: AtomicU64,
    pub htpasswd_write_failures: AtomicU64,
    /// Live users left out of the htpasswd file, by reason.
    pub htpasswd_left_out_not_bcrypt: AtomicU64,
    pub htpasswd_left_out_bad_name: AtomicU64,
    pub htpasswd_left_out_unreadable: AtomicU64,
    doors: Mutex<Vec<Arc<DoorMetrics>>>,
}

/// One door's series: a latency histogram per route, and, for a door that
/// checks credentials, its allowed and refused checks.
pub struct DoorMetrics {
    door: &'static str,
    routes: Vec<(&'static str, Histogram)>,
    checks: bool,
    pub allowed: AtomicU64,
    pub refused: AtomicU64,
    /// Connections closed at once because the door held max_connections.
    pub connections_refused: AtomicU64,
}

impl DoorMetrics {
    /// The door's route `path` is, or `other`: what the metrics and the
    /// request log show of a path (another path may hold anything a client
    /// put there, a password included).
    pub fn route(&self, path: &str) -> &'static str {
        self.routes
            .iter()
            .map(|(r, _)| *r)
            .find(|r| *r == path)
            .unwrap_or(OTHER)
    }

    /// Records how long a request to `route` took.
    pub fn observe(&self, route: &str, seconds: f64) {
        let h = self
            .routes
            .iter()
            .find(|(r, _)| *r == route)
            .or_else(|| self.routes.last())
            .map(|(_, h)| h);
        if let Some(h) = h {
            h.observe(seconds);
        }
    }
}

/// Adds one to a counter.
pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// Registers a door serving `routes`; `checks`: it counts credential
    /// checks allowed and refused.
    pub fn door(
        &self,
        door: &'static str,
        routes: &[&'static str],
        checks: bool,
    ) -> Arc<DoorMetrics> {
        let metrics = Arc::new(DoorMetrics {
            door,
            routes: routes
                .iter()
                .chain(std::iter::once(&OTHER))
                .map(|r| (*r, Histogram::default()))
                .collect(),
            checks,
            allowed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
        });
        if let Ok(mut doors) = self.doors.lock() {
            doors.push(Arc::clone(&metrics));
        }
        metrics
    }

    /// The exposition text.
    pub fn render(&self, store: StoreCounts) -> String {
        let mut out = String::with_capacity(8192);
        if let Some(live) = store.live_users {
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
            store.errors,
        );
        counter(
            &mut out,
            "rubber_write_commits_total",
            "Transactions the writer committed.",
            store.commits,
        );
        counter(
            &mut out,
            "rubber_write_batches_split_total",
            "Batches that failed on one write and were committed again one write at a time.",
            store.splits,
        );
        gauge(
            &mut out,
            "rubber_write_queue_depth",
            "Writes waiting for the writer.",
            store.queued as u64,
        );
        let _ = writeln!(
            out,
            "# HELP rubber_verifications_total Password checks, by how they were answered: from the cache, by hashing against the user's hash, or against the dummy hash (no live user).\n# TYPE rubber_verifications_total counter"
        );
        for (how, c) in [
            ("cached", &self.verify_cached),
            ("hashed", &self.verify_hashed),
            ("dummy", &self.verify_dummy),
        ] {
            let _ = writeln!(
                out,
                "rubber_verifications_total{{how=\"{how}\"}} {}",
                get(c)
            );
        }
        gauge(
            &mut out,
            "rubber_htpasswd_users",
            "Users in the registry's htpasswd file (when it is kept).",
            get(&self.htpasswd_users),
        );
        counter(
            &mut out,
            "rubber_htpasswd_writes_total",
            "Rewrites of the registry's htpasswd file.",
            get(&self.htpasswd_writes),
        );
        counter(
            &mut out,
            "rubber_htpasswd_write_failures_total",
            "Failed reads of the users or writes of the htpasswd file, each retried.",
            get(&self.htpasswd_write_failures),
        );
        let name = "rubber_htpasswd_left_out";
        let _ = writeln!(
            out,
            "# HELP {name} Live users left out of the registry's htpasswd file, by reason: not_bcrypt (a hash the registry cannot read), bad_name (a name outside the user name rule), unreadable (a name or hash that is not UTF-8 text).\n# TYPE {name} gauge"
        );
        for (reason, g) in [
            ("not_bcrypt", &self.htpasswd_left_out_not_bcrypt),
            ("bad_name", &self.htpasswd_left_out_bad_name),
            ("unreadable", &self.htpasswd_left_out_unreadable),
        ] {
            let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {}", get(g));
        }
        let expiry = get(&self.token_certificate_expiry);
        if expiry > 0 {
            gauge(
                &mut out,
                "rubber_token_certificate_expiry_seconds",
                "When the token door's signing certificate expires, in Unix seconds: renew it before.",
                expiry,
            );
        }
        counter(
            &mut out,
            "rubber_hashing_refused_total",
            "Requests answered 503 because too many password hashings were waiting for a core.",
            get(&self.hashing_refused),
        );
        let _ = writeln!(
            out,
            "# HELP rubber_tokens_issued_total Tokens the token door issued, by kind.\n# TYPE rubber_tokens_issued_total counter"
        );
        for (kind, c) in [
            ("access", &self.tokens_issued),
            ("refresh", &self.refresh_tokens_issued),
        ] {
            let _ = writeln!(
                out,
                "rubber_tokens_issued_total{{kind=\"{kind}\"}} {}",
                get(c)
            );
        }
        let doors: Vec<Arc<DoorMetrics>> = self.doors.lock().map(|d| d.clone()).unwrap_or_default();
        let name = "rubber_door_checks_total";
        let _ = writeln!(
            out,
            "# HELP {name} Credential checks a door answered, by result.\n# TYPE {name} counter"
        );
        for d in doors.iter().filter(|d| d.checks) {
            for (result, c) in [("allowed", &d.allowed), ("refused", &d.refused)] {
                let _ = writeln!(
                    out,
                    "{name}{{door=\"{}\",result=\"{result}\"}} {}",
                    d.door,
                    get(c)
                );
            }
        }
        let name = "rubber_connections_refused_total";
        let _ = writeln!(
            out,
            "# HELP {name} Connections a door closed at once because it held max_connections.\n# TYPE {name} counter"
        );
        for d in &doors {
            let _ = writeln!(
                out,
                "{name}{{door=\"{}\"}} {}",
                d.door,
                get(&d.connections_refused)
            );
        }
        let name = "rubber_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to answer a request, by door and route."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        for d in &doors {
            for (route, h) in &d.routes {
                let labels = format!("door=\"{}\",route=\"{route}\"", d.door);
                let mut cumulative = 0;
                for (bound, n) in BUCKETS.iter().zip(&h.buckets) {
                    cumulative += get(n);
                    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
                }
                let count = get(&h.count);
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
                let _ = writeln!(
                    out,
                    "{name}_sum{{{labels}}} {}",
                    get(&h.sum_micros) as f64 / 1e6
                );
                let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
            }
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
    fn histogram_buckets_are_cumulative_per_door_and_route() {
        let m = Metrics::default();
        let api = m.door("api", &["/add"], false);
        api.observe("/add", 0.0004);
        api.observe("/add", 0.003);
        api.observe("/add", 9.0);
        api.observe("/elsewhere", 0.0001);
        let text = m.render(StoreCounts {
            live_users: Some(2),
            ..StoreCounts::default()
        });
        let series = "rubber_request_duration_seconds";
        for line in [
            format!("{series}_bucket{{door=\"api\",route=\"/add\",le=\"0.0005\"}} 1"),
            format!("{series}_bucket{{door=\"api\",route=\"/add\",le=\"0.005\"}} 2"),
            format!("{series}_bucket{{door=\"api\",route=\"/add\",le=\"5\"}} 2"),
            format!("{series}_bucket{{door=\"api\",route=\"/add\",le=\"+Inf\"}} 3"),
            format!("{series}_count{{door=\"api\",route=\"other\"}} 1"),
            "rubber_live_users 2".to_owned(),
        ] {
            assert!(text.contains(&line), "{line} missing:\n{text}");
        }
        assert!(!text.contains("rubber_door_checks_total{door=\"api\""));
    }

    #[test]
    fn checking_doors_count_allowed_and_refused() {
        let m = Metrics::default();
        let door = m.door("auth_request", &["/auth"], true);
        inc(&door.allowed);
        inc(&door.refused);
        inc(&door.refused);
        let text = m.render(StoreCounts::default());
        assert!(
            text.contains("rubber_door_checks_total{door=\"auth_request\",result=\"allowed\"} 1")
        );
        assert!(
            text.contains("rubber_door_checks_total{door=\"auth_request\",result=\"refused\"} 2")
        );
    }

    #[test]
    fn an_unknown_live_count_is_left_out() {
        let text = Metrics::default().render(StoreCounts {
            errors: 3,
            ..StoreCounts::default()
        });
        assert!(!text.contains("rubber_live_users"));
        assert!(text.contains("rubber_database_errors_total 3"));
    }
}
