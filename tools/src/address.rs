//! `HOST:PORT` in every address flag: an IP address or a host name
//! (containers and orchestrators name their peers). A node's peers are
//! looked up each time the node dials one ([`peer`]); every other address
//! (where a node listens, a client's `--cluster` and `--node`) is resolved
//! once, when the command starts ([`resolve`]).

use std::net::SocketAddr;

use synod_net::{NotHostAndPort, PeerAddr};

/// Why an address was refused.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    /// No `:PORT`, or a port that is not a number.
    #[error("`{0}` is not HOST:PORT")]
    NotHostAndPort(String),
    /// The name did not resolve.
    #[error("`{text}` does not resolve: {source}")]
    Unresolved {
        /// The address as given.
        text: String,
        /// The resolver's answer.
        source: std::io::Error,
    },
    /// The name resolved to no address.
    #[error("`{0}` resolves to no address")]
    NoAddress(String),
}

/// `text` as a peer's address, not looked up yet: the node resolves a
/// name each time it dials the peer.
pub fn peer(text: &str) -> Result<PeerAddr, AddressError> {
    text.parse()
        .map_err(|NotHostAndPort(text)| AddressError::NotHostAndPort(text))
}

/// `text` as one socket address: an IP address as it is, a host name by
/// the system's resolver (its first IPv4 address, else its first).
pub fn resolve(text: &str) -> Result<SocketAddr, AddressError> {
    let addr = peer(text)?;
    let text = text.trim();
    let found = addr
        .resolve_all()
        .map_err(|source| AddressError::Unresolved {
            text: text.to_string(),
            source,
        })?;
    found
        .iter()
        .find(|a| a.is_ipv4())
        .or(found.first())
        .copied()
        .ok_or_else(|| AddressError::NoAddress(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ips_pass_as_they_are_and_names_resolve() {
        assert_eq!(
            resolve("127.0.0.1:8001").unwrap(),
            "127.0.0.1:8001".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            resolve("[::1]:9").unwrap(),
            "[::1]:9".parse::<SocketAddr>().unwrap()
        );
        let local = resolve("localhost:27401").unwrap();
        assert_eq!(local.port(), 27401);
        assert!(local.ip().is_loopback(), "{local}");
        for bad in [
            "localhost",
            "localhost:port",
            ":80",
            "no-such-host.invalid:80",
        ] {
            assert!(resolve(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_peer_is_not_looked_up_until_it_is_dialed() {
        let later = peer("no-such-host.invalid:80").unwrap();
        assert_eq!(later.to_string(), "no-such-host.invalid:80");
        assert!(matches!(
            peer("localhost"),
            Err(AddressError::NotHostAndPort(_))
        ));
    }
}
