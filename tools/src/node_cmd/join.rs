//! `synod node --join`: a new node asks a running cluster who its members
//! are, so that it can start without `--peers` and wait to be added.
//!
//! What it learned is written to its data directory (`JOINED`) before it
//! starts, and a restart reads it there instead of asking again: a joined
//! node must come back after a whole-cluster outage too, when there is no
//! leader to ask until it is up. (The members added since are in its log,
//! and it reaches them from there.)

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use synod_client_proto::ClientOp;
use synod_engine::protocol::NodeId;
use synod_engine::runtime::node::{claim_data_dir, NodeOptions, PeerAddr};
use synod_net::Secret;

use super::error::SettingsError;
use super::Peers;

/// How long the cluster is given to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(30);

/// The file in a joined node's data directory that records the members it
/// learned when it joined.
pub const JOINED_FILE: &str = "JOINED";

/// Whom a joining node asks.
pub(super) struct Ask {
    /// Client addresses of running nodes.
    pub cluster: Vec<SocketAddr>,
    /// Groups `0..groups` are asked about.
    pub groups: u32,
    /// The client secret, if their ports need one.
    pub secret: Option<Secret>,
}

/// The peers a joining node starts with: the members the cluster named
/// (read from `data_dir` if recorded there before), with this node, `id`
/// at `listen`; and whether they are newly learned, to be recorded with
/// [`record`] once the data directory is claimed.
pub(super) fn peers(
    ask: Ask,
    id: u64,
    listen: &str,
    data_dir: &Path,
) -> Result<(Peers, bool), SettingsError> {
    let path = data_dir.join(JOINED_FILE);
    let (mut peers, learned) = match std::fs::read_to_string(&path) {
        Ok(text) => {
            let peers = recorded(&text).map_err(|reason| SettingsError::Join {
                group: 0,
                reason: format!("{}: {reason}", path.display()),
            })?;
            (peers, false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (asked(ask, id)?, true),
        Err(e) => {
            return Err(SettingsError::Join {
                group: 0,
                reason: format!("{}: {e}", path.display()),
            })
        }
    };
    peers.retain(|(peer, _)| peer.0 != id);
    let me = listen.parse().map_err(|e| SettingsError::Join {
        group: 0,
        reason: format!("--listen {listen}: {e}"),
    })?;
    peers.push((NodeId(id), me));
    peers.sort();
    Ok((Peers(peers), learned))
}

/// Records the peers of `options` (this node's own entry aside) in its
/// data directory, claimed for it first (a directory holding anything but
/// a node's own files is refused at start).
pub(super) fn record(options: &NodeOptions) -> Result<(), SettingsError> {
    let failed = |reason: String| SettingsError::Join { group: 0, reason };
    claim_data_dir(options).map_err(|e| failed(e.to_string()))?;
    let others: Vec<(NodeId, PeerAddr)> = options
        .peers
        .iter()
        .filter(|(id, _)| *id != options.id)
        .cloned()
        .collect();
    let path = options.data_dir.join(JOINED_FILE);
    write_record(&path, &others)
        .map_err(|e| failed(format!("recording the members in {}: {e}", path.display())))
}

/// The members a joined node recorded, one `ID=HOST:PORT` a line.
fn recorded(text: &str) -> Result<Vec<(NodeId, PeerAddr)>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (id, addr) = line
                .split_once('=')
                .ok_or(format!("`{line}` is not ID=HOST:PORT"))?;
            let id: u64 = id
                .trim()
                .parse()
                .map_err(|_| format!("`{id}` is not an id"))?;
            let addr = addr
                .trim()
                .parse::<PeerAddr>()
                .map_err(|e| format!("`{addr}`: {e}"))?;
            Ok((NodeId(id), addr))
        })
        .collect()
}

/// Writes the record whole or not at all (a temporary file renamed), and
/// makes it durable before the node starts.
fn write_record(path: &Path, peers: &[(NodeId, PeerAddr)]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let text: String = peers
        .iter()
        .map(|(id, addr)| format!("{}={addr}\n", id.0))
        .collect();
    let temporary = path.with_extension("new");
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The members of groups `0..groups`, each group's leader asked.
fn asked(ask: Ask, id: u64) -> Result<Vec<(NodeId, PeerAddr)>, SettingsError> {
    let Ask {
        cluster,
        groups,
        secret,
    } = ask;
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
    Ok(peers)
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

    /// A restart reads what the first start recorded, and asks no one.
    #[test]
    fn the_members_learned_are_recorded_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let learned = vec![
            (NodeId(2), "127.0.0.1:7002".parse().unwrap()),
            (NodeId(3), "db-3:7003".parse().unwrap()),
        ];
        write_record(&data_dir.join(JOINED_FILE), &learned).unwrap();
        // No cluster is reachable here: the record must be what answers.
        let nobody = Ask {
            cluster: vec!["127.0.0.1:1".parse().unwrap()],
            groups: 1,
            secret: None,
        };
        let (Peers(read), learned) = peers(nobody, 4, "127.0.0.1:7004", &data_dir).unwrap();
        assert!(!learned, "read back, not asked");
        let ids: Vec<u64> = read.iter().map(|(id, _)| id.0).collect();
        assert_eq!(ids, [2, 3, 4]);
        assert_eq!(read[1].1.to_string(), "db-3:7003");
        std::fs::write(data_dir.join(JOINED_FILE), "2 127.0.0.1:7002\n").unwrap();
        let nobody = Ask {
            cluster: vec![],
            groups: 1,
            secret: None,
        };
        assert!(
            peers(nobody, 4, "127.0.0.1:7004", &data_dir).is_err(),
            "a damaged record is an error"
        );
    }
}
