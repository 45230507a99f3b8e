//! `Members`, `AddMember` and `RemoveMember`: the group's configuration as
//! its leader sees it, and changes to it (the engine's `change_members`).

use std::time::Duration;

use synod_client_proto::{ClientResponse, Member};
use synod_engine::protocol::{Membership, NodeId, ADDR_BYTES_MAX};
use synod_engine::runtime::client_port::LocalGroup;
use synod_engine::runtime::node::PeerAddr;
use synod_engine::runtime::{ChangeError, MemberChange, MembershipView};

/// The longest a change may be waited for: a learner copying a large
/// state takes minutes, not hours.
const WAIT_MAX: Duration = Duration::from_secs(600);

/// The configuration in force, from the leader.
pub(super) fn list(
    group: LocalGroup<'_>,
    node: NodeId,
    known: &[(NodeId, PeerAddr)],
) -> ClientResponse {
    let status = group.status();
    if !status.leading {
        let leader = status.leader.map(|l| l.0);
        return ClientResponse::NotLeader { leader };
    }
    members(node, known, group.membership().map(|view| view.in_force))
}

/// An `AddMember`'s change, if its address is one.
pub(super) fn add(id: u64, addr: String, voter: bool) -> Result<MemberChange, String> {
    if addr.len() > ADDR_BYTES_MAX {
        return Err(format!("an address is at most {ADDR_BYTES_MAX} bytes"));
    }
    addr.parse::<PeerAddr>()
        .map_err(|e| format!("--addr: {e}"))?;
    Ok(MemberChange::Add {
        id: NodeId(id),
        addr,
        voter,
    })
}

/// Makes `change` at the leader and answers the configuration it made.
pub(super) async fn change(
    group: LocalGroup<'_>,
    node: NodeId,
    known: &[(NodeId, PeerAddr)],
    change: Result<MemberChange, String>,
    wait_ms: u32,
) -> ClientResponse {
    let change = match change {
        Ok(change) => change,
        Err(reason) => return ClientResponse::Error(reason),
    };
    let within = Duration::from_millis(u64::from(wait_ms)).min(WAIT_MAX);
    match group.change_members(change, within).await {
        // The configuration made is in force; asked again while it comes
        // into force, it is the next one.
        Ok(MembershipView { in_force, next }) => {
            let made = next.map_or(in_force, |(_, next)| next);
            members(node, known, Some(made))
        }
        Err(ChangeError::NotLeader { leader }) => ClientResponse::NotLeader {
            leader: leader.map(|l| l.0),
        },
        Err(error) => ClientResponse::Error(error.to_string()),
    }
}

/// `membership`'s members, each with its address: the one the
/// configuration carries, or else the one this node was started with.
fn members(
    node: NodeId,
    known: &[(NodeId, PeerAddr)],
    membership: Option<Membership>,
) -> ClientResponse {
    let addr_of = |id: NodeId| {
        known
            .iter()
            .find(|(peer, _)| *peer == id)
            .map(|(_, addr)| addr.to_string())
            .unwrap_or_default()
    };
    let members = match membership {
        Some(membership) => membership
            .members()
            .iter()
            .map(|m| Member {
                id: m.id.0,
                addr: if m.addr.is_empty() {
                    addr_of(m.id)
                } else {
                    m.addr.clone()
                },
                voter: m.voter,
            })
            .collect(),
        None => known
            .iter()
            .map(|(id, addr)| Member {
                id: id.0,
                addr: addr.to_string(),
                voter: true,
            })
            .collect(),
    };
    ClientResponse::Members {
        leader: node.0,
        members,
    }
}
