//! The runtime: drives protocol replicas with the WAL and the transport.
//!
//! The embedding API is [`node`]: start a [`node::Node`] with your own
//! [`StateMachine`], talk to it through a [`node::NodeHandle`], and
//! optionally serve your own client protocol on a port of its own
//! ([`client_port::ClientService`]).

mod answering;
pub mod client_port;
pub mod codec;
mod cores;
mod data_dir;
pub mod error;
pub mod metrics;
pub mod node;
pub mod options;
mod peer_frames;
mod requests;
pub mod snapshot_file;
mod status;
mod window;

pub use crate::group::{snapshot, Applying, Capture, StateMachine};
pub mod group;

pub use group::{
    ChangeError, CommitStream, Committed, GroupHandle, GroupOptions, GroupStatus, MemberChange,
    MembershipView, PeerLink, ProposeOutcome, ReadOutcome, StatusView, SubscribeError,
    TransferError, CAUGHT_UP_SLOTS, TRANSFER_WAIT,
};
