//! The transport's configuration, validated before anything starts.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use synod_wal::frame::{frame_bytes, FRAME_BODY_BYTES_MAX};

use crate::{NodeId, PeerAddr};

/// The shared cluster secret. Never printed, never sent.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Fewer bytes than this is refused by `validate`.
    pub const BYTES_MIN: usize = 16;

    /// Wraps secret bytes (read from a secret file by the caller).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Secret {
        Secret(bytes.into())
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret(<{} bytes>)", self.0.len())
    }
}

/// What a `Transport` needs. One per core: `listen` and the peers'
/// addresses are this core's (the runtime derives a port per core); core i
/// only ever talks to core i, which the handshake checks.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// Connections from another cluster are refused.
    pub cluster_id: u64,
    /// What the embedder's replicas must agree on beyond the cluster, as
    /// one opaque number (the engine packs its session bounds into it);
    /// connections declaring another are refused. 0 by default.
    pub compat: u64,
    /// Encrypt the bodies of data frames (ChaCha20 under the batch MAC);
    /// off by default: frames are then authenticated, not secret. Both
    /// ends must agree, or the handshake refuses (`Incompatible`).
    pub encrypt: bool,
    /// This node.
    pub node_id: NodeId,
    /// This executor's core index; both ends of a connection must agree.
    pub core: u32,
    /// The shared secret both ends prove they know.
    pub secret: Secret,
    /// Every node of the cluster and its address for this core (this node
    /// may be listed; it is skipped). Lower ids dial higher ids; a host
    /// name is resolved at each dial.
    pub peers: Vec<(NodeId, PeerAddr)>,
    /// Where this core accepts peer connections.
    pub listen: SocketAddr,
    /// Largest frame body sent or accepted; a longer length field closes the
    /// connection before anything is buffered.
    pub frame_body_bytes_max: u32,
    /// Bytes queued per peer (pending plus being written) before `send`
    /// returns `QueueFull`.
    pub peer_queue_bytes_max: usize,
    /// Inbound batches (one per socket read) buffered for the inbox before
    /// the readers stop reading, which pushes back on the senders.
    pub inbox_batches_max: usize,
    /// TCP connect limit.
    pub connect_timeout: Duration,
    /// Limit on the whole handshake, both sides.
    pub handshake_timeout: Duration,
    /// First reconnect delay; doubles per failure up to `backoff_max`, with
    /// jitter.
    pub backoff_min: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// How long a listen port still in use is waited for (see
    /// [`crate::BIND_BUSY_WAIT`]).
    pub bind_busy_wait: Duration,
}

/// A config that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A field is out of range.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

impl PeerConfig {
    /// A config with the defaults: 1 MiB frames, 8 MiB per peer queue,
    /// 64 inbox batches, 1 s connect, 2 s handshake, 50 ms..2 s backoff.
    pub fn new<A: Into<PeerAddr>>(
        cluster_id: u64,
        node_id: NodeId,
        secret: Secret,
        listen: SocketAddr,
        peers: Vec<(NodeId, A)>,
    ) -> PeerConfig {
        let peers = peers.into_iter().map(|(id, a)| (id, a.into())).collect();
        PeerConfig {
            cluster_id,
            compat: 0,
            encrypt: false,
            node_id,
            core: 0,
            secret,
            peers,
            listen,
            frame_body_bytes_max: 1 << 20,
            peer_queue_bytes_max: 8 << 20,
            inbox_batches_max: 64,
            connect_timeout: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(2),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            bind_busy_wait: crate::listen::BIND_BUSY_WAIT,
        }
    }

    /// Checks every limit; `Transport::start` calls it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.secret.bytes().len() < Secret::BYTES_MIN {
            return Err(invalid(
                "secret",
                format!("fewer than {} bytes", Secret::BYTES_MIN),
            ));
        }
        validate_frame_limits(self.frame_body_bytes_max, self.peer_queue_bytes_max)?;
        if self.inbox_batches_max == 0 {
            return Err(invalid("inbox_batches_max", "must be at least 1"));
        }
        for (field, d) in [
            ("connect_timeout", self.connect_timeout),
            ("handshake_timeout", self.handshake_timeout),
            ("backoff_min", self.backoff_min),
        ] {
            if d.is_zero() {
                return Err(invalid(field, "must be above zero"));
            }
        }
        if self.backoff_max < self.backoff_min {
            return Err(invalid("backoff_max", "below backoff_min"));
        }
        self.validate_peers()
    }

    fn validate_peers(&self) -> Result<(), ConfigError> {
        let mut ids = HashSet::new();
        for (id, _) in &self.peers {
            if !ids.insert(*id) {
                return Err(invalid("peers", format!("{id} listed twice")));
            }
        }
        Ok(())
    }

    /// The peers other than this node, in id order.
    pub(crate) fn remote_peers(&self) -> Vec<(NodeId, PeerAddr)> {
        let mut peers: Vec<_> = self
            .peers
            .iter()
            .filter(|(id, _)| *id != self.node_id)
            .cloned()
            .collect();
        peers.sort();
        peers
    }
}

/// Frame size within the format's ceiling, and a queue that holds at least
/// one largest frame (else a maximal frame could never be sent).
pub(crate) fn validate_frame_limits(
    frame_body_bytes_max: u32,
    queue_bytes_max: usize,
) -> Result<(), ConfigError> {
    if frame_body_bytes_max == 0 || frame_body_bytes_max > FRAME_BODY_BYTES_MAX {
        return Err(invalid(
            "frame_body_bytes_max",
            format!("must be in 1..={FRAME_BODY_BYTES_MAX}"),
        ));
    }
    if queue_bytes_max < frame_bytes(frame_body_bytes_max as usize) {
        return Err(invalid(
            "queue_bytes_max",
            "must hold at least one frame of frame_body_bytes_max",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PeerConfig {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        PeerConfig::new(
            1,
            NodeId(1),
            Secret::new([7; 32]),
            addr,
            vec![(NodeId(1), addr)],
        )
    }

    type Breaker = fn(&mut PeerConfig);

    #[test]
    fn defaults_validate_and_each_bad_field_is_named() {
        assert_eq!(config().validate(), Ok(()));
        let cases: Vec<(&str, Breaker)> = vec![
            ("secret", |c| c.secret = Secret::new([1; 8])),
            ("frame_body_bytes_max", |c| c.frame_body_bytes_max = 0),
            ("queue_bytes_max", |c| c.peer_queue_bytes_max = 100),
            ("inbox_batches_max", |c| c.inbox_batches_max = 0),
            ("connect_timeout", |c| c.connect_timeout = Duration::ZERO),
            ("handshake_timeout", |c| {
                c.handshake_timeout = Duration::ZERO
            }),
            ("backoff_max", |c| c.backoff_max = Duration::from_millis(1)),
            ("peers", |c| c.peers.push(c.peers[0].clone())),
        ];
        for (field, break_it) in cases {
            let mut c = config();
            break_it(&mut c);
            match c.validate() {
                Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn secret_debug_hides_bytes() {
        assert_eq!(format!("{:?}", Secret::new([42; 16])), "Secret(<16 bytes>)");
    }
}
