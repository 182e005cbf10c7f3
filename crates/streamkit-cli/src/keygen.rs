//! `streamkit keygen -f PATH`.

use std::path::PathBuf;

use anyhow::Context as _;
use streamkit::Identity;

#[derive(clap::Args)]
pub struct Args {
    /// Where to write the private key; the public key goes to PATH.pub.
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    path: PathBuf,
    /// Comment stored with the key.
    #[arg(short = 'C', long, default_value_t = default_comment())]
    comment: String,
}

fn default_comment() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "streamkit".into());
    format!("{user}@{}", crate::hostname())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let id = Identity::generate();
    id.save(&args.path, &args.comment)
        .with_context(|| format!("cannot write key {}", args.path.display()))?;
    println!("{}", id.public_key().fingerprint());
    eprintln!(
        "wrote {} (private, mode 0600) and {}.pub",
        args.path.display(),
        args.path.display()
    );
    Ok(())
}
