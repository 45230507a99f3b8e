//! The runtime: drives protocol replicas with the WAL and the transport.

pub mod codec;
pub mod kv;

pub use crate::group::{snapshot, Applying, Capture, StateMachine};
pub mod group;

pub use group::{
    GroupHandle, GroupOptions, GroupStatus, PeerLink, ProposeOutcome, ReadOutcome, StatusView,
};
pub mod client_proto;
mod cores;
pub mod machine;
pub mod metrics;
pub mod node;
mod peer_frames;
mod readable_log;
pub mod snapshot_file;
mod window;
