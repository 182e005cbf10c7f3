//! Identity keys (ed25519, OpenSSH format) and public keys.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use russh::keys::ssh_key::{self, HashAlg, LineEnding};

use crate::error::KeyError;

/// A peer's identity: an ed25519 key pair.
///
/// Servers present it as their host key, clients authenticate with it.
#[derive(Clone)]
pub struct Identity {
    key: Arc<ssh_key::PrivateKey>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &self.public_key().fingerprint())
            .finish()
    }
}

impl Identity {
    /// Generates a new random ed25519 identity.
    pub fn generate() -> Identity {
        let mut seed = [0u8; 32];
        // The OS random source failing is not something we can recover from.
        #[allow(clippy::expect_used)]
        getrandom::fill(&mut seed).expect("the operating system's random source failed");
        let pair = ssh_key::private::Ed25519Keypair::from_seed(&seed);
        seed.fill(0);
        Identity {
            key: Arc::new(ssh_key::PrivateKey::from(pair)),
        }
    }

    /// Parses an OpenSSH private key (unencrypted ed25519).
    pub fn from_openssh(text: &str) -> Result<Identity, KeyError> {
        Self::parse(text, "key")
    }

    fn parse(text: &str, what: &str) -> Result<Identity, KeyError> {
        let key = ssh_key::PrivateKey::from_openssh(text).map_err(|e| KeyError::Parse {
            what: what.to_owned(),
            why: e.to_string(),
        })?;
        if key.is_encrypted() {
            return Err(KeyError::Parse {
                what: what.to_owned(),
                why: "encrypted keys are not supported".into(),
            });
        }
        if key.algorithm() != ssh_key::Algorithm::Ed25519 {
            return Err(KeyError::Unsupported(what.to_owned()));
        }
        Ok(Identity { key: Arc::new(key) })
    }

    /// Loads an OpenSSH private key file.
    pub fn load(path: impl AsRef<Path>) -> Result<Identity, KeyError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The private key in OpenSSH format.
    pub fn to_openssh(&self) -> String {
        match self.key.to_openssh(LineEnding::LF) {
            Ok(s) => s.to_string(),
            Err(_) => String::new(), // an ed25519 key always encodes
        }
    }

    /// Writes the private key (mode 0600) to `path` and the public key to `path.pub`.
    /// Refuses to overwrite an existing file.
    pub fn save(&self, path: impl AsRef<Path>, comment: &str) -> Result<(), KeyError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = path.as_ref();
        let mut key = (*self.key).clone();
        key.set_comment(comment);
        let text = key
            .to_openssh(LineEnding::LF)
            .map_err(|e| KeyError::Parse {
                what: path.display().to_string(),
                why: e.to_string(),
            })?;
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        let pub_path = {
            let mut p = path.as_os_str().to_owned();
            p.push(".pub");
            std::path::PathBuf::from(p)
        };
        let mut public = self.public_key();
        public.0.set_comment(comment);
        let pub_line = public.to_openssh();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&pub_path)
            .and_then(|mut f| f.write_all(format!("{pub_line}\n").as_bytes()))
            .map_err(|source| KeyError::Io {
                path: pub_path.display().to_string(),
                source,
            })?;
        Ok(())
    }

    /// The public half.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.key.public_key().clone())
    }

    pub(crate) fn private(&self) -> &Arc<ssh_key::PrivateKey> {
        &self.key
    }
}

/// A public key, as found in `authorized_keys`, `known_hosts` or a `.pub` file.
///
/// Two keys are equal when their key material is, whatever their comments.
#[derive(Clone)]
pub struct PublicKey(pub(crate) ssh_key::PublicKey);

impl PartialEq for PublicKey {
    fn eq(&self, other: &PublicKey) -> bool {
        self.key_data() == other.key_data()
    }
}

impl Eq for PublicKey {}

impl PublicKey {
    /// Parses an OpenSSH public key line: `ssh-ed25519 AAAA... [comment]`.
    pub fn from_openssh(line: &str) -> Result<PublicKey, KeyError> {
        ssh_key::PublicKey::from_openssh(line.trim())
            .map(PublicKey)
            .map_err(|e| KeyError::Parse {
                what: "public key".into(),
                why: e.to_string(),
            })
    }

    /// Loads a `.pub` file.
    pub fn load(path: impl AsRef<Path>) -> Result<PublicKey, KeyError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_openssh(&text).map_err(|e| match e {
            KeyError::Parse { why, .. } => KeyError::Parse {
                what: path.display().to_string(),
                why,
            },
            other => other,
        })
    }

    /// The OpenSSH one-line form.
    pub fn to_openssh(&self) -> String {
        self.0.to_openssh().unwrap_or_default()
    }

    /// The SHA-256 fingerprint, as OpenSSH prints it: `SHA256:...`.
    pub fn fingerprint(&self) -> String {
        self.0.fingerprint(HashAlg::Sha256).to_string()
    }

    /// The key with its comment dropped, for comparisons.
    pub(crate) fn key_data(&self) -> &ssh_key::public::KeyData {
        self.0.key_data()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PublicKey({} {})",
            self.0.algorithm(),
            self.fingerprint()
        )
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_openssh())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_save_load() {
        let dir = std::env::temp_dir().join(format!("sk-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("id");
        let id = Identity::generate();
        id.save(&path, "test@streamkit").unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let loaded = Identity::load(&path).unwrap();
        assert_eq!(loaded.public_key(), id.public_key());
        let public = PublicKey::load(dir.join("id.pub")).unwrap();
        assert_eq!(public.key_data(), id.public_key().key_data());
        assert!(public.fingerprint().starts_with("SHA256:"));
        assert!(id.save(&path, "again").is_err(), "never overwrites");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn garbage_keys_are_errors() {
        assert!(Identity::from_openssh("not a key").is_err());
        assert!(PublicKey::from_openssh("ssh-ed25519 !!!").is_err());
    }
}
