//! The log properties of a history (see the parent module).

use std::collections::{BTreeMap, HashMap};

use crate::chaos::history::{Call, History, Op, Ret};

/// Every log violation found, one line each.
pub fn check(history: &History) -> Vec<String> {
    let appends = appends(&history.ops);
    let mut found = Vec::new();
    for log in &history.logs {
        found.extend(check_replica(log.node, &log.entries, &appends));
    }
    found.extend(check_agreement(history));
    found.extend(check_real_time(&appends, history));
    found
}

/// An append as the workload saw it.
struct Append<'a> {
    invoke_us: u64,
    complete_us: Option<u64>,
    /// The acknowledged index, if acknowledged.
    index: Option<u64>,
    data: &'a str,
}

fn appends(ops: &[Op]) -> HashMap<&str, Append<'_>> {
    ops.iter()
        .filter_map(|op| match (&op.call, &op.ret) {
            (Call::Append { data }, ret) => Some(Append {
                invoke_us: op.invoke_us,
                complete_us: op.complete_us,
                index: match ret {
                    Some(Ret::Appended { index }) => Some(*index),
                    _ => None,
                },
                data,
            }),
            _ => None,
        })
        .map(|append| (append.data, append))
        .collect()
}

/// Each acknowledged append once, at its index; nothing foreign; no
/// append twice.
fn check_replica(
    node: u64,
    entries: &[(u64, String)],
    appends: &HashMap<&str, Append>,
) -> Vec<String> {
    let mut found = Vec::new();
    let mut at: HashMap<&str, Vec<u64>> = HashMap::new();
    for (index, data) in entries {
        if appends.contains_key(data.as_str()) {
            at.entry(data).or_default().push(*index);
        } else if looks_like_append(data) {
            found.push(format!(
                "node {node}: index {index} holds `{data}`, which was never appended"
            ));
        }
    }
    for (data, indices) in &at {
        if indices.len() > 1 {
            found.push(format!(
                "node {node}: `{data}` is in the log {} times, at {indices:?}",
                indices.len()
            ));
        }
    }
    // A node keeps only its latest applied entries readable (the state
    // machine's retention, `LOG_RETAIN_BYTES`): below the first index it
    // still holds there is nothing to check. An empty log is checked whole.
    let retained_from = entries.first().map_or(0, |(index, _)| *index);
    let mut acked: Vec<&Append> = appends
        .values()
        .filter(|a| a.index.is_some_and(|index| index >= retained_from))
        .collect();
    acked.sort_by_key(|a| a.index);
    for append in acked {
        let index = append.index.expect("acknowledged");
        match at.get(append.data).map(Vec::as_slice) {
            None => found.push(format!(
                "node {node}: acknowledged append `{}` (index {index}) is missing",
                append.data
            )),
            Some([only]) if *only != index => found.push(format!(
                "node {node}: acknowledged append `{}` is at index {only}, acknowledged at {index}",
                append.data
            )),
            Some(_) => {}
        }
    }
    found
}

/// The workload's appends are `a:` followed by the client and a number; KV
/// writes show in the log as `put ...`/`cas ...` text.
fn looks_like_append(data: &str) -> bool {
    data.starts_with("a:")
}

/// Replicas hold the same entry at every index they both have.
fn check_agreement(history: &History) -> Vec<String> {
    let mut first: BTreeMap<u64, (u64, &str)> = BTreeMap::new();
    let mut found = Vec::new();
    for log in &history.logs {
        for (index, data) in &log.entries {
            match first.get(index) {
                None => {
                    first.insert(*index, (log.node, data));
                }
                Some((node, other)) if *other != data => found.push(format!(
                    "index {index}: node {node} holds `{other}`, node {} holds `{data}`",
                    log.node
                )),
                Some(_) => {}
            }
        }
    }
    found
}

