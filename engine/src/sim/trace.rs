//! One line of trace per input, for `synod sim --trace`.

use crate::group::{Callers, GroupInput};

/// One line of trace for an input.
pub(super) fn describe<C: Callers>(input: &GroupInput<C>) -> String {
    match input {
        GroupInput::Tick => "tick".into(),
        GroupInput::Message(e) => {
            format!("{} from n{}: {}", e.msg.kind(), e.from.0, brief(&e.msg))
        }
        GroupInput::Propose(proposals) => format!("propose {proposals:?}"),
        GroupInput::Persisted(s) => format!("persisted {s:?}"),
        GroupInput::Read(_, id) => format!("read {id:?}"),
        GroupInput::ReadLocal(_, id) => format!("local read {id:?}"),
        GroupInput::PeerUnreachable(p) => format!("n{} unreachable", p.0),
        GroupInput::TransferLeadership(to) => format!("hand leadership to n{}", to.0),
        GroupInput::SnapshotChunk(from, chunk) => format!(
            "snapshot chunk from n{} at {:?}, {}+{} of {}",
            from.0,
            chunk.upto,
            chunk.offset,
            chunk.data.len(),
            chunk.total
        ),
        GroupInput::SnapshotWanted { from, upto, offset } => {
            format!("n{} asks for snapshot {upto:?} from {offset}", from.0)
        }
        GroupInput::SnapshotSaved { upto, .. } => format!("snapshot at {upto:?} saved"),
        GroupInput::SnapshotSkipped(upto) => format!("snapshot at {upto:?} skipped"),
    }
}

fn brief(msg: &crate::protocol::Message) -> String {
    use crate::protocol::Message as M;
    match msg {
        M::Prepare(m) => format!("ballot {} from {:?}", m.ballot, m.from_slot),
        M::Promise(m) => format!("ballot {} with {} entries", m.ballot, m.entries.len()),
        M::Nack(m) => format!("ballot {} promised {}", m.ballot, m.promised),
        M::Accept(m) => format!(
            "ballot {} {:?} ({} cmds) commit {:?}",
            m.ballot,
            m.slot,
            m.batch.len(),
            m.commit
        ),
        M::Accepted(m) => format!("ballot {} {:?}", m.ballot, m.slot),
        M::Heartbeat(m) => format!("ballot {} commit {:?}", m.ballot, m.commit),
        M::HeartbeatAck(m) => format!("ballot {}", m.ballot),
        M::CatchUpRequest(m) => format!("from {:?}", m.from_slot),
        M::CatchUp(m) => format!("{} entries, commit {:?}", m.entries.len(), m.commit),
        M::Notification(m) => format!("round {} {:?}", m.round, m.state),
        M::Rejoin(m) => format!("floor {:?}", m.floor),
        M::RejoinInfo(m) => format!("promised {} recovery end {:?}", m.promised, m.recovery_end),
        M::TakeOver(m) => format!("from the leader of {}", m.ballot),
    }
}
