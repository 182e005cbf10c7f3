//! Trust: which remote peers this peer accepts, and how it proves itself.
//!
//! Nothing is trusted by default. A [`Trust`] lists the keys of trusted peers
//! (directly, as fingerprints or as `authorized_keys` files), the host keys of
//! servers (`known_hosts`), and an optional token that clients may present instead
//! of a trusted key (SSH password authentication). Options that accept anyone are
//! named `danger_*`.
//!
//! Trusted peer keys apply in both directions: a key trusted here may connect to
//! this peer, and a server presenting it is accepted when this peer connects. Where
//! an entry binds a key to names (`name="..."` in `authorized_keys`, or
//! [`Trust::with_named_key`]), the remote must also claim one of those names.

mod files;

use std::path::Path;
use std::sync::Arc;

pub(crate) use files::host_port_name;
use files::{AuthorizedKey, KnownHost};

use crate::error::KeyError;
use crate::keys::PublicKey;

#[derive(Debug, Clone)]
enum KeyMatch {
    Key(PublicKey),
    Fingerprint(String),
}

#[derive(Debug, Clone)]
struct TrustedKey {
    matcher: KeyMatch,
    names: Vec<String>,
}

impl TrustedKey {
    fn matches_key(&self, key: &PublicKey) -> bool {
        match &self.matcher {
            KeyMatch::Key(k) => k == key,
            KeyMatch::Fingerprint(f) => *f == key.fingerprint(),
        }
    }

    fn allows_name(&self, name: &str) -> bool {
        self.names.is_empty() || self.names.iter().any(|n| n == name)
    }
}

/// How a remote peer proved who it is: the identity that holds its name while
/// its connection lives (see `docs/PROTOCOL.md` §3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RemoteIdentity {
    /// Its key (a client's key, or a server's host key).
    Key {
        /// The key's SHA-256 fingerprint (`SHA256:...`).
        fingerprint: String,
    },
    /// The shared token: any holder of it.
    Token,
}

impl RemoteIdentity {
    pub(crate) fn key(fingerprint: String) -> RemoteIdentity {
        RemoteIdentity::Key { fingerprint }
    }

    /// The key's fingerprint, if the remote proved a key.
    pub fn fingerprint(&self) -> Option<&str> {
        match self {
            RemoteIdentity::Key { fingerprint } => Some(fingerprint),
            RemoteIdentity::Token => None,
        }
    }
}

impl std::fmt::Display for RemoteIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RemoteIdentity::Key { fingerprint } => write!(f, "key {fingerprint}"),
            RemoteIdentity::Token => f.write_str("the token"),
        }
    }
}

/// The trust policy of a peer. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    keys: Arc<Vec<TrustedKey>>,
    known_hosts: Arc<Vec<KnownHost>>,
    token: Option<Arc<str>>,
    any_client: bool,
    any_host: bool,
}

/// Why a remote key or token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The key is not trusted (or is revoked, or bound to other names).
    Untrusted,
    /// `known_hosts` has other keys for this host.
    Mismatch,
}

impl Trust {
    /// A policy that trusts nobody.
    pub fn new() -> Trust {
        Trust::default()
    }

    fn push_key(mut self, k: TrustedKey) -> Trust {
        Arc::make_mut(&mut self.keys).push(k);
        self
    }

    /// Trusts a peer key, whatever name the peer claims.
    pub fn with_key(self, key: PublicKey) -> Trust {
        self.push_key(TrustedKey {
            matcher: KeyMatch::Key(key),
            names: Vec::new(),
        })
    }

    /// Trusts a peer key only for a peer claiming `name`.
    pub fn with_named_key(self, name: impl Into<String>, key: PublicKey) -> Trust {
        self.push_key(TrustedKey {
            matcher: KeyMatch::Key(key),
            names: vec![name.into()],
        })
    }

