//! The node's client port: each `ClientRequest` frame becomes calls on its
//! group (propose, read, read_local, status) and one `ClientResponse`.
//!
//! The engine runs the port (a listener per core, bounded answers, the way
//! to each group's core) and hands this service the frames as they came.
//! An append to a group of the core that took it goes from the frame into
//! its command with one copy: the request is checked in place and only its
//! items are copied, tagged, into the commands. Anything else, or a group
//! on another core, is answered from an owned copy.

mod append;
mod members;
mod outcome;
mod watch;

use std::sync::Arc;

use synod_client_proto::{
    ArchivedClientOp, ArchivedClientRequest, ClientOp, ClientRequest, ClientResponse, KvOp,
    KvReply, NodeStatus, APPEND_BATCH_MAX, KIND_CLIENT_REPLY, KIND_CLIENT_REQUEST,
};
use synod_engine::archive::{deserialize, Aligned};
use synod_engine::protocol::{ClientId, NodeId};
use synod_engine::runtime::client_port::{ClientGroups, ClientReply, ClientService, LocalGroup};
use synod_engine::runtime::node::PeerAddr;
use synod_engine::runtime::{MemberChange, TransferError};

use super::client_error::ClientError;
use super::clock::now_ms;
use super::kv::KvCommand;
use super::lease_clock::Renewals;
use super::machine::{get_query, kv_command, log_query, prefix_query};
use append::{append, append_batch};
use outcome::{proposed, read};
use watch::watch;

/// The client protocol of a node running the [`NodeMachine`](super::machine::NodeMachine).
pub struct NodePort {
    /// This node, for `Status` replies.
    node: NodeId,
    /// Every member and its peer address (each group has them all).
    members: Vec<(NodeId, PeerAddr)>,
    /// Which leaderships have renewed their group's leases (KV writes
    /// wait for it; see `lease_clock`).
    renewals: Arc<Renewals>,
}

impl NodePort {
    /// The port of node `node`, one of `members`.
    pub fn new(
        node: NodeId,
        members: Vec<(NodeId, PeerAddr)>,
        renewals: Arc<Renewals>,
    ) -> NodePort {
        NodePort {
            node,
            members,
            renewals,
        }
    }

    /// Answers a request for a group of this core, checked in place.
    async fn answer_archived(
        &self,
        group: LocalGroup<'_>,
        archived: &ArchivedClientRequest,
    ) -> ClientResponse {
        match &archived.op {
            ArchivedClientOp::Append { client, seq, data } => {
                let (client, seq) = (ClientId(client.to_native()), seq.to_native());
                append(group, client, seq, data.as_slice()).await
            }
            ArchivedClientOp::AppendBatch { client, seq, items } => {
                // One past the limit is enough for `append_batch` to refuse.
                let items = items.iter().take(APPEND_BATCH_MAX + 1);
                let items: Vec<&[u8]> = items.map(|item| item.as_slice()).collect();
                let (client, seq) = (ClientId(client.to_native()), seq.to_native());
                append_batch(group, client, seq, &items).await
            }
            _ => match owned(archived) {
                Ok(request) => self.answer_op(group, request.group, request.op).await,
                Err(refused) => refused.into(),
            },
        }
    }

