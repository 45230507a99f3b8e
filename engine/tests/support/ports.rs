//! Free loopback ports for tests that start nodes, shared by the engine's
//! and the CLI's integration tests (each includes this file).

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::sync::Mutex;

/// A free port with the `run - 1` after it free too (core i of a node
/// listens on its port plus i). No port is handed out twice in this
/// process: tests run side by side, and one test's port, picked free and
/// released, could otherwise be picked again by another before its node
/// binds it.
pub fn free_ports(run: u16) -> SocketAddr {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap();
    loop {
        let first = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let Some(ports) = (0..run)
            .map(|i| first.port().checked_add(i))
            .collect::<Option<Vec<u16>>>()
        else {
            continue;
        };
        let held: Vec<TcpListener> = ports[1..]
            .iter()
            .filter_map(|port| TcpListener::bind(("127.0.0.1", *port)).ok())
            .collect();
        if held.len() + 1 == ports.len() && ports.iter().all(|p| !handed_out.contains(p)) {
            handed_out.extend(ports);
            return first;
        }
    }
}
