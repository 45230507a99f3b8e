//! Metrics in the Prometheus text format: per group, commit latency, batch
//! size, pipeline depth and window, fsync latency, elections, leader changes, WAL bytes,
//! snapshots, whether it leads or knows a leader, and its commit and applied
//! points; per peer, the bytes queued towards it and whether it is connected.
//!
//! Groups update their own metrics as they step; a scrape encodes the
//! registry, reading the transport's queues at that moment. The same port
//! answers `GET /health` from the groups' published points.

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
use crate::runtime::status::StatusView;

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
    /// 1 while this replica leads (Phase 1 done), else 0.
    pub is_leader: Gauge,
    /// 1 while this replica knows a leader (itself included), else 0.
    pub has_leader: Gauge,
    /// Every slot below is chosen, as this replica knows.
    pub commit_index: Gauge,
    /// Slots applied to the state machine (those below this one).
    pub applied_index: Gauge,
    /// Seconds a request spent in each stage at the leader (label
    /// `stage`: queue, wal, round; `runtime/group/stages.rs`).
    pub stages: Family<StageLabel, Histogram>,
    /// The four stages' histograms, held so that observing one is no
    /// look-up.
    pub stage: StageHistograms,
}

/// One histogram per stage.
#[derive(Clone, Debug)]
pub struct StageHistograms {
    /// Handed to the group to its slot's Accept written.
    pub queue: Histogram,
    /// The Accept written to durable here.
    pub wal: Histogram,
    /// The Accept written to chosen (and answered, in the same step).
    pub round: Histogram,
}

/// The label of a stage's histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    /// The stage.
    pub stage: &'static str,
}

/// 1 µs to about 7 s, 40 % apart: fine enough to read a stage's p99.
fn stage_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1e-6, 1.4, 48))
}

impl Default for GroupMetrics {
    fn default() -> Self {
        let stages = Family::<StageLabel, Histogram>::new_with_constructor(stage_histogram);
        let histogram = |stage| stages.get_or_create(&StageLabel { stage }).clone();
        let stage = StageHistograms {
            queue: histogram("queue"),
            wal: histogram("wal"),
            round: histogram("round"),
        };
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
            is_leader: Gauge::default(),
            has_leader: Gauge::default(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
            stage,
            stages,
        }
    }
}

impl GroupMetrics {
    /// Records the status a group just published.
    pub fn publish(&self, status: &StatusView) {
        let index = |slot: crate::protocol::Slot| i64::try_from(slot.0).unwrap_or(i64::MAX);
        self.is_leader.set(i64::from(status.leading));
        self.has_leader.set(i64::from(status.leader.is_some()));
        self.commit_index.set(index(status.commit));
        self.applied_index.set(index(status.applied));
    }

