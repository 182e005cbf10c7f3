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
