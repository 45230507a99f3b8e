//! The node's client port driven by raw requests: client batches applied
//! once, groups spread over cores.

#[path = "support/cluster.rs"]
mod local_cluster;
use std::time::{Duration, Instant};

#[path = "../../engine/tests/support/ports.rs"]
mod ports;
#[path = "support/client.rs"]
mod support;

use local_cluster::{assert_log_holds, leader, raw_body, raw_request, TestCluster};
use support::client;
use synod_client_proto::{ClientOp, ClientRequest, ClientResponse};

#[test]
fn groups_spread_over_cores_each_keep_their_own_log() {
    let cluster = TestCluster::with_flags(3, &["--cores", "2", "--groups", "4"]);
    leader(&cluster);
    let mut acked = Vec::new();
    for group in 0..4 {
        let lines: Vec<String> = (0..20).map(|i| format!("append g{group}-{i}")).collect();
        let g = group.to_string();
        let deadline = Instant::now() + Duration::from_secs(20);
        let replies = loop {
            let replies = client(
                &["--cluster", &cluster.cluster_arg(), "--group", &g],
                &lines,
            );
            if replies.iter().all(|r| r["ok"] == true) || Instant::now() > deadline {
                break replies;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        for (i, reply) in replies.iter().enumerate() {
            assert_eq!(reply["ok"], true, "group {group}: {reply}");
            assert_eq!(reply["group"], group, "{reply}");
            acked.push((
                group,
                format!("g{group}-{i}"),
                reply["index"].as_u64().unwrap(),
            ));
        }
    }
    // Each group's log holds its own appends only, on every node.
    for node in &cluster.nodes {
        for group in 0..4u64 {
            let addr = node.client.to_string();
            let g = group.to_string();
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let reply = client(&["--node", &addr, "--group", &g], &["read 0 1000".into()]);
                let entries = reply[0]["entries"].as_array().cloned().unwrap_or_default();
                let data: Vec<String> = entries
                    .iter()
                    .map(|e| e["data"].as_str().unwrap_or_default().to_string())
                    .collect();
                let mine: Vec<String> = acked
                    .iter()
                    .filter(|(gr, _, _)| *gr == group)
                    .map(|(_, d, _)| d.clone())
                    .collect();
                if data == mine {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {} group {group}: {data:?}",
                    node.id
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

#[test]
fn a_batch_of_appends_applies_each_once_even_when_retried() {
    let cluster = TestCluster::new(3);
    let batch = ClientRequest {
        group: 0,
        op: ClientOp::AppendBatch {
            client: 77,
            seq: 10,
            items: vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()],
        },
    };
    // The node first reported as leader may not lead yet (on a loaded
    // machine its Phase 1 can still be running), so ask again, the current
    // leader. A leader that steps down with the batch in flight answers
    // NotLeader too, and the batch may still be applied: the session then
    // answers the next try with the last item's index alone.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (addr, indexes) = loop {
        let addr = cluster.nodes[leader(&cluster) as usize - 1].client;
        match raw_request(addr, batch.clone()) {
            ClientResponse::AppendedBatch { indexes } => break (addr, indexes),
            refused @ (ClientResponse::NotLeader { .. } | ClientResponse::Busy) => {
                assert!(Instant::now() < deadline, "still refused: {refused:?}");
                std::thread::sleep(Duration::from_millis(50));
            }
            other => panic!("not a batch answer: {other:?}"),
        }
    };
    if indexes.iter().all(Option::is_some) {
        let at: Vec<u64> = indexes.iter().flatten().copied().collect();
        assert!(at.windows(2).all(|w| w[1] == w[0] + 1), "{at:?}");
    } else {
        assert_eq!(indexes[..2], [None, None], "an earlier try applied all");
    }
    // One input, so one slot: the items sit at consecutive indexes.
    let last = indexes[2].expect("the session answers its last command");
    let first = vec![last - 2, last - 1, last];
    // A retry (the answer was lost, say) applies nothing again: the session
    // answers its last command, and the earlier ones as applied before.
    let answer = raw_request(addr, batch);
    let ClientResponse::AppendedBatch { indexes } = answer else {
        panic!("not a batch answer: {answer:?}")
    };
    assert_eq!(indexes, vec![None, None, Some(first[2])]);
    let acked: Vec<(String, u64)> = ["a", "b", "c"]
        .iter()
        .zip(&first)
        .map(|(data, index)| (data.to_string(), *index))
        .collect();
    for i in 0..3 {
        assert_log_holds(&cluster, i, &acked);
    }
    let empty = ClientRequest {
        group: 0,
        op: ClientOp::AppendBatch {
            client: 78,
            seq: 1,
            items: Vec::new(),
        },
    };
    assert!(matches!(raw_request(addr, empty), ClientResponse::Error(_)));
    // A batch cut short, or bytes that are no request, are refused with a
    // reason; nothing is appended and the node goes on serving.
    let whole = ClientRequest {
        group: 0,
        op: ClientOp::AppendBatch {
            client: 79,
            seq: 1,
            items: vec![b"never".to_vec(); 8],
        },
    }
    .encode();
    for body in [
        whole[..whole.len() - 3].to_vec(),
        vec![0xa5; 64],
        Vec::new(),
    ] {
        let answer = raw_body(addr, body);
        assert!(
            matches!(&answer, ClientResponse::Error(reason) if reason.starts_with("malformed")),
            "{answer:?}"
        );
    }
    let ClientResponse::AppendedBatch { indexes } = raw_request(addr, batch_of(80, &["after"]))
    else {
        panic!("the node stopped serving batches");
    };
    // The retry's three commands took the three indexes after the first
    // batch (chosen, though not applied again); tries that were in doubt
    // may have taken more.
    assert!(indexes[0].expect("applied") >= first[2] + 4, "{indexes:?}");
    for i in 0..3 {
        assert_log_holds(&cluster, i, &acked);
        let log = client(
            &["--node", &cluster.nodes[i].client.to_string()],
            &["read 0 10000".into()],
        );
        let entries = log[0]["entries"].as_array().cloned().unwrap_or_default();
        assert!(
            entries.iter().all(|e| e["data"] != "never"),
            "a malformed request was appended: {log:?}"
        );
    }
}

fn batch_of(client: u64, items: &[&str]) -> ClientRequest {
    ClientRequest {
        group: 0,
        op: ClientOp::AppendBatch {
            client,
            seq: 1,
            items: items.iter().map(|item| item.as_bytes().to_vec()).collect(),
        },
    }
}
