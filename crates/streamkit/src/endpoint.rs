//! Endpoint URLs: `tcp://host:port`, `unix:///path`, `inproc://name`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Where a peer binds or connects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A TCP address. `host` is a name, an IPv4 address or a bracket-less IPv6 address.
    Tcp {
        /// Host name or address.
        host: String,
        /// Port (0 when binding picks one).
        port: u16,
    },
    /// A Unix-domain socket path.
    Unix(PathBuf),
    /// An in-process endpoint name.
    Inproc(String),
}

/// An endpoint URL that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid endpoint {url:?}: {why}")]
pub struct EndpointError {
    url: String,
    why: &'static str,
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(url: &str) -> Result<Endpoint, EndpointError> {
        let err = |why| EndpointError {
            url: url.to_owned(),
            why,
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| err("expected tcp://host:port, unix:///path or inproc://name"))?;
        match scheme {
            "tcp" => {
                let rest = rest.trim_end_matches('/');
                let (host, port) = rest.rsplit_once(':').ok_or_else(|| err("missing :port"))?;
                let port: u16 = port
                    .parse()
                    .map_err(|_| err("port is not a number from 0 to 65535"))?;
                let host = host
                    .strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap_or(host);
                if host.is_empty() {
                    return Err(err("missing host"));
                }
                if host.contains(['/', ' '])
                    || (host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err())
                {
                    return Err(err("invalid host"));
                }
                Ok(Endpoint::Tcp {
                    host: host.to_owned(),
                    port,
                })
            }
            "unix" => {
                if rest.is_empty() {
                    return Err(err("missing socket path"));
                }
                Ok(Endpoint::Unix(PathBuf::from(rest)))
            }
            "inproc" => {
                if rest.is_empty() {
                    return Err(err("missing name"));
                }
                Ok(Endpoint::Inproc(rest.to_owned()))
            }
            _ => Err(err("unknown scheme (use tcp, unix or inproc)")),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp { host, port } if host.contains(':') => {
                write!(f, "tcp://[{host}]:{port}")
            }
            Endpoint::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Inproc(n) => write!(f, "inproc://{n}"),
        }
    }
}

impl Endpoint {
    /// Parses an endpoint URL.
    pub fn parse(url: &str) -> Result<Endpoint, EndpointError> {
        url.parse()
    }

    /// The names a `known_hosts` entry may use for this endpoint.
    pub(crate) fn known_host_names(&self) -> Vec<String> {
        match self {
            Endpoint::Tcp { host, port } => vec![crate::trust::host_port_name(host, *port)],
            Endpoint::Unix(p) => vec![p.display().to_string()],
            Endpoint::Inproc(n) => vec![n.clone()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for url in [
            "tcp://127.0.0.1:7000",
            "tcp://[::1]:80",
            "tcp://example.com:0",
            "unix:///tmp/a b.sock",
            "inproc://x",
        ] {
            let ep: Endpoint = url.parse().unwrap();
            assert_eq!(ep.to_string(), url);
        }
        assert_eq!(
            "tcp://h:1".parse::<Endpoint>().unwrap(),
            Endpoint::Tcp {
                host: "h".into(),
                port: 1
            }
        );
    }

    #[test]
    fn refuses_bad_urls() {
        for url in [
            "",
            "tcp://",
            "tcp://host",
            "tcp://:80",
            "tcp://h:99999",
            "http://x:1",
            "unix://",
            "inproc://",
            "tcp://a:b:1",
        ] {
            assert!(url.parse::<Endpoint>().is_err(), "{url}");
        }
    }
}
