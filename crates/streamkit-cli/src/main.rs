//! `streamkit`: keys, a server for named services, a client, a demo and a benchmark.

#![forbid(unsafe_code)]

#[cfg(feature = "bench")]
mod bench;
// Without the `bench` feature, `streamkit bench` only says how to build it. Compiled
// (and linted, and tested) in every build, so that CI's one all-features build
// covers it too.
#[cfg_attr(feature = "bench", allow(dead_code))]
mod no_bench;
#[cfg(not(feature = "bench"))]
use no_bench as bench;
mod call;
mod demo;
mod expose;
mod forward;
mod hub;
mod keygen;
mod open;
mod serve;
mod services;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit status for failures of streamkit itself (as `ssh` does).
pub const EXIT_FAILURE: u8 = 255;

#[derive(Parser)]
#[command(
    name = "streamkit",
    version,
    about = "Secure application channels over SSH-2"
)]
struct Cli {
    /// More log output (repeat for more); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a new ed25519 identity key (OpenSSH format, mode 0600) and PATH.pub.
    Keygen(keygen::Args),
    /// Bind endpoints and serve named services until SIGINT or SIGTERM.
    Serve(serve::Args),
    /// Open a channel to a service: stdin to the channel, the channel to stdout.
    Open(open::Args),
    /// Forward local connections (tcp, unix, udp) to a service, as `ssh -L`.
    Forward(forward::Args),
    /// Publish a local service on a port of the server, as `ssh -R`.
    Expose(expose::Args),
    /// Route channels between the peers connected here, by name (peers behind NAT).
    Hub(hub::Args),
    /// Call an RPC method: prints each result as a JSON line.
    Call(call::Args),
    /// Two peers on loopback, a tour of every capability, with measured figures.
    Demo(demo::Args),
    /// Measure Streamkit beside raw sockets and plain russh, in one run, as ratios.
    Bench(bench::Args),
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info,russh=warn",
        2 => "debug,russh=info",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal as _;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("streamkit: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Keygen(args) => keygen::run(args).map(|()| 0),
            Command::Serve(args) => serve::run(args).await.map(|()| 0),
            Command::Open(args) => open::run(args).await,
            Command::Hub(args) => hub::run(args).await.map(|()| 0),
            Command::Forward(args) => forward::run(args).await.map(|()| 0),
            Command::Expose(args) => expose::run(args).await.map(|()| 0),
            Command::Call(args) => call::run(args).await,
            Command::Demo(args) => demo::run(args).await.map(|()| 0),
            Command::Bench(args) => bench::run(args).await.map(|()| 0),
        }
    });
    // Do not wait for connections' background tasks on the way out.
    runtime.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("streamkit: {}", one_line(&e));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// An error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out.replace('\n', " ")
}

/// The machine's host name, for default peer names.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "streamkit".to_owned())
}

#[cfg(test)]
mod tests {
    /// Every subcommand's arguments are consistent (names unique, groups valid):
    /// clap checks it only when a command is first parsed.
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory as _;
        super::Cli::command().debug_assert();
    }
}
