//! A replica's configuration, validated before it starts.

use thiserror::Error;

use super::batch::COMMAND_HEADER_BYTES;
use super::types::{GroupId, NodeId};

/// Members a group may have (quorums are tracked in a 64-bit set).
pub const MEMBERS_MAX: usize = 64;

/// Everything a replica needs to know before its first step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This replica.
    pub id: NodeId,
    /// The group's first configuration (its voters from slot 0 on; the
    /// configuration entries in the log change it). A node added later
    /// is not among them.
    pub members: Vec<NodeId>,
    /// Which group: rotates the election tie-break so leaders spread.
    pub group: GroupId,
    /// Slots the leader may have in flight beyond its commit point.
    pub pipeline_max: u32,
    /// Bytes of command records in one batch.
    pub batch_bytes_max: u32,
    /// Commands in one batch.
    pub batch_cmds_max: u32,
    /// Bytes of one command's data.
    pub command_bytes_max: u32,
    /// Bytes of commands the leader queues before refusing proposals.
    pub queue_bytes_max: u64,
    /// Ticks a partial batch may wait for more commands (0: cut at once).
    pub linger_ticks: u32,
    /// Ticks between the leader's heartbeats.
    pub heartbeat_ticks: u32,
    /// Ticks of silence after which a follower starts looking, and a leader
    /// that hears no majority steps down.
    pub election_timeout_ticks: u32,
    /// Ticks a looking node waits, once a majority holds its vote, for a
    /// better vote before it decides.
    pub finalize_ticks: u32,
    /// Ticks before an unanswered Prepare, Accept or catch-up is sent again.
    pub resend_ticks: u32,
    /// Slots in one catch-up message.
    pub catchup_slots_max: u32,
    /// Batch bytes in one Promise or CatchUp message (at least
    /// `batch_bytes_max`): larger answers come in pages, so every message
    /// fits in a frame.
    pub page_bytes_max: u32,
    /// Reads waiting for confirmation at the leader.
    pub reads_max: u32,
    /// Whether replicas elect a leader by themselves. Off, leadership is only
    /// taken by `Replica::campaign` (tests of basic Paxos duels).
    pub election_enabled: bool,
    /// Seeds the replica's jitter; the protocol has no other randomness.
    pub seed: u64,
}

impl Config {
    /// Defaults for a replica `id` of `members`.
    pub fn new(id: NodeId, members: Vec<NodeId>) -> Config {
        Config {
            id,
            members,
            group: GroupId(0),
            pipeline_max: 64,
            batch_bytes_max: 1 << 20,
            batch_cmds_max: 4096,
            command_bytes_max: 64 << 10,
            queue_bytes_max: 64 << 20,
            linger_ticks: 0,
            heartbeat_ticks: 2,
            election_timeout_ticks: 20,
            finalize_ticks: 2,
            resend_ticks: 6,
            catchup_slots_max: 256,
            page_bytes_max: 1 << 20,
            reads_max: 4096,
            election_enabled: true,
            seed: 0,
        }
    }

