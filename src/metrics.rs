//! Prometheus metrics of one node (`GET /metrics`), with the `prometheus` crate.
//!
//! Each node owns a [`Metrics`] with its own registry (the simulator runs several nodes in
//! one process). The actors record into it as things happen; the Raft state gauges are set
//! from the core after every event. Names follow the Prometheus conventions: a `raftkv_`
//! prefix, `_total` for counters, base units (`_seconds`, `_bytes`).

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric a node exports.
pub struct Metrics {
    registry: Registry,
    pub term: IntGauge,
    /// 1 for the node's current role, 0 for the others.
    pub role: IntGaugeVec,
    /// The leader this node knows, 0 for none.
    pub leader_id: IntGauge,
    pub commit_index: IntGauge,
    pub applied_index: IntGauge,
    pub last_log_index: IntGauge,
    pub snapshot_index: IntGauge,
    pub elections_started: IntCounter,
    pub elections_won: IntCounter,
    pub leader_changes: IntCounter,
    /// Client proposals by result: accepted, not_leader, overloaded, shed, timeout.
    pub proposals: IntCounterVec,
    pub commit_latency: Histogram,
    pub apply_latency: Histogram,
    pub fsync_latency: Histogram,
    pub fsync_batch_entries: Histogram,
    pub append_entries_sent: IntCounterVec,
    pub append_entries_rejected: IntCounterVec,
    /// Entries a follower's log is behind the leader's (leader only).
    pub peer_lag: IntGaugeVec,
    pub snapshot_sent_bytes: IntCounter,
    pub snapshot_received_bytes: IntCounter,
    pub pending_requests: IntGauge,
    pub http_requests: IntCounterVec,
    pub http_latency: HistogramVec,
}

fn latency_buckets() -> Vec<f64> {
    vec![
        0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
    ]
}

