//! Where a token comes from: `--token`, `--token-file PATH` or `STREAMKIT_TOKEN`, so
//! that a secret never needs to be on the command line (where `ps` shows it).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// The environment variable read when neither flag is given.
pub const TOKEN_ENV: &str = "STREAMKIT_TOKEN";

/// The token options, shared by every command that takes a token.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TokenArgs {
    /// A token (the SSH password). Visible to other users in `ps`: prefer
    /// --token-file or the STREAMKIT_TOKEN environment variable.
    #[arg(long, conflicts_with = "token_file")]
    token: Option<String>,
    /// Read the token from this file (its first line).
    #[arg(long = "token-file", value_name = "PATH")]
    token_file: Option<PathBuf>,
}

impl TokenArgs {
    /// The token, from the first of `--token`, `--token-file` and
    /// `STREAMKIT_TOKEN` that is given; `None` if none is.
    pub fn resolve(&self) -> anyhow::Result<Option<String>> {
        self.resolve_with(std::env::var(TOKEN_ENV).ok())
    }

    fn resolve_with(&self, env: Option<String>) -> anyhow::Result<Option<String>> {
        let token = if let Some(t) = &self.token {
            if t.is_empty() {
                bail!("--token must not be empty");
            }
            t.clone()
        } else if let Some(path) = &self.token_file {
            read_token_file(path)?
        } else {
            match env {
                Some(t) if !t.is_empty() => t,
                Some(_) => bail!("{TOKEN_ENV} is set but empty"),
                None => return Ok(None),
            }
        };
        Ok(Some(token))
    }
}

fn read_token_file(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the token file {}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if token.is_empty() {
        bail!(
            "the token file {} is empty (the token is its first line)",
            path.display()
        );
    }
    warn_if_readable_by_others(path);
    Ok(token.to_owned())
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        eprintln!(
            "warning: the token file {} can be read by other users (chmod 600 it)",
            path.display()
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(token: Option<&str>, file: Option<&Path>) -> TokenArgs {
        TokenArgs {
            token: token.map(str::to_owned),
            token_file: file.map(Path::to_path_buf),
        }
    }

    #[test]
    fn flag_then_file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "from-file\r\nignored\n").unwrap();
        let env = Some("from-env".to_owned());
        assert_eq!(
            args(Some("from-flag"), None)
                .resolve_with(env.clone())
                .unwrap()
                .as_deref(),
            Some("from-flag")
        );
        assert_eq!(
            args(None, Some(&file))
                .resolve_with(env.clone())
                .unwrap()
                .as_deref(),
            Some("from-file")
        );
        assert_eq!(
            args(None, None).resolve_with(env).unwrap().as_deref(),
            Some("from-env")
        );
        assert_eq!(args(None, None).resolve_with(None).unwrap(), None);
    }

    #[test]
    fn empty_or_missing_tokens_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let err = args(None, Some(&empty)).resolve_with(None).unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");
        let missing = dir.path().join("missing");
        let err = args(None, Some(&missing)).resolve_with(None).unwrap_err();
        assert!(
            format!("{err:#}").contains("reading the token file"),
            "{err:#}"
        );
        let err = args(None, None)
            .resolve_with(Some(String::new()))
            .unwrap_err();
        assert!(
            err.to_string().contains("STREAMKIT_TOKEN is set but empty"),
            "{err}"
        );
        let err = args(Some(""), None).resolve_with(None).unwrap_err();
        assert!(
            err.to_string().contains("--token must not be empty"),
            "{err}"
        );
    }
}