    /// Trusts a peer key by its SHA-256 fingerprint (`SHA256:...`, as `ssh-keygen -l` prints).
    pub fn with_fingerprint(self, fingerprint: &str) -> Result<Trust, KeyError> {
        let fp = fingerprint.trim();
        let valid = fp.strip_prefix("SHA256:").is_some_and(|b64| {
            b64.len() == 43
                && b64
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
        });
        if !valid {
            return Err(KeyError::Parse {
                what: format!("fingerprint {fp:?}"),
                why: "expected SHA256: followed by 43 base64 characters".into(),
            });
        }
        Ok(self.push_key(TrustedKey {
            matcher: KeyMatch::Fingerprint(fp.to_owned()),
            names: Vec::new(),
        }))
    }

    /// Trusts every key of an `authorized_keys` text (see [`with_authorized_keys_file`](Self::with_authorized_keys_file)).
    pub fn with_authorized_keys(mut self, text: &str) -> Result<Trust, KeyError> {
        let entries = files::parse_authorized_keys(text, "authorized_keys")?;
        let keys = Arc::make_mut(&mut self.keys);
        keys.extend(
            entries
                .into_iter()
                .map(|AuthorizedKey { key, names }| TrustedKey {
                    matcher: KeyMatch::Key(key),
                    names,
                }),
        );
        Ok(self)
    }

    /// Trusts every key of an `authorized_keys` file.
    ///
    /// The option `name="NAME"` (repeatable) binds a key to the names its peer may
    /// claim; other OpenSSH options are ignored.
    pub fn with_authorized_keys_file(self, path: impl AsRef<Path>) -> Result<Trust, KeyError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        self.with_authorized_keys(&text)
            .map_err(|e| relabel(e, path))
    }

    /// Trusts server host keys listed in a `known_hosts` text.
    pub fn with_known_hosts(mut self, text: &str) -> Result<Trust, KeyError> {
        let entries = files::parse_known_hosts(text, "known_hosts")?;
        Arc::make_mut(&mut self.known_hosts).extend(entries);
        Ok(self)
    }

    /// Trusts server host keys listed in a `known_hosts` file.
    ///
    /// An entry applies to a server when one of its host patterns (plain or hashed)
    /// names the endpoint (`host`, or `[host]:port` for ports other than 22; the socket
    /// path for `unix://`) or the peer name the server announced.
    pub fn with_known_hosts_file(self, path: impl AsRef<Path>) -> Result<Trust, KeyError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        self.with_known_hosts(&text).map_err(|e| relabel(e, path))
    }

    /// Accepts clients presenting this token as their SSH password.
    pub fn with_token(mut self, token: impl Into<String>) -> Trust {
        self.token = Some(Arc::from(token.into()));
        self
    }

    /// Accepts every client key. Anyone who can reach a bound endpoint can connect.
    pub fn danger_accept_any_client(mut self) -> Trust {
        self.any_client = true;
        self
    }

    /// Accepts every server host key. Connections can be intercepted.
    pub fn danger_accept_any_host_key(mut self) -> Trust {
        self.any_host = true;
        self
    }

    /// Whether clients can authenticate at all (a key, a token, or anyone).
    pub fn accepts_clients(&self) -> bool {
        self.any_client || self.token.is_some() || !self.keys.is_empty()
    }

    pub(crate) fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Whether an entry binds `name` to its keys: then only those keys may claim it.
    pub(crate) fn is_bound(&self, name: &str) -> bool {
        self.keys.iter().any(|k| k.names.iter().any(|n| n == name))
    }

    /// May a client claiming `name` log in with `key`? An entry with names
    /// (`name=`) lets its key claim only those names, and a name so bound is
    /// claimed only with one of its keys; an entry without names lets its key claim
    /// any unbound name (as `danger_accept_any_client` lets any key).
    pub(crate) fn check_client_key(&self, name: &str, key: &PublicKey) -> Result<(), Refusal> {
        let bound = self.is_bound(name);
        let allowed = self.keys.iter().any(|k| {
            k.matches_key(key)
                && (k.names.iter().any(|n| n == name) || (k.names.is_empty() && !bound))
        }) || (self.any_client && !bound);
        if allowed {
            Ok(())
        } else {
            Err(Refusal::Untrusted)
        }
    }

    /// Is `token` the configured token? Compared in constant time.
    pub(crate) fn check_token(&self, token: &str) -> bool {
        let Some(expected) = &self.token else {
            return false;
        };
        let (a, b) = (expected.as_bytes(), token.as_bytes());
        let mut diff = a.len() ^ b.len();
        for i in 0..a.len().max(b.len()) {
            diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
        }
        diff == 0
    }

    /// May we talk to a server at `host_names` (endpoint forms) claiming `name` with `key`?
    pub(crate) fn check_host_key(
        &self,
        host_names: &[String],
        name: &str,
        key: &PublicKey,
    ) -> Result<(), Refusal> {
        if self.any_host {
            return Ok(());
        }
        let names_it = |h: &KnownHost| host_names.iter().any(|n| h.matches(n)) || h.matches(name);
        if self
            .known_hosts
            .iter()
            .any(|h| h.revoked && h.key == *key && names_it(h))
        {
            return Err(Refusal::Untrusted);
        }
        if self
            .keys
            .iter()
            .any(|k| k.matches_key(key) && k.allows_name(name))
        {
            return Ok(());
        }
        let mut listed = false;
        for h in self
            .known_hosts
            .iter()
            .filter(|h| !h.revoked && names_it(h))
        {
            if h.key == *key {
                return Ok(());
            }
            listed = true;
        }
        Err(if listed {
            Refusal::Mismatch
        } else {
            Refusal::Untrusted
        })
    }
}

