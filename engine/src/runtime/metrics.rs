//! Metrics in the Prometheus text format: per group, commit latency, batch
//! size, pipeline depth and window, fsync latency, elections, leader changes, WAL bytes
//! and snapshots; per peer, the bytes queued towards it.
//!
//! Groups update their own metrics as they step; a scrape encodes the
//! registry, reading the transport's queues at that moment.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::protocol::GroupId;

/// One group's metrics; cheap to clone (the values are shared).
#[derive(Clone, Debug)]
pub struct GroupMetrics {
    /// Seconds from a proposal request reaching the group to the apply of
    /// its last command, at the leader (one observation per request).
    pub commit_latency: Histogram,
    /// Commands in each committed slot.
    pub batch_commands: Histogram,
    /// Slots in flight beyond the commit point (leader only).
    pub pipeline_depth: Gauge,
    /// Slots the leader may have in flight, as chosen from its measured
    /// round and fsync times.
    pub pipeline_window: Gauge,
    /// Seconds of each WAL write + fdatasync.
    pub fsync_latency: Histogram,
    /// Elections this replica started (it went looking).
    pub elections: Counter,
    /// Changes of the leader this replica believes in.
    pub leader_changes: Counter,
    /// Bytes of frame bodies appended to the WAL.
    pub wal_bytes: Counter,
    /// Snapshots made durable (taken here or installed from a peer).
    pub snapshots: Counter,
}

impl Default for GroupMetrics {
    fn default() -> Self {
        GroupMetrics {
            // 10 µs to about 10 s.
            commit_latency: Histogram::new(exponential_buckets(1e-5, 2.0, 21)),
            batch_commands: Histogram::new(exponential_buckets(1.0, 2.0, 16)),
            pipeline_depth: Gauge::default(),
            pipeline_window: Gauge::default(),
            fsync_latency: Histogram::new(exponential_buckets(1e-5, 2.0, 21)),
            elections: Counter::default(),
            leader_changes: Counter::default(),
            wal_bytes: Counter::default(),
            snapshots: Counter::default(),
        }
    }
}

/// The label of a per-peer metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    /// The peer's node id.
    pub peer: u64,
    /// The core whose connection it is.
    pub core: u32,
}

/// A node's metrics registry.
#[derive(Debug)]
pub struct NodeMetrics {
    registry: Registry,
    /// Bytes queued towards each peer, as of the last scrape.
    pub peer_queue_bytes: Family<PeerLabel, Gauge>,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("synod");
        let peer_queue_bytes = Family::<PeerLabel, Gauge>::default();
        registry.register(
            "peer_queue_bytes",
            "Bytes queued towards each peer",
            peer_queue_bytes.clone(),
        );
        NodeMetrics {
            registry,
            peer_queue_bytes,
        }
    }
}

impl NodeMetrics {
    /// Registers and returns the metrics of `group`.
    pub fn add_group(&mut self, group: GroupId) -> GroupMetrics {
        let metrics = GroupMetrics::default();
        let registry = self
            .registry
            .sub_registry_with_label(("group".into(), group.0.to_string().into()));
        let m = metrics.clone();
        registry.register(
            "commit_latency_seconds",
            "Proposal request to the apply of its last command, at the leader",
            m.commit_latency,
        );
        registry.register(
            "batch_commands",
            "Commands per committed slot",
            m.batch_commands,
        );
        registry.register(
            "pipeline_depth",
            "Slots in flight beyond the commit point",
            m.pipeline_depth,
        );
        registry.register(
            "pipeline_window",
            "Slots the leader may have in flight, from its measured round and fsync times",
            m.pipeline_window,
        );
        registry.register("fsync_seconds", "WAL write and fdatasync", m.fsync_latency);
        registry.register("elections", "Elections started", m.elections);
        registry.register("leader_changes", "Leader changes seen", m.leader_changes);
        registry.register("wal_bytes", "Bytes appended to the WAL", m.wal_bytes);
        registry.register("snapshots", "Snapshots made durable", m.snapshots);
        metrics
    }

    /// The registry in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing into a String cannot fail");
        out
    }
}

/// Serves `GET /metrics` on `addr` from a thread of its own, so a slow
/// scraper never stalls a core (the metrics are atomics, shared).
pub fn serve_metrics(addr: SocketAddr, metrics: Arc<NodeMetrics>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("synod-metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(error) = answer_scrape(stream, &metrics) {
                    tracing::debug!(%error, "metrics scrape failed");
                }
            }
        })?;
    Ok(bound)
}

/// Request head bytes read at most.
const REQUEST_BYTES_MAX: usize = 8 << 10;

fn answer_scrape(mut stream: TcpStream, metrics: &NodeMetrics) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < REQUEST_BYTES_MAX {
        let read = stream.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..read]);
    }
    let (status, body) = if head.starts_with(b"GET /metrics ") || head.starts_with(b"GET / ") {
        ("200 OK", metrics.encode())
    } else {
        ("404 Not Found", "try GET /metrics\n".to_string())
    };
    // prometheus-client writes OpenMetrics text; scrapers parse the body by
    // the type it is served as.
    let content_type = if status.starts_with("200") {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_labelled_and_scrapes_are_served() {
        let mut metrics = NodeMetrics::default();
        let group = metrics.add_group(GroupId(3));
        group.elections.inc();
        group.commit_latency.observe(0.000_2);
        metrics
            .peer_queue_bytes
            .get_or_create(&PeerLabel { peer: 2, core: 0 })
            .set(4096);
        let text = metrics.encode();
        assert!(
            text.contains("synod_elections_total{group=\"3\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("synod_commit_latency_seconds_count{group=\"3\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("synod_peer_queue_bytes{peer=\"2\",core=\"0\"} 4096"),
            "{text}"
        );

        let addr = serve_metrics("127.0.0.1:0".parse().unwrap(), Arc::new(metrics)).unwrap();
        let fetch = |request: &str| {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream.write_all(request.as_bytes()).unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).unwrap();
            answer
        };
        let answer = fetch("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(
            answer.contains("Content-Type: application/openmetrics-text; version=1.0.0"),
            "{answer}"
        );
        assert!(answer.ends_with(&text));
        assert!(fetch("POST /other HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(fetch("garbage\r\n\r\n").starts_with("HTTP/1.1 404"));
    }
}
