//! `synod node --join`: a new node asks a running cluster who its members
//! are, so that it can start without `--peers` and wait to be added.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use synod_client_proto::ClientOp;
use synod_engine::protocol::NodeId;
use synod_engine::runtime::node::PeerAddr;
use synod_net::Secret;

use super::error::SettingsError;
use super::Peers;

/// How long the cluster is given to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(30);

/// The members of groups `0..groups` of the cluster whose client ports are
/// `cluster` (each group's leader answers), with this node, `id` at
/// `listen`, added: the peers a joining node starts with.
pub(super) fn peers(
    cluster: Vec<SocketAddr>,
    groups: u32,
    secret: Option<Secret>,
    id: u64,
    listen: &str,
) -> Result<Peers, SettingsError> {
    let mut peers: Vec<(NodeId, PeerAddr)> = Vec::new();
    for group in 0..groups {
        let answer = crate::client_cmd::one_op(
            cluster.clone(),
            group,
            secret.clone(),
            ASK_TIMEOUT,
            ClientOp::Members,
        );
        for (member, addr) in
            members(&answer).map_err(|reason| SettingsError::Join { group, reason })?
        {
            if member != id && !peers.iter().any(|(known, _)| known.0 == member) {
                peers.push((NodeId(member), addr));
            }
        }
    }
    let me = listen.parse().map_err(|e| SettingsError::Join {
        group: 0,
        reason: format!("--listen {listen}: {e}"),
    })?;
    peers.push((NodeId(id), me));
    peers.sort();
    Ok(Peers(peers))
}

/// The members a `synod member list` answer names, each with its address.
fn members(answer: &Value) -> Result<Vec<(u64, PeerAddr)>, String> {
    if answer["ok"] != Value::Bool(true) {
        let error = answer["error"].as_str().unwrap_or("no answer");
        return Err(format!("the cluster did not answer: {error}"));
    }
    let listed = answer["members"]
        .as_array()
        .ok_or("the answer lists no members")?;
    listed
        .iter()
        .map(|member| {
            let id = member["id"].as_u64().ok_or("a member without an id")?;
            let addr = member["addr"].as_str().unwrap_or_default();
            let addr = addr
                .parse::<PeerAddr>()
                .map_err(|e| format!("member {id}'s address `{addr}`: {e}"))?;
            Ok((id, addr))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_answer_names_its_members_or_is_refused() {
        let answer = json!({"ok": true, "group": 0, "leader": 2, "members": [
            {"id": 2, "addr": "127.0.0.1:7002", "role": "voter"},
            {"id": 3, "addr": "db-3:7003", "role": "learner"},
        ]});
        let found = members(&answer).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(
            (found[1].0, found[1].1.to_string()),
            (3, "db-3:7003".into())
        );
        assert!(members(&json!({"ok": false, "error": "timed out"})).is_err());
        let no_addr = json!({"ok": true, "members": [{"id": 2, "addr": ""}]});
        assert!(members(&no_addr).is_err());
    }
}
