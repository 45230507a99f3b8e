//! The node application: what `synod node` runs on the engine.
//!
//! - [`machine`]: the state machine of every group: a readable log of
//!   appends ([`log`]) and a KV store ([`kv`]) behind one tag byte.
//! - [`port`]: the client port's protocol (synod_client_proto), turned into
//!   calls on the engine's groups.
//! - [`client_error`]: every refusal a client can be told.

pub mod client_error;
pub mod clock;
pub mod kv;
pub mod lease_clock;
pub mod log;
pub mod machine;
pub mod port;

use std::net::SocketAddr;

use synod_engine::runtime::node::{Node, NodeError, NodeOptions};

use lease_clock::Renewals;
use machine::NodeMachine;
use port::NodePort;

/// Runs a node with the node machine in every group and its client port
/// on `client_listen`, until a core stops or SIGTERM or SIGINT asks it to
/// (it says so in its log, and stops every group before it exits). Blocks.
pub fn run(options: NodeOptions, client_listen: SocketAddr) -> Result<(), RunError> {
    let groups = options.groups;
    let renewals = Renewals::new(groups);
    let port = NodePort::new(options.id, options.peers.clone(), renewals.clone());
    let node =
        Node::start_with_client_port(options, |_| NodeMachine::default(), client_listen, port)?;
    if let Err(error) = lease_clock::start(node.handle(), groups, renewals) {
        // Without it, leases never expire and KV writes stay refused.
        node.stopper().stop();
        let _ = node.wait();
        return Err(RunError::LeaseClock(error));
    }
    let stopper = node.stopper();
    let handled = ctrlc::set_handler(move || {
        tracing::info!("stopping: SIGTERM or SIGINT received");
        stopper.stop();
    });
    if let Err(error) = handled {
        tracing::warn!(%error, "no signal handler: SIGTERM ends the node without stopping its groups");
    }
    let result = node.wait();
    tracing::info!(ok = result.is_ok(), "stopped");
    Ok(result?)
}

/// Why a node stopped, or did not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The engine's node failed.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The thread that expires leases could not start.
    #[error("could not start the lease clock thread: {0}")]
    LeaseClock(std::io::Error),
}
