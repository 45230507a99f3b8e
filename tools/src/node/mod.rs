//! The node application: what `synod node` runs on the engine.
//!
//! - [`machine`]: the state machine of every group: a readable log of
//!   appends ([`log`]) and a KV store ([`kv`]) behind one tag byte.
//! - [`port`]: the client port's protocol (synod_client_proto), turned into
//!   calls on the engine's groups.
//! - [`client_error`]: every refusal a client can be told.

pub mod client_error;
pub mod kv;
pub mod log;
pub mod machine;
pub mod port;

use std::net::SocketAddr;

use synod_engine::runtime::node::{Node, NodeError, NodeOptions};

use machine::NodeMachine;
use port::NodePort;

/// Runs a node with the node machine in every group and its client port
/// on `client_listen`, until a core stops or SIGTERM or SIGINT asks it to
/// (it says so in its log, and stops every group before it exits). Blocks.
pub fn run(options: NodeOptions, client_listen: SocketAddr) -> Result<(), NodeError> {
    let port = NodePort::new(options.id);
    let node =
        Node::start_with_client_port(options, |_| NodeMachine::default(), client_listen, port)?;
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
    result
}