/// An append acknowledged before another was invoked has the lower index.
/// Indices come from the acknowledgement or, for appends whose outcome is
/// unknown, from the first log that holds them.
fn check_real_time(appends: &HashMap<&str, Append>, history: &History) -> Vec<String> {
    let mut placed: HashMap<&str, u64> = HashMap::new();
    for log in history.logs.iter().rev() {
        for (index, data) in &log.entries {
            placed.insert(data.as_str(), *index);
        }
    }
    let mut by_index: Vec<(u64, &Append)> = appends
        .values()
        .filter_map(|a| {
            a.index
                .or_else(|| placed.get(a.data).copied())
                .map(|i| (i, a))
        })
        .collect();
    by_index.sort_by_key(|(index, a)| (*index, a.invoke_us));
    // Sweep in index order, remembering the latest invoke among lower
    // indices: if it came after this append completed, order is broken.
    let mut latest: Option<(u64, &Append)> = None;
    let mut found = Vec::new();
    for (index, append) in by_index {
        if let (Some((lower, later)), Some(done)) = (latest, append.complete_us) {
            if later.invoke_us > done {
                found.push(format!(
                    "`{}` (index {index}) was acknowledged at {done} us, before `{}` was invoked at {} us, yet that one has the lower index {lower}",
                    append.data, later.data, later.invoke_us
                ));
            }
        }
        if latest.is_none_or(|(_, a)| append.invoke_us > a.invoke_us) {
            latest = Some((index, append));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::history::ReplicaLog;

    fn append(client: u32, invoke: u64, complete: u64, data: &str, index: u64) -> Op {
        Op::ok(
            client,
            invoke,
            complete,
            Call::Append { data: data.into() },
            Ret::Appended { index },
        )
    }

    fn log(node: u64, entries: &[&str]) -> ReplicaLog {
        ReplicaLog {
            node,
            entries: entries
                .iter()
                .enumerate()
                .map(|(i, d)| (i as u64, d.to_string()))
                .collect(),
        }
    }

    fn history(ops: Vec<Op>, logs: Vec<ReplicaLog>) -> History {
        History { ops, logs }
    }

    #[test]
    fn a_clean_log_passes() {
        let ops = vec![
            append(1, 0, 10, "a:1:1", 0),
            append(2, 5, 20, "a:2:1", 1),
            Op::unknown(
                1,
                30,
                Call::Append {
                    data: "a:1:2".into(),
                },
            ),
        ];
        let logs = vec![
            log(1, &["a:1:1", "a:2:1", "put k v"]),
            log(2, &["a:1:1", "a:2:1"]),
        ];
        assert!(check(&history(ops, logs)).is_empty());
    }

    #[test]
    fn a_lost_acknowledged_append_is_caught() {
        let ops = vec![append(1, 0, 10, "a:1:1", 0), append(1, 11, 20, "a:1:2", 1)];
        let found = check(&history(
            ops,
            vec![log(1, &["a:1:1", "a:1:2"]), log(2, &["a:1:1"])],
        ));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("node 2") && found[0].contains("missing"),
            "{found:?}"
        );
    }

    #[test]
    fn a_duplicated_append_is_caught() {
        let ops = vec![append(1, 0, 10, "a:1:1", 0)];
        let found = check(&history(ops, vec![log(1, &["a:1:1", "a:1:1"])]));
        assert!(found.iter().any(|f| f.contains("2 times")), "{found:?}");
    }

    #[test]
    fn an_append_at_another_index_is_caught() {
        let ops = vec![append(1, 0, 10, "a:1:1", 1)];
        let found = check(&history(ops, vec![log(1, &["a:1:1", "put k v"])]));
        assert!(
            found.iter().any(|f| f.contains("acknowledged at 1")),
            "{found:?}"
        );
    }

    #[test]
    fn an_append_out_of_real_time_order_is_caught() {
        // a:1:1 completed at 10 before a:2:1 was invoked at 15, yet a:2:1
        // sits below it.
        let ops = vec![append(1, 0, 10, "a:1:1", 1), append(2, 15, 20, "a:2:1", 0)];
        let found = check(&history(ops, vec![log(1, &["a:2:1", "a:1:1"])]));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("lower index 0"), "{found:?}");
    }

    #[test]
    fn concurrent_appends_may_land_in_either_order() {
        let ops = vec![append(1, 0, 10, "a:1:1", 1), append(2, 5, 20, "a:2:1", 0)];
        assert!(check(&history(ops, vec![log(1, &["a:2:1", "a:1:1"])])).is_empty());
    }

    #[test]
    fn an_unknown_append_found_in_the_log_still_keeps_real_time_order() {
        let ops = vec![
            append(1, 0, 10, "a:1:1", 1),
            Op::unknown(
                2,
                15,
                Call::Append {
                    data: "a:2:1".into(),
                },
            ),
        ];
        let found = check(&history(ops, vec![log(1, &["a:2:1", "a:1:1"])]));
        assert_eq!(found.len(), 1, "{found:?}");
    }

    #[test]
    fn replicas_that_disagree_and_foreign_entries_are_caught() {
        let found = check(&history(
            vec![],
            vec![log(1, &["put k v"]), log(2, &["put k w", "a:9:9"])],
        ));
        assert_eq!(found.len(), 2, "{found:?}");
    }
}