    /// Checks every bound; a replica refuses to start on an error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_members()?;
        positive("pipeline_max", self.pipeline_max.into())?;
        positive("batch_cmds_max", self.batch_cmds_max.into())?;
        positive("heartbeat_ticks", self.heartbeat_ticks.into())?;
        positive("resend_ticks", self.resend_ticks.into())?;
        positive("catchup_slots_max", self.catchup_slots_max.into())?;
        positive("reads_max", self.reads_max.into())?;
        at_most("pipeline_max", self.pipeline_max.into(), 1 << 16)?;
        let command_record = self.command_bytes_max as u64 + COMMAND_HEADER_BYTES as u64;
        if u64::from(self.batch_bytes_max) < command_record {
            return Err(ConfigError::Invalid {
                field: "batch_bytes_max",
                reason: format!("must hold one command of command_bytes_max ({command_record} bytes with its header)"),
            });
        }
        if self.page_bytes_max < self.batch_bytes_max {
            return Err(ConfigError::Invalid {
                field: "page_bytes_max",
                reason: "must hold at least one full batch".into(),
            });
        }
        if self.queue_bytes_max < u64::from(self.batch_bytes_max) {
            return Err(ConfigError::Invalid {
                field: "queue_bytes_max",
                reason: "must hold at least one full batch".into(),
            });
        }
        if self.heartbeat_ticks * 2 > self.election_timeout_ticks {
            return Err(ConfigError::Invalid {
                field: "election_timeout_ticks",
                reason: "must be at least twice heartbeat_ticks, or a healthy leader looks dead"
                    .into(),
            });
        }
        if self.finalize_ticks >= self.election_timeout_ticks {
            return Err(ConfigError::Invalid {
                field: "finalize_ticks",
                reason: "must be shorter than election_timeout_ticks".into(),
            });
        }
        Ok(())
    }

    fn validate_members(&self) -> Result<(), ConfigError> {
        let invalid = |reason: &str| {
            Err(ConfigError::Invalid {
                field: "members",
                reason: reason.into(),
            })
        };
        if self.members.is_empty() || self.members.len() > MEMBERS_MAX {
            return invalid("must list 1 to 64 nodes");
        }
        if self.members.contains(&NodeId(0)) {
            return invalid("node id 0 is reserved");
        }
        let mut sorted = self.members.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != self.members.len() {
            return invalid("lists a node twice");
        }
        Ok(())
    }

    /// Votes that make a majority.
    pub fn quorum(&self) -> usize {
        self.members.len() / 2 + 1
    }
}

fn positive(field: &'static str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::Invalid {
            field,
            reason: "must be positive".into(),
        });
    }
    Ok(())
}

fn at_most(field: &'static str, value: u64, max: u64) -> Result<(), ConfigError> {
    if value > max {
        return Err(ConfigError::Invalid {
            field,
            reason: format!("must be at most {max}"),
        });
    }
    Ok(())
}

/// A configuration the replica refuses.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// `field` is out of bounds.
    #[error("config field `{field}`: {reason}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Config {
        Config::new(NodeId(1), vec![NodeId(1), NodeId(2), NodeId(3)])
    }

    fn field_of(config: &Config) -> &'static str {
        match config.validate() {
            Err(ConfigError::Invalid { field, .. }) => field,
            Ok(()) => "ok",
        }
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(field_of(&three()), "ok");
        assert_eq!(three().quorum(), 2);
    }

    #[test]
    fn each_bound_names_its_field() {
        type Mutation = fn(&mut Config);
        let cases: Vec<(Mutation, &str)> = vec![
            (|c| c.members = vec![], "members"),
            (|c| c.members = vec![NodeId(1), NodeId(1)], "members"),
            (|c| c.members.push(NodeId(0)), "members"),
            (|c| c.pipeline_max = 0, "pipeline_max"),
            (|c| c.pipeline_max = 1 << 20, "pipeline_max"),
            (|c| c.batch_cmds_max = 0, "batch_cmds_max"),
            (|c| c.batch_bytes_max = 10, "batch_bytes_max"),
            (|c| c.queue_bytes_max = 1, "queue_bytes_max"),
            (|c| c.heartbeat_ticks = 0, "heartbeat_ticks"),
            (|c| c.election_timeout_ticks = 3, "election_timeout_ticks"),
            (|c| c.finalize_ticks = 100, "finalize_ticks"),
            (|c| c.resend_ticks = 0, "resend_ticks"),
            (|c| c.catchup_slots_max = 0, "catchup_slots_max"),
            (|c| c.reads_max = 0, "reads_max"),
            (|c| c.page_bytes_max = 10, "page_bytes_max"),
        ];
        for (mutate, field) in cases {
            let mut config = three();
            mutate(&mut config);
            assert_eq!(field_of(&config), field);
        }
    }
}
