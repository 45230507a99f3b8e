//! The peer handshake: who is on the other end, and does it know the secret.
//!
//! ```text
//! dialer (lower id)                                   acceptor
//!   HELLO cluster, compat, encrypt, dialer, acceptor, core, nonce_d
//!                                                  ──▶ checks cluster, compat, encrypt, ids, core
//!   checks cluster, compat, encrypt, id, core
//!                ◀── CHALLENGE cluster, compat, encrypt, acceptor, core, nonce_a
//!   PROOF mac_d                                    ──▶ verifies mac_d
//!   verifies mac_a           ◀── WELCOME mac_a          data frames follow
//! ```
//!
//! The dialer proves first, so the acceptor hands no proof of its own to an
//! unauthenticated stranger; the dialer only talks to configured addresses.
//!
//! `compat` is the embedder's: whatever its replicas must agree on beyond
//! the cluster (the engine puts its session bounds there), compared as an
//! opaque number.
//!
//! `mac_x = HMAC-SHA256(secret, label_x ‖ cluster ‖ compat ‖ encrypt ‖ dialer ‖
//! acceptor ‖ core ‖ nonce_d ‖ nonce_a)`, with a different label per role so one side's
//! proof can never be replayed as the other's. The same construction with
//! two more labels gives each direction its key for the data frames that
//! follow (`auth.rs`). Both nonces are fresh
//! (32 random bytes per connection), so a recorded handshake proves nothing
//! later. The secret never crosses the wire; MACs are compared in constant
//! time (`verify_slice`). Bodies are fixed little-endian layouts, not rkyv:
//! they are tiny and must be checkable before anything is trusted.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Secret;
use crate::NodeId;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of each side's nonce.
pub const NONCE_BYTES: usize = 32;
/// Bytes of an HMAC-SHA256 tag.
pub const MAC_BYTES: usize = 32;

const LABEL_DIALER: &[u8] = b"synod-net v3 dialer proof";
const LABEL_ACCEPTOR: &[u8] = b"synod-net v3 acceptor proof";
const LABEL_DIALER_FRAMES: &[u8] = b"synod-net v3 dialer frames";
const LABEL_ACCEPTOR_FRAMES: &[u8] = b"synod-net v3 acceptor frames";

/// Why a handshake was refused; each has its own counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RefuseReason {
    /// The other side belongs to another cluster.
    WrongCluster,
    /// The node id is not a configured peer (or is this node, or is not the
    /// node that was dialed).
    UnknownNode,
    /// The other side runs a different core index.
    WrongCore,
    /// The other side's embedder declares another `compat` (a build
    /// whose replicas would not agree with ours).
    Incompatible,
    /// The proof does not verify: a different secret.
    BadProof,
    /// Not a handshake message, or a malformed one.
    Malformed,
    /// The handshake did not finish in time.
    Timeout,
    /// The connection failed or closed during the handshake.
    Io,
    /// Too many handshakes were in progress: closed at accept.
    Busy,
}

impl RefuseReason {
    /// Every reason, for counters.
    pub const ALL: [RefuseReason; 9] = [
        RefuseReason::WrongCluster,
        RefuseReason::UnknownNode,
        RefuseReason::WrongCore,
        RefuseReason::Incompatible,
        RefuseReason::BadProof,
        RefuseReason::Malformed,
        RefuseReason::Timeout,
        RefuseReason::Io,
        RefuseReason::Busy,
    ];

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// The dialer's first message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The dialer's cluster.
    pub cluster_id: u64,
    /// The dialer's embedder's compatibility number.
    pub compat: u64,
    /// Whether the dialer encrypts frame bodies.
    pub encrypt: bool,
    /// The dialer.
    pub dialer: NodeId,
    /// The node the dialer means to reach.
    pub acceptor: NodeId,
    /// The dialer's core.
    pub core: u32,
    /// The dialer's fresh nonce.
    pub nonce: [u8; NONCE_BYTES],
}