    /// Why this group is not healthy, if it is not.
    fn unhealthy(&self) -> Option<&'static str> {
        if self.has_leader.get() == 0 {
            Some("no leader")
        } else if self.applied_index.get() < self.commit_index.get() {
            Some("applying: behind its commit point")
        } else {
            None
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
    /// 1 while the core's connection to the peer is up, else 0.
    pub peer_connected: Family<PeerLabel, Gauge>,
    /// Every group's metrics, for `/health`.
    groups: Vec<(GroupId, GroupMetrics)>,
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
        let peer_connected = Family::<PeerLabel, Gauge>::default();
        registry.register(
            "peer_connected",
            "1 while the connection to the peer is up",
            peer_connected.clone(),
        );
        NodeMetrics {
            registry,
            peer_queue_bytes,
            peer_connected,
            groups: Vec::new(),
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
        registry.register("is_leader", "1 while this replica leads", m.is_leader);
        registry.register(
            "has_leader",
            "1 while this replica knows a leader",
            m.has_leader,
        );
        registry.register(
            "commit_index",
            "Every slot below is chosen, as this replica knows",
            m.commit_index,
        );
        registry.register(
            "applied_index",
            "Slots applied to the state machine",
            m.applied_index,
        );
        registry.register(
            "stage_seconds",
            "A request's time at the leader in each stage: queue (handed to the group to its \
             slot's Accept written), wal (that write durable here), round (that write to the \
             slot chosen and answered)",
            m.stages,
        );
        self.groups.push((group, metrics.clone()));
        metrics
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing into a String cannot fail");
        out
    }

    /// Whether every group knows a leader and has applied all it knows
    /// chosen: the status code's reason and a one-line JSON body.
    pub fn health(&self) -> (bool, String) {
        let mut ok = true;
        let groups: Vec<String> = self
            .groups
            .iter()
            .map(|(group, m)| {
                let problem = m.unhealthy();
                ok &= problem.is_none();
                let problem = problem.map_or_else(|| "null".to_string(), |p| format!("\"{p}\""));
                format!(
                    r#"{{"group":{},"leader_known":{},"leading":{},"commit":{},"applied":{},"problem":{problem}}}"#,
                    group.0,
                    m.has_leader.get() == 1,
                    m.is_leader.get() == 1,
                    m.commit_index.get(),
                    m.applied_index.get(),
                )
            })
            .collect();
        (
            ok,
            format!(r#"{{"ok":{ok},"groups":[{}]}}"#, groups.join(",")),
        )
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

/// The OpenMetrics text, for scrapers that ask for it (Prometheus does).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The Prometheus text format, for everyone else (curl, promtool).
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics { openmetrics: bool },
    Health,
    NotFound,
}

/// The route of a request head; anything that is not a complete `GET` of a
/// known path (garbage included) is not found.
fn route(head: &[u8]) -> Route {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    if !matches!(request.parse(head), Ok(httparse::Status::Complete(_))) {
        return Route::NotFound;
    }
    if request.method != Some("GET") {
        return Route::NotFound;
    }
    let path = request.path.unwrap_or_default();
    let path = path.split('?').next().unwrap_or_default();
    match path {
        "/metrics" | "/" => {
            let openmetrics = request.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("accept")
                    && String::from_utf8_lossy(h.value).contains("application/openmetrics-text")
            });
            Route::Metrics { openmetrics }
        }
        "/health" => Route::Health,
        _ => Route::NotFound,
    }
}

/// OpenMetrics text as the Prometheus text format (0.0.4): a counter's
/// family is named with its `_total` suffix, and there are no `# UNIT` or
/// `# EOF` lines. These are the only differences for the counters, gauges
/// and histograms registered here.
fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|tag| {
            let rest = line.strip_prefix(tag)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{tag}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => out.push_str(&line),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

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
    let (status, content_type, body) = match route(&head) {
        Route::Metrics { openmetrics: true } => ("200 OK", OPENMETRICS, metrics.encode()),
        Route::Metrics { openmetrics: false } => (
            "200 OK",
            PROMETHEUS_TEXT,
            to_prometheus_text(&metrics.encode()),
        ),
        Route::Health => {
            let (ok, body) = metrics.health();
            let status = if ok {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            (status, "application/json", body + "\n")
        }
        Route::NotFound => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "try GET /metrics or GET /health\n".to_string(),
        ),
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
    use crate::protocol::{Ballot, LogIndex, NodeId, Slot};

    fn fetch(addr: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    fn view(leader: Option<u64>, commit: u64, applied: u64) -> StatusView {
        StatusView {
            applied: Slot(applied),
            next_index: LogIndex(applied),
            commit: Slot(commit),
            leading: leader == Some(1),
            leader: leader.map(NodeId),
            promised: Ballot::default(),
            snapshot: Slot(0),
        }
    }

    #[test]
    fn groups_are_labelled_and_scrapes_are_served() {
        let mut metrics = NodeMetrics::default();
        let group = metrics.add_group(GroupId(3));
        group.elections.inc();
        group.commit_latency.observe(0.000_2);
        group.publish(&view(Some(1), 12, 12));
        metrics
            .peer_queue_bytes
            .get_or_create(&PeerLabel { peer: 2, core: 0 })
            .set(4096);
        let text = metrics.encode();
        for expected in [
            "synod_elections_total{group=\"3\"} 1",
            "synod_commit_latency_seconds_count{group=\"3\"} 1",
            "synod_peer_queue_bytes{peer=\"2\",core=\"0\"} 4096",
            "synod_is_leader{group=\"3\"} 1",
            "synod_commit_index{group=\"3\"} 12",
            "synod_applied_index{group=\"3\"} 12",
        ] {
            assert!(text.contains(expected), "{expected} in {text}");
        }

        let addr = serve_metrics("127.0.0.1:0".parse().unwrap(), Arc::new(metrics)).unwrap();
        let plain = fetch(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(plain.starts_with("HTTP/1.1 200 OK"), "{plain}");
        assert!(
            plain.contains("Content-Type: text/plain; version=0.0.4"),
            "{plain}"
        );
        assert!(plain.ends_with(&to_prometheus_text(&text)));
        let open = fetch(
            addr,
            "GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n",
        );
        assert!(
            open.contains("Content-Type: application/openmetrics-text; version=1.0.0"),
            "{open}"
        );
        assert!(open.ends_with(&text));
        assert!(fetch(addr, "POST /other HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(fetch(addr, "garbage\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(fetch(addr, "GET /metrics?x=1 HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
    }

    /// The rules `promtool check metrics` applies to the Prometheus text:
    /// every family has HELP and TYPE before its samples, a counter's name
    /// ends in `_total`, and every sample belongs to a declared family.
    #[test]
    fn the_prometheus_text_passes_the_linters_rules() {
        let mut metrics = NodeMetrics::default();
        metrics.add_group(GroupId(0)).fsync_latency.observe(0.002);
        metrics.add_group(GroupId(1));
        metrics
            .peer_connected
            .get_or_create(&PeerLabel { peer: 2, core: 0 })
            .set(1);
        let text = to_prometheus_text(&metrics.encode());
        let (mut helped, mut typed) = (Vec::new(), Vec::new());
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                helped.push(rest.split(' ').next().unwrap().to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(
                    helped.last().is_some_and(|h| h == name),
                    "HELP before {line}"
                );
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "{line}");
                }
                typed.push((name.to_string(), kind.to_string()));
            } else {
                assert!(!line.starts_with('#'), "stray comment {line}");
                let name = line.split(['{', ' ']).next().unwrap();
                let (family, kind) = typed.last().expect("a sample after its TYPE");
                let histogram_part = ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name.strip_suffix(s) == Some(family.as_str()));
                assert!(
                    name == family || (kind == "histogram" && histogram_part),
                    "{name} under {family}"
                );
            }
        }
        let families: Vec<&str> = typed.iter().map(|(n, _)| n.as_str()).collect();
        for needed in [
            "synod_is_leader",
            "synod_commit_index",
            "synod_applied_index",
            "synod_peer_connected",
            "synod_fsync_seconds",
            "synod_elections_total",
        ] {
            assert!(families.contains(&needed), "{needed} in {families:?}");
        }
    }

    #[test]
    fn health_wants_a_leader_and_everything_committed_applied_in_every_group() {
        let mut metrics = NodeMetrics::default();
        let (zero, one) = (metrics.add_group(GroupId(0)), metrics.add_group(GroupId(1)));
        let metrics = Arc::new(metrics);
        let addr = serve_metrics("127.0.0.1:0".parse().unwrap(), metrics.clone()).unwrap();
        let health = || fetch(addr, "GET /health HTTP/1.1\r\n\r\n");
        let answer = health();
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains(r#""problem":"no leader""#), "{answer}");
        zero.publish(&view(Some(1), 5, 5));
        one.publish(&view(Some(2), 9, 7));
        let answer = health();
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("behind its commit point"), "{answer}");
        one.publish(&view(Some(2), 9, 9));
        let answer = health();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(
            answer.contains("Content-Type: application/json"),
            "{answer}"
        );
        assert!(
            answer.contains(r#"{"ok":true,"groups":[{"group":0,"#),
            "{answer}"
        );
    }
}
