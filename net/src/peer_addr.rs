//! A peer's address as configured: an IP address, or a host name that the
//! transport resolves each time it dials (an orchestrator names a peer
//! before its address exists, and moves it to another address later).

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;

/// `HOST:PORT`, HOST an IP address (`[...]` around IPv6) or a host name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerAddr {
    host: Host,
    port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Host {
    Ip(IpAddr),
    Name(String),
}

/// Text that is not `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not HOST:PORT")]
pub struct NotHostAndPort(pub String);

impl PeerAddr {
    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The same host at another port.
    pub fn with_port(&self, port: u16) -> PeerAddr {
        PeerAddr {
            host: self.host.clone(),
            port,
        }
    }

    /// The address itself if the host is an IP address; `None` for a name.
    pub fn ip_addr(&self) -> Option<SocketAddr> {
        match &self.host {
            Host::Ip(ip) => Some(SocketAddr::new(*ip, self.port)),
            Host::Name(_) => None,
        }
    }

    /// Every address the host stands for now, by the system's resolver
    /// (blocking: off an executor's thread for a name).
    pub fn resolve_all(&self) -> io::Result<Vec<SocketAddr>> {
        match &self.host {
            Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, self.port)]),
            Host::Name(name) => Ok((name.as_str(), self.port).to_socket_addrs()?.collect()),
        }
    }

    /// The address to dial now: the host's first IPv4 address, else its
    /// first (blocking, like [`PeerAddr::resolve_all`]).
    pub fn resolve(&self) -> io::Result<SocketAddr> {
        let found = self.resolve_all()?;
        found
            .iter()
            .find(|a| a.is_ipv4())
            .or(found.first())
            .copied()
            .ok_or_else(|| {
                let message = format!("{self} resolves to no address");
                io::Error::new(io::ErrorKind::NotFound, message)
            })
    }
}

impl From<SocketAddr> for PeerAddr {
    fn from(addr: SocketAddr) -> PeerAddr {
        PeerAddr {
            host: Host::Ip(addr.ip()),
            port: addr.port(),
        }
    }
}

impl FromStr for PeerAddr {
    type Err = NotHostAndPort;

    fn from_str(text: &str) -> Result<PeerAddr, NotHostAndPort> {
        let text = text.trim();
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(addr.into());
        }
        let refused = || NotHostAndPort(text.to_string());
        let (host, port) = text.rsplit_once(':').ok_or_else(refused)?;
        let port = port.parse::<u16>().map_err(|_| refused())?;
        // A name is letters, digits, dots, hyphens and underscores; anything
        // else (a colon of an unbracketed IPv6 address, a space) is a typo.
        let name_like = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
        if host.is_empty() || !host.chars().all(name_like) {
            return Err(refused());
        }
        Ok(PeerAddr {
            host: Host::Name(host.to_string()),
            port,
        })
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(ip) => SocketAddr::new(*ip, self.port).fmt(f),
            Host::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ips_and_names_parse_and_print_as_written() {
        for text in [
            "127.0.0.1:7001",
            "[::1]:7001",
            "db-1.internal:7001",
            "localhost:9",
        ] {
            let addr: PeerAddr = text.parse().unwrap();
            assert_eq!(addr.to_string(), text);
        }
        let ip: PeerAddr = "10.0.0.1:7001".parse().unwrap();
        assert_eq!(ip.ip_addr(), Some("10.0.0.1:7001".parse().unwrap()));
        assert_eq!(ip.with_port(7003).to_string(), "10.0.0.1:7003");
        let name: PeerAddr = "db-1:7001".parse().unwrap();
        assert_eq!((name.ip_addr(), name.port()), (None, 7001));
        assert_eq!(name.with_port(7002).to_string(), "db-1:7002");
        for bad in [
            "localhost",
            "localhost:port",
            ":80",
            "::1:80",
            "a b:80",
            "host:70000",
        ] {
            assert_eq!(
                bad.parse::<PeerAddr>(),
                Err(NotHostAndPort(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn names_resolve_when_asked_and_a_name_that_does_not_is_an_error() {
        let local: PeerAddr = "localhost:27401".parse().unwrap();
        let addr = local.resolve().unwrap();
        assert!(addr.ip().is_loopback() && addr.port() == 27401, "{addr}");
        assert!(local.resolve_all().unwrap().contains(&addr));
        let nowhere: PeerAddr = "no-such-host.invalid:80".parse().unwrap();
        assert!(nowhere.resolve().is_err());
    }
}
