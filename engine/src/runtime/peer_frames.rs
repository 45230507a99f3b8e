//! Peer frames arriving on a core: decoded and handed to their group.

use std::time::Duration;

use bytes::Bytes;
use rkyv::util::AlignedVec;
use synod_net::Inbox;

use super::codec::{BatchLimits, PeerFrame, KIND_PEER_MESSAGE};
use super::group::Groups;
use crate::group::snapshot::{
    decode_chunk, decode_wanted, KIND_SNAPSHOT_CHUNK, KIND_SNAPSHOT_WANTED,
};
use crate::protocol::NodeId;

/// Routes every frame of `inbox`, addressed to node `me`, to its group
/// among `groups`; a frame that does not decode, or names no group here, is
/// logged and dropped. The sender is the peer the transport authenticated.
pub(super) fn route_peer_frames(
    groups: &Groups,
    mut inbox: Inbox,
    me: NodeId,
    limits: BatchLimits,
) {
    let routes = groups.clone();
    glommio::spawn_local(async move {
        while let Some(message) = inbox.recv().await {
            let from = NodeId(message.from.0);
            if message.kind == KIND_SNAPSHOT_CHUNK {
                route_chunk(&routes, from, &message.body).await;
                continue;
            }
            if message.kind == KIND_SNAPSHOT_WANTED {
                route_wanted(&routes, from, &message.body);
                continue;
            }
            if message.kind != KIND_PEER_MESSAGE {
                tracing::warn!(
                    from = from.0,
                    kind = message.kind,
                    "unknown peer frame kind; dropped"
                );
                continue;
            }
            match PeerFrame::decode(aligned(message.body), from, me, limits) {
                Ok(frame) => match routes.get(&frame.group().0) {
                    Some((handle, _)) => {
                        handle.try_deliver(frame);
                    }
                    None => tracing::warn!(
                        from = from.0,
                        group = frame.group().0,
                        "message for a group not on this core"
                    ),
                },
                Err(error) => {
                    tracing::warn!(from = from.0, %error, "undecodable peer message; dropped")
                }
            }
        }
    })
    .detach();
}

/// How long a snapshot chunk waits for room in its group's queue. Every
/// peer frame of this core waits behind it, so well below an election
/// timeout.
const CHUNK_DELIVERY_PATIENCE: Duration = Duration::from_millis(50);

/// Hands a snapshot chunk from a peer to its group.
async fn route_chunk(groups: &Groups, from: NodeId, body: &[u8]) {
    match decode_chunk(body) {
        Ok((group, chunk)) => match groups.get(&group.0) {
            Some((handle, _)) => {
                if !handle
                    .deliver_chunk(from, chunk, CHUNK_DELIVERY_PATIENCE)
                    .await
                {
                    tracing::debug!(
                        from = from.0,
                        group = group.0,
                        "snapshot chunk found its group's queue full; the group asks for the rest"
                    );
                }
            }
            None => tracing::warn!(
                from = from.0,
                group = group.0,
                "snapshot chunk for a group not on this core"
            ),
        },
        Err(error) => tracing::warn!(from = from.0, %error, "undecodable snapshot chunk; dropped"),
    }
}

/// Hands a peer's ask for the rest of our snapshot to its group, if its
/// queue has room (the peer asks again otherwise).
fn route_wanted(groups: &Groups, from: NodeId, body: &[u8]) {
    match decode_wanted(body) {
        Ok((group, upto, offset)) => match groups.get(&group.0) {
            Some((handle, _)) => {
                handle.try_deliver_wanted(from, upto, offset);
            }
            None => tracing::warn!(
                from = from.0,
                group = group.0,
                "snapshot ask for a group not on this core"
            ),
        },
        Err(error) => tracing::warn!(from = from.0, %error, "undecodable snapshot ask; dropped"),
    }
}

/// Frame bodies must be 16-byte aligned for zero-copy access; one that is
/// not (a body at an odd place in a read buffer) is copied once.
fn aligned(body: Bytes) -> Bytes {
    if (body.as_ptr() as usize).is_multiple_of(16) {
        return body;
    }
    let mut copy = AlignedVec::<16>::new();
    copy.extend_from_slice(&body);
    Bytes::from_owner(copy)
}
