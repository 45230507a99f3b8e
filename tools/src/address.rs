//! `HOST:PORT` in every address flag: an IP address, or a host name
//! resolved once, when the command starts (containers and orchestrators
//! name their peers).

use std::net::{SocketAddr, ToSocketAddrs};

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

/// `text` as one socket address: an IP address as it is, a host name by
/// the system's resolver (its first IPv4 address, else its first address).
pub fn resolve(text: &str) -> Result<SocketAddr, AddressError> {
    let text = text.trim();
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let port_ok = text
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !port_ok {
        return Err(AddressError::NotHostAndPort(text.to_string()));
    }
    let found: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|source| AddressError::Unresolved {
            text: text.to_string(),
            source,
        })?
        .collect();
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
}