    /// Carries out one client operation on a group of this core.
    async fn answer_op(&self, group: LocalGroup<'_>, id: u32, op: ClientOp) -> ClientResponse {
        match op {
            ClientOp::Append { client, seq, data } => {
                append(group, ClientId(client), seq, &data).await
            }
            ClientOp::AppendBatch { client, seq, items } => {
                append_batch(group, ClientId(client), seq, &items).await
            }
            // The leader's clock is the lease clock's alone: a client's
            // renewing tick would keep every lease alive for ever.
            ClientOp::Kv {
                op: KvOp::Tick { .. },
                ..
            } => ClientError::LeaderOnly.into(),
            ClientOp::Kv { client, seq, op } => {
                let status = group.status();
                if status.leading && !self.renewals.renewed(id, status.promised) {
                    // A new leader: its clock stamps nothing before its
                    // leases are renewed (moments after it was elected).
                    return ClientResponse::Busy;
                }
                let command = kv_command(&KvCommand {
                    now_ms: now_ms(),
                    op,
                });
                let outcome = group.propose(ClientId(client), seq, command).await;
                proposed(outcome, |index, reply| match KvReply::decode(&reply) {
                    Ok(reply) => ClientResponse::Kv { index, reply },
                    Err(reason) => ClientError::MalformedReply(reason).into(),
                })
            }
            ClientOp::Get { key } => {
                read(
                    group.read(get_query(&key)).await,
                    |value| match KvReply::decode(&value) {
                        Ok(KvReply::Value(value)) => ClientResponse::Value(value),
                        Ok(other) => ClientError::UnexpectedReply(format!("{other:?}")).into(),
                        Err(reason) => ClientError::MalformedReply(reason).into(),
                    },
                )
            }
            ClientOp::ReadLog { from, count } => {
                // The machine answers a log read with the response itself.
                read(group.read_local(log_query(from, count)).await, as_response)
            }
            ClientOp::GetPrefix {
                prefix,
                after,
                limit,
            } => {
                let query = prefix_query(&prefix, after.as_deref(), limit);
                read(group.read(query).await, as_response)
            }
            ClientOp::Watch {
                prefix,
                from,
                skip,
                wait_ms,
            } => watch(group, &prefix, from, skip, wait_ms).await,
            ClientOp::Status => {
                let status = group.status();
                ClientResponse::Status {
                    node: self.node.0,
                    leader: status.leader.map(|l| l.0),
                    leading: status.leading,
                    applied: status.applied.0,
                    ballot: (status.promised.round, status.promised.node.0),
                }
            }
            ClientOp::TransferLeader { to } => match group.transfer_leadership(NodeId(to)).await {
                Ok(()) => ClientResponse::LeaderMoved { leader: to },
                Err(TransferError::NotLeader { leader }) => ClientResponse::NotLeader {
                    leader: leader.map(|l| l.0),
                },
                Err(error) => ClientResponse::Error(error.to_string()),
            },
            ClientOp::Members => members::list(group, self.node, &self.members),
            ClientOp::AddMember {
                id,
                addr,
                voter,
                wait_ms,
            } => {
                let change = members::add(id, addr, voter);
                members::change(group, self.node, &self.members, change, wait_ms).await
            }
            ClientOp::RemoveMember { id, wait_ms } => {
                let change = Ok(MemberChange::Remove(NodeId(id)));
                members::change(group, self.node, &self.members, change, wait_ms).await
            }
            ClientOp::NodeStatus => {
                let status = group.status();
                ClientResponse::NodeStatus(Box::new(NodeStatus {
                    node: self.node.0,
                    leader: status.leader.map(|l| l.0),
                    leading: status.leading,
                    applied: status.applied.0,
                    commit: status.commit.0,
                    ballot: (status.promised.round, status.promised.node.0),
                }))
            }
        }
    }
}

impl ClientService for NodePort {
    type Forwarded = ClientRequest;

    async fn answer(
        &self,
        groups: &ClientGroups<'_, ClientRequest>,
        kind: u16,
        body: &[u8],
    ) -> ClientReply {
        if kind != KIND_CLIENT_REQUEST {
            return reply(ClientError::UnknownKind(kind).into());
        }
        // Checked in place: appends to a group on this core go from the
        // frame into their commands with one copy, not through a `Vec` each.
        let body = Aligned::new(body);
        let archived = match body.access::<ArchivedClientRequest>() {
            Ok(archived) => archived,
            Err(reason) => return reply(ClientError::MalformedRequest(reason).into()),
        };
        let group = archived.group.to_native();
        if let Some(local) = groups.local(group) {
            return reply(self.answer_archived(local, archived).await);
        }
        // Another core's group, or none: an owned copy crosses to its core.
        let request = match owned(archived) {
            Ok(request) => request,
            Err(refused) => return reply(refused.into()),
        };
        groups
            .forward(group, request)
            .await
            .unwrap_or_else(|unreachable| reply(ClientError::from(unreachable).into()))
    }

    async fn answer_forwarded(&self, group: LocalGroup<'_>, request: ClientRequest) -> ClientReply {
        reply(self.answer_op(group, request.group, request.op).await)
    }
}

/// A response the machine made itself (log reads, prefix reads, watches).
fn as_response(bytes: bytes::Bytes) -> ClientResponse {
    ClientResponse::decode(&bytes)
        .unwrap_or_else(|reason| ClientError::MalformedReply(reason).into())
}

/// The reply frame of a response.
fn reply(response: ClientResponse) -> ClientReply {
    ClientReply {
        kind: KIND_CLIENT_REPLY,
        body: response.encode(),
    }
}

/// An owned copy of a request checked in place.
fn owned(archived: &ArchivedClientRequest) -> Result<ClientRequest, ClientError> {
    deserialize::<ClientRequest>(archived).map_err(ClientError::MalformedRequest)
}
