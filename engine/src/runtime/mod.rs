//! The runtime: drives protocol replicas with the WAL and the transport.

mod apply;
mod archive;
pub mod codec;
pub mod kv;
pub mod state_machine;

pub use state_machine::{Applying, Capture, StateMachine};
pub mod group;

pub use group::{
    GroupHandle, GroupOptions, GroupStatus, PeerLink, ProposeOutcome, ReadOutcome, StatusView,
};
pub mod client_proto;
mod cores;
pub mod machine;
pub mod metrics;
pub mod node;
mod readable_log;
pub mod snapshot;
mod waiters;
mod window;