impl Metrics {
    pub fn new(node: u64) -> Metrics {
        let registry =
            Registry::new_custom(None, Some([("node".to_string(), node.to_string())].into()))
                .unwrap_or_default();
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("metric name");
            let _ = registry.register(Box::new(g.clone()));
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("metric name");
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric name");
            let _ = registry.register(Box::new(c.clone()));
            c
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("metric name");
            let _ = registry.register(Box::new(g.clone()));
            g
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("metric name");
            let _ = registry.register(Box::new(h.clone()));
            h
        };
        let m = Metrics {
            term: gauge("raftkv_term", "Current Raft term."),
            role: gauge_vec(
                "raftkv_role",
                "1 for the node's current role (follower, candidate, leader), 0 otherwise.",
                &["role"],
            ),
            leader_id: gauge("raftkv_leader_id", "The leader this node knows (0: none)."),
            commit_index: gauge("raftkv_commit_index", "Highest log index known committed."),
            applied_index: gauge(
                "raftkv_applied_index",
                "Highest log index applied to the state machine.",
            ),
            last_log_index: gauge("raftkv_last_log_index", "Index of the last log entry."),
            snapshot_index: gauge(
                "raftkv_snapshot_index",
                "The log starts after this index (compacted into the store).",
            ),
            elections_started: counter(
                "raftkv_elections_started_total",
                "Elections this node started (it became a candidate).",
            ),
            elections_won: counter(
                "raftkv_elections_won_total",
                "Elections this node won (it became leader).",
            ),
            leader_changes: counter(
                "raftkv_leader_changes_total",
                "Times this node saw a new leader.",
            ),
            proposals: counter_vec(
                "raftkv_proposals_total",
                "Client writes by outcome: accepted, not_leader, overloaded (refused by the core), \
                 shed (refused by the gateway while the core refuses), timeout.",
                &["result"],
            ),
            commit_latency: histogram(
                "raftkv_commit_latency_seconds",
                "From a proposal on the leader to its commit.",
                latency_buckets(),
            ),
            apply_latency: histogram(
                "raftkv_apply_latency_seconds",
                "Time to apply one batch of committed entries to the store.",
                latency_buckets(),
            ),
            fsync_latency: histogram(
                "raftkv_fsync_latency_seconds",
                "Time to write and fsync one batch of the Raft log.",
                latency_buckets(),
            ),
            fsync_batch_entries: histogram(
                "raftkv_fsync_batch_entries",
                "Log entries made durable by one fsync.",
                vec![
                    0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0,
                ],
            ),
            append_entries_sent: counter_vec(
                "raftkv_append_entries_sent_total",
                "AppendEntries (heartbeats included) sent, by peer.",
                &["peer"],
            ),
            append_entries_rejected: counter_vec(
                "raftkv_append_entries_rejected_total",
                "AppendEntries a peer refused (log mismatch), by peer.",
                &["peer"],
            ),
            peer_lag: gauge_vec(
                "raftkv_peer_lag_entries",
                "Entries between the leader's last index and a peer's match index.",
                &["peer"],
            ),
            snapshot_sent_bytes: counter(
                "raftkv_snapshot_sent_bytes_total",
                "Snapshot bytes sent to followers.",
            ),
            snapshot_received_bytes: counter(
                "raftkv_snapshot_received_bytes_total",
                "Snapshot bytes received from a leader.",
            ),
            pending_requests: gauge(
                "raftkv_pending_client_requests",
                "Client requests waiting: writes, reads and forwarded requests.",
            ),
            http_requests: counter_vec(
                "raftkv_http_requests_total",
                "HTTP requests by route and status class (2xx, 4xx, 5xx).",
                &["route", "class"],
            ),
            http_latency: {
                let h = HistogramVec::new(
                    HistogramOpts::new(
                        "raftkv_http_request_duration_seconds",
                        "HTTP request duration by route and status class (an overloaded \
                         node's 503s should be fast).",
                    )
                    .buckets(latency_buckets()),
                    &["route", "class"],
                )
                .expect("metric name");
                let _ = registry.register(Box::new(h.clone()));
                h
            },
            registry,
        };
        for r in ["follower", "candidate", "leader"] {
            m.role.with_label_values(&[r]).set(0);
        }
        for r in ["accepted", "not_leader", "overloaded", "shed", "timeout"] {
            m.proposals.with_label_values(&[r]);
        }
        m
    }

    /// Sets the role gauges: 1 for `role`, 0 for the others.
    pub fn set_role(&self, role: &str) {
        for r in ["follower", "candidate", "leader"] {
            self.role.with_label_values(&[r]).set(i64::from(r == role));
        }
    }

    /// The Prometheus text format of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let families = self.registry.gather();
        if TextEncoder::new().encode(&families, &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// One sample of a text exposition: (name, labels, value).
pub type Sample = (String, Vec<(String, String)>, f64);

/// Every sample of a text exposition. For tests and tools.
pub fn parse_text(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((head, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match head.split_once('{') {
            None => (head.to_string(), Vec::new()),
            Some((name, rest)) => {
                let body = rest.trim_end_matches('}');
                let labels = body
                    .split("\",")
                    .filter(|kv| !kv.is_empty())
                    .filter_map(|kv| {
                        let (k, v) = kv.split_once('=')?;
                        Some((k.to_string(), v.trim_matches('"').to_string()))
                    })
                    .collect();
                (name.to_string(), labels)
            }
        };
        out.push((name, labels, value));
    }
    out
}

/// The value of `name` with every label in `want` (the first such sample).
pub fn sample(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    parse_text(text).into_iter().find_map(|(n, labels, v)| {
        (n == name
            && want
                .iter()
                .all(|(k, val)| labels.iter().any(|(lk, lv)| lk == k && lv == val)))
        .then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_parses_back() {
        let m = Metrics::new(7);
        m.term.set(3);
        m.set_role("leader");
        m.proposals.with_label_values(&["accepted"]).inc_by(5);
        m.append_entries_sent.with_label_values(&["2"]).inc();
        m.commit_latency.observe(0.003);
        m.http_requests.with_label_values(&["/kv", "2xx"]).inc();
        let text = m.render();
        assert!(text.contains("# TYPE raftkv_term gauge"), "{}", text);
        assert_eq!(sample(&text, "raftkv_term", &[("node", "7")]), Some(3.0));
        assert_eq!(
            sample(&text, "raftkv_role", &[("role", "leader")]),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "raftkv_role", &[("role", "follower")]),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, "raftkv_proposals_total", &[("result", "accepted")]),
            Some(5.0)
        );
        assert_eq!(
            sample(&text, "raftkv_proposals_total", &[("result", "timeout")]),
            Some(0.0)
        );
        assert_eq!(
            sample(&text, "raftkv_commit_latency_seconds_count", &[]),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "raftkv_http_requests_total",
                &[("route", "/kv"), ("class", "2xx")]
            ),
            Some(1.0)
        );
        // Every sample line is `name{labels} value` with a known prefix.
        for (name, _, _) in parse_text(&text) {
            assert!(name.starts_with("raftkv_"), "{}", name);
        }
    }
}