/// The acceptor's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The acceptor's cluster.
    pub cluster_id: u64,
    /// The acceptor's embedder's compatibility number.
    pub compat: u64,
    /// Whether the acceptor encrypts frame bodies.
    pub encrypt: bool,
    /// The acceptor.
    pub acceptor: NodeId,
    /// The acceptor's core.
    pub core: u32,
    /// The acceptor's fresh nonce.
    pub nonce: [u8; NONCE_BYTES],
}

/// Bytes of a HELLO body.
pub const HELLO_BYTES: usize = 8 + 8 + 1 + 8 + 8 + 4 + NONCE_BYTES;
/// Bytes of a CHALLENGE body.
pub const CHALLENGE_BYTES: usize = 8 + 8 + 1 + 8 + 4 + NONCE_BYTES;

/// A little-endian cursor that fails instead of panicking.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_at_checked(N)?;
        self.0 = rest;
        head.try_into().ok()
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn flag(&mut self) -> Option<bool> {
        match self.take::<1>()? {
            [0] => Some(false),
            [1] => Some(true),
            _ => None,
        }
    }
}

impl Hello {
    /// The body bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HELLO_BYTES);
        out.extend_from_slice(&self.cluster_id.to_le_bytes());
        out.extend_from_slice(&self.compat.to_le_bytes());
        out.push(u8::from(self.encrypt));
        out.extend_from_slice(&self.dialer.0.to_le_bytes());
        out.extend_from_slice(&self.acceptor.0.to_le_bytes());
        out.extend_from_slice(&self.core.to_le_bytes());
        out.extend_from_slice(&self.nonce);
        out
    }

    /// Parses a body of exactly [`HELLO_BYTES`].
    pub fn decode(body: &[u8]) -> Option<Hello> {
        if body.len() != HELLO_BYTES {
            return None;
        }
        let mut c = Cursor(body);
        Some(Hello {
            cluster_id: c.u64()?,
            compat: c.u64()?,
            encrypt: c.flag()?,
            dialer: NodeId(c.u64()?),
            acceptor: NodeId(c.u64()?),
            core: c.u32()?,
            nonce: c.take()?,
        })
    }
}

impl Challenge {
    /// The body bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(CHALLENGE_BYTES);
        out.extend_from_slice(&self.cluster_id.to_le_bytes());
        out.extend_from_slice(&self.compat.to_le_bytes());
        out.push(u8::from(self.encrypt));
        out.extend_from_slice(&self.acceptor.0.to_le_bytes());
        out.extend_from_slice(&self.core.to_le_bytes());
        out.extend_from_slice(&self.nonce);
        out
    }

    /// Parses a body of exactly [`CHALLENGE_BYTES`].
    pub fn decode(body: &[u8]) -> Option<Challenge> {
        if body.len() != CHALLENGE_BYTES {
            return None;
        }
        let mut c = Cursor(body);
        Some(Challenge {
            cluster_id: c.u64()?,
            compat: c.u64()?,
            encrypt: c.flag()?,
            acceptor: NodeId(c.u64()?),
            core: c.u32()?,
            nonce: c.take()?,
        })
    }
}

/// Which side a proof is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The side that connected.
    Dialer,
    /// The side that accepted.
    Acceptor,
}

/// Everything both sides agree on once HELLO and CHALLENGE are exchanged.
#[derive(Clone, Copy, Debug)]
pub struct Transcript {
    /// Shared cluster id.
    pub cluster_id: u64,
    /// Shared compatibility number.
    pub compat: u64,
    /// Whether frame bodies are encrypted (in the proofs, so a stripped
    /// flag fails them).
    pub encrypt: bool,
    /// The dialer.
    pub dialer: NodeId,
    /// The acceptor.
    pub acceptor: NodeId,
    /// Shared core index.
    pub core: u32,
    /// The dialer's nonce.
    pub nonce_dialer: [u8; NONCE_BYTES],
    /// The acceptor's nonce.
    pub nonce_acceptor: [u8; NONCE_BYTES],
}

