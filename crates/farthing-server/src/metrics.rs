//! Prometheus metrics, in the text exposition format, at `/metrics`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the request-duration histogram, in seconds.
const BUCKETS_S: [f64; 12] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// Requests with one method and status on a route.
type RouteCount = (axum::http::Method, u16, u64);

#[derive(Default)]
pub struct Metrics {
    /// Per route, (method, status, count): looked up without allocating.
    requests: Mutex<HashMap<String, Vec<RouteCount>>>,
    buckets: [AtomicU64; BUCKETS_S.len()],
    duration_us_sum: AtomicU64,
    duration_count: AtomicU64,
    pub transfers_accepted: AtomicU64,
    pub transfers_refused: AtomicU64,
    pub idempotent_replays: AtomicU64,
    pub sse_clients: AtomicU64,
    pub webhook_deliveries_ok: AtomicU64,
    pub webhook_attempts_failed: AtomicU64,
    pub webhook_deliveries_failed: AtomicU64,
    /// Risk decisions by action (approve, step_up, review, decline).
    pub risk_decisions: [AtomicU64; 4],
    /// Vouchers taken as a channel's best (through the API).
    pub vouchers_accepted: AtomicU64,
    /// Channel settlements made on the ledger.
    pub channel_settlements: AtomicU64,
    /// Background tasks restarted after a panic or an early end.
    pub task_restarts: Arc<AtomicU64>,
}

impl Metrics {
    pub fn count_risk(&self, action: farthing_risk::policy::Action) {
        self.risk_decisions[action_index(action)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn observe(&self, method: &axum::http::Method, route: &str, status: u16, took: Duration) {
        use axum::http::Method;
        // Methods are labels: anything unusual counts as one, so callers cannot grow the set.
        let standard = [
            Method::GET,
            Method::POST,
            Method::DELETE,
            Method::PUT,
            Method::PATCH,
            Method::HEAD,
            Method::OPTIONS,
        ];
        let other;
        let method = if standard.contains(method) {
            method
        } else {
            other = Method::from_bytes(b"OTHER").expect("a method");
            &other
        };
        {
            let mut requests = self.requests.lock().unwrap();
            match requests.get_mut(route) {
                Some(rows) => match rows.iter_mut().find(|r| r.0 == method && r.1 == status) {
                    Some(row) => row.2 += 1,
                    None => rows.push((method.clone(), status, 1)),
                },
                None => {
                    requests.insert(route.to_string(), vec![(method.clone(), status, 1)]);
                }
            }
        }
        let s = took.as_secs_f64();
        for (i, bound) in BUCKETS_S.iter().enumerate() {
            if s <= *bound {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.duration_us_sum.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.duration_count.fetch_add(1, Ordering::Relaxed);
    }

    /// Renders every metric; `extra` adds gauges read elsewhere (engine, hub...).
    pub fn render(&self, extra: &[(&str, &str, f64)]) -> String {
        let mut out = String::new();
        out.push_str("# HELP farthing_http_requests_total HTTP requests answered.\n");
        out.push_str("# TYPE farthing_http_requests_total counter\n");
        let mut rows: Vec<(String, String, u16, u64)> = Vec::new();
        for (route, counts) in self.requests.lock().unwrap().iter() {
            for (method, status, n) in counts {
                rows.push((method.to_string(), route.clone(), *status, *n));
            }
        }
        rows.sort();
        for (method, route, status, n) in rows {
            let _ = writeln!(
                out,
                "farthing_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP farthing_http_request_duration_seconds Time to answer.\n");
        out.push_str("# TYPE farthing_http_request_duration_seconds histogram\n");
        for (i, bound) in BUCKETS_S.iter().enumerate() {
            let _ = writeln!(
                out,
                "farthing_http_request_duration_seconds_bucket{{le=\"{bound}\"}} {}",
                self.buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.duration_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "farthing_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}\n\
             farthing_http_request_duration_seconds_sum {}\n\
             farthing_http_request_duration_seconds_count {count}",
            self.duration_us_sum.load(Ordering::Relaxed) as f64 / 1e6
        );
        let counters = [
            (
                "farthing_transfers_accepted_total",
                "Transfers the API had applied.",
                &self.transfers_accepted,
            ),
            (
                "farthing_transfers_refused_total",
                "Transfers the ledger refused.",
                &self.transfers_refused,
            ),
            (
                "farthing_vouchers_accepted_total",
                "Channel vouchers accepted and kept as their channel's best.",
                &self.vouchers_accepted,
            ),
            (
                "farthing_channel_settlements_total",
                "Channel settlements made on the ledger (one transfer each).",
                &self.channel_settlements,
            ),
            (
                "farthing_task_restarts_total",
                "Background tasks (settlement, webhooks, pruning) restarted after a panic or an early end.",
                &*self.task_restarts,
            ),
            (
                "farthing_idempotent_replays_total",
                "Answers replayed for a repeated Idempotency-Key.",
                &self.idempotent_replays,
            ),
            (
                "farthing_webhook_deliveries_succeeded_total",
                "Webhook deliveries acknowledged.",
                &self.webhook_deliveries_ok,
            ),
            (
                "farthing_webhook_attempts_failed_total",
                "Webhook delivery attempts that failed.",
                &self.webhook_attempts_failed,
            ),
            (
                "farthing_webhook_deliveries_failed_total",
                "Webhook deliveries given up.",
                &self.webhook_deliveries_failed,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP farthing_risk_decisions_total Payments judged by the risk engine, by decision.\n\
             # TYPE farthing_risk_decisions_total counter"
        );
        for (a, n) in farthing_risk::policy::Action::ALL.iter().zip(&self.risk_decisions) {
            let _ = writeln!(
                out,
                "farthing_risk_decisions_total{{action=\"{}\"}} {}",
                a.as_str(),
                n.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP farthing_sse_clients Event-stream readers connected.\n\
             # TYPE farthing_sse_clients gauge\nfarthing_sse_clients {}",
            self.sse_clients.load(Ordering::Relaxed)
        );
        for (name, help, value) in extra {
            let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
        out
    }
}

/// CPU seconds (user + system) this process used so far.
pub fn process_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given; zeroed is a valid starting value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF and a valid pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Resident memory of this process, bytes (Linux; 0 elsewhere).
pub fn resident_bytes() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<f64>().ok()))
        .map_or(0.0, |pages| pages * 4096.0)
}

/// For `/metrics`: decisions by action.
pub fn action_index(a: farthing_risk::policy::Action) -> usize {
    farthing_risk::policy::Action::ALL.iter().position(|x| *x == a).unwrap_or(0)
}