fn relabel(e: KeyError, path: &Path) -> KeyError {
    match e {
        KeyError::Parse { what, why } => KeyError::Parse {
            what: what
                .replacen("authorized_keys", &path.display().to_string(), 1)
                .replacen("known_hosts", &path.display().to_string(), 1),
            why,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Identity;

    #[test]
    fn nobody_is_trusted_by_default() {
        let t = Trust::new();
        let k = Identity::generate().public_key();
        assert_eq!(t.check_client_key("a", &k), Err(Refusal::Untrusted));
        assert_eq!(t.check_host_key(&[], "a", &k), Err(Refusal::Untrusted));
        assert!(!t.check_token(""));
        assert!(!t.accepts_clients());
    }

    #[test]
    fn keys_fingerprints_and_names() {
        let (a, b) = (
            Identity::generate().public_key(),
            Identity::generate().public_key(),
        );
        let t = Trust::new()
            .with_named_key("alice", a.clone())
            .with_fingerprint(&b.fingerprint())
            .unwrap();
        assert!(t.check_client_key("alice", &a).is_ok());
        assert!(
            t.check_client_key("mallory", &a).is_err(),
            "name bound to the key"
        );
        assert!(t.check_client_key("anyone", &b).is_ok());
        assert!(
            t.check_client_key("alice", &b).is_err(),
            "a bound name needs its key, whatever else the claimant's key may do"
        );
        let open = Trust::new()
            .with_named_key("alice", a.clone())
            .danger_accept_any_client();
        assert!(open.check_client_key("alice", &b).is_err());
        assert!(open.check_client_key("bob", &b).is_ok());
        assert!(t.check_host_key(&[], "alice", &a).is_ok());
        assert!(Trust::new().with_fingerprint("MD5:aa").is_err());
    }

    #[test]
    fn known_hosts_by_endpoint_or_name() {
        let (good, other) = (
            Identity::generate().public_key(),
            Identity::generate().public_key(),
        );
        let text = format!(
            "[127.0.0.1]:7000 {}\nbob {}\n",
            good.to_openssh(),
            good.to_openssh()
        );
        let t = Trust::new().with_known_hosts(&text).unwrap();
        let ep = vec!["[127.0.0.1]:7000".to_string()];
        assert!(t.check_host_key(&ep, "x", &good).is_ok());
        assert_eq!(t.check_host_key(&ep, "x", &other), Err(Refusal::Mismatch));
        assert!(
            t.check_host_key(&["elsewhere".into()], "bob", &good)
                .is_ok()
        );
        assert_eq!(
            t.check_host_key(&["elsewhere".into()], "carol", &good),
            Err(Refusal::Untrusted)
        );
    }

    #[test]
    fn tokens_compare_exactly() {
        let t = Trust::new().with_token("s3cret");
        assert!(t.check_token("s3cret"));
        assert!(!t.check_token("s3cre"));
        assert!(!t.check_token("s3crett"));
        assert!(t.accepts_clients());
    }
}