impl Transcript {
    fn mac(&self, secret: &Secret, role: Role) -> HmacSha256 {
        self.keyed(
            secret,
            match role {
                Role::Dialer => LABEL_DIALER,
                Role::Acceptor => LABEL_ACCEPTOR,
            },
        )
    }

    fn keyed(&self, secret: &Secret, label: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(secret.bytes()).expect("HMAC takes any key size");
        mac.update(label);
        mac.update(&self.cluster_id.to_le_bytes());
        mac.update(&self.compat.to_le_bytes());
        mac.update(&[u8::from(self.encrypt)]);
        mac.update(&self.dialer.0.to_le_bytes());
        mac.update(&self.acceptor.0.to_le_bytes());
        mac.update(&self.core.to_le_bytes());
        mac.update(&self.nonce_dialer);
        mac.update(&self.nonce_acceptor);
        mac
    }

    /// `role`'s proof that it knows `secret`.
    pub fn prove(&self, secret: &Secret, role: Role) -> [u8; MAC_BYTES] {
        self.mac(secret, role).finalize().into_bytes().into()
    }

    /// The key that authenticates the data frames `role` sends on this
    /// connection: fresh per connection (both nonces), apart per direction
    /// (a label each), and never a proof (another label).
    pub fn frame_key(&self, secret: &Secret, role: Role) -> [u8; MAC_BYTES] {
        let label = match role {
            Role::Dialer => LABEL_DIALER_FRAMES,
            Role::Acceptor => LABEL_ACCEPTOR_FRAMES,
        };
        self.keyed(secret, label).finalize().into_bytes().into()
    }

    /// Constant-time check of `role`'s proof.
    pub fn verify(&self, secret: &Secret, role: Role, proof: &[u8]) -> bool {
        self.mac(secret, role).verify_slice(proof).is_ok()
    }
}

/// A fresh random nonce.
pub fn nonce() -> [u8; NONCE_BYTES] {
    rand::random()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript() -> Transcript {
        Transcript {
            cluster_id: 9,
            compat: 4,
            encrypt: false,
            dialer: NodeId(1),
            acceptor: NodeId(2),
            core: 0,
            nonce_dialer: nonce(),
            nonce_acceptor: nonce(),
        }
    }

    #[test]
    fn proofs_verify_only_with_the_secret_the_role_and_the_nonces() {
        let secret = Secret::new([1; 32]);
        let t = transcript();
        let proof = t.prove(&secret, Role::Dialer);
        assert!(t.verify(&secret, Role::Dialer, &proof));
        assert!(!t.verify(&secret, Role::Acceptor, &proof));
        assert!(!t.verify(&Secret::new([2; 32]), Role::Dialer, &proof));
        let mut other = t;
        other.nonce_acceptor[0] ^= 1;
        assert!(!other.verify(&secret, Role::Dialer, &proof));
        let mut other = t;
        other.compat += 1;
        assert!(!other.verify(&secret, Role::Dialer, &proof));
        let mut other = t;
        other.encrypt = true;
        assert!(!other.verify(&secret, Role::Dialer, &proof));
        assert!(!t.verify(&secret, Role::Dialer, &proof[..31]));
    }

    #[test]
    fn messages_round_trip_and_refuse_wrong_lengths() {
        let hello = Hello {
            cluster_id: 3,
            compat: 11,
            encrypt: true,
            dialer: NodeId(1),
            acceptor: NodeId(2),
            core: 5,
            nonce: nonce(),
        };
        assert_eq!(Hello::decode(&hello.encode()), Some(hello));
        assert_eq!(Hello::decode(&hello.encode()[1..]), None);
        let mut bad_flag = hello.encode();
        bad_flag[16] = 2;
        assert_eq!(Hello::decode(&bad_flag), None);
        let challenge = Challenge {
            cluster_id: 3,
            compat: 11,
            encrypt: false,
            acceptor: NodeId(2),
            core: 5,
            nonce: nonce(),
        };
        assert_eq!(Challenge::decode(&challenge.encode()), Some(challenge));
        assert_eq!(Challenge::decode(&[0; 3]), None);
    }
}
