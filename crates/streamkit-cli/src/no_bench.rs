//! `streamkit bench` in a build without the `bench` feature: the binary a user
//! installs carries no benchmark baselines (tonic, plain russh), so the command
//! only says how to get them.

/// The message, one line.
pub const HOW: &str = "this build has no benchmark baselines; \
run `cargo run --release -p streamkit-cli --features bench -- bench`";

/// Whatever flags were given (they belong to the full benchmark).
#[derive(clap::Args)]
pub struct Args {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    _flags: Vec<String>,
}

pub async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!(HOW)
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn says_in_one_line_how_to_build_the_benchmark() {
        let err = super::run(super::Args {
            _flags: vec!["--quick".into()],
        })
        .await
        .unwrap_err()
        .to_string();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("--features bench"), "{err}");
    }
}
