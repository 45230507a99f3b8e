//! Simulated clients: one command outstanding per session, retried with the
//! same sequence number across timeouts, redirects and failovers.

use bytes::Bytes;

use crate::protocol::{ClientId, Refusal};

/// A command waiting for its acknowledgement.
#[derive(Clone, Debug)]
pub struct Pending {
    /// Its sequence number.
    pub seq: u64,
    /// Its bytes.
    pub data: Bytes,
    /// The tick it was last sent.
    pub sent_tick: u64,
    /// Resend at this tick even if nothing was heard.
    pub resend_tick: u64,
}

/// One client session.
#[derive(Clone, Debug)]
pub struct SimClient {
    /// The session id.
    pub id: ClientId,
    /// The node index it sends to.
    pub target: usize,
    /// Commands it may still issue.
    pub ops_left: u32,
    next_seq: u64,
    /// The outstanding command.
    pub pending: Option<Pending>,
}

impl SimClient {
    /// A client that will issue `ops` commands.
    pub fn new(id: ClientId, target: usize, ops: u32) -> SimClient {
        SimClient {
            id,
            target,
            ops_left: ops,
            next_seq: 1,
            pending: None,
        }
    }

    /// Starts the next command.
    pub fn issue(&mut self, tick: u64) -> &Pending {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.ops_left -= 1;
        let data = Bytes::from(format!("c{}-s{}", self.id.0, seq));
        self.pending.insert(Pending {
            seq,
            data,
            sent_tick: tick,
            resend_tick: tick,
        })
    }

    /// The node refused `seq`; choose where and when to try again.
    pub fn on_refused(&mut self, seq: u64, reason: Refusal, nodes: usize, tick: u64) {
        let Some(pending) = &mut self.pending else {
            return;
        };
        if pending.seq != seq {
            return;
        }
        match reason {
            Refusal::NotLeader(Some(hint)) => {
                self.target = hint.0 as usize - 1;
                pending.resend_tick = tick + 1;
            }
            Refusal::NotLeader(None) => {
                self.target = (self.target + 1) % nodes;
                pending.resend_tick = tick + 3;
            }
            Refusal::Busy | Refusal::TooLarge | Refusal::ReservedClient => {
                pending.resend_tick = tick + 5
            }
        }
    }

    /// The session was evicted and `seq` refused as expired: the command is
    /// given up (its outcome unknown if it was sent more than once; the
    /// checker never counts it), and the session starts again at
    /// `resume_at`.
    pub fn on_expired(&mut self, seq: u64, resume_at: u64) {
        if self.pending.as_ref().is_some_and(|p| p.seq == seq) {
            self.pending = None;
            self.next_seq = self.next_seq.max(resume_at);
        }
    }

    /// The command `seq` was applied; true if it was the outstanding one.
    pub fn on_acked(&mut self, seq: u64) -> bool {
        if self.pending.as_ref().is_some_and(|p| p.seq == seq) {
            self.pending = None;
            return true;
        }
        false
    }
}
