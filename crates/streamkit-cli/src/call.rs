//! `streamkit call URL METHOD JSON`: one RPC call from the shell.

use std::io::Write as _;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use streamkit_rpc::{Codec, Message as _, Rpc};

use crate::open::ClientArgs;

#[derive(clap::Args)]
pub struct Args {
    /// The peer to connect to (tcp://HOST:PORT, unix:///PATH).
    url: String,
    /// The method, e.g. demo.add.
    method: String,
    /// The argument, as JSON (sent in the chosen codec).
    json: String,
    /// The codec the call uses on the wire.
    #[arg(long, value_enum, default_value = "json")]
    codec: CodecArg,
    /// Give up after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CodecArg {
    Json,
    Msgpack,
    Cbor,
}

impl From<CodecArg> for Codec {
    fn from(c: CodecArg) -> Codec {
        match c {
            CodecArg::Json => Codec::Json,
            CodecArg::Msgpack => Codec::MsgPack,
            CodecArg::Cbor => Codec::Cbor,
        }
    }
}

/// Prints each result as one JSON line; a failed call is a one-line message on
/// stderr and exit status 1.
pub async fn run(args: Args) -> anyhow::Result<u8> {
    let value: serde_json::Value = serde_json::from_str(&args.json)
        .with_context(|| format!("the argument {:?} is not JSON", args.json))?;
    let codec = Codec::from(args.codec);
    let input = value.encode(codec).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (peer, remote) = args.client.connect(&args.url).await?;
    let rpc = Rpc::new(&peer)?;
    let mut caller = rpc.caller().peer(remote).codec(codec);
    if let Some(t) = args.timeout {
        if !(t.is_finite() && t > 0.0) {
            bail!("--timeout must be a positive number of seconds");
        }
        caller = caller.timeout(std::time::Duration::from_secs_f64(t));
    }
    // The raw path: any method shape with one input, results as they come.
    let mut call = match caller
        .call_raw(&args.method, Some(Bytes::from(input)), true)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("streamkit: {}: {e}", args.method);
            return Ok(1);
        }
    };
    let mut out = std::io::stdout().lock();
    while let Some(item) = call.next_raw().await {
        match item.and_then(|b| {
            serde_json::Value::decode(codec, &b).map_err(|e| {
                streamkit_rpc::RpcError::new(
                    streamkit_rpc::Code::INTERNAL,
                    format!("result did not decode: {e}"),
                )
            })
        }) {
            Ok(v) => {
                writeln!(out, "{v}").context("writing stdout")?;
                out.flush().context("writing stdout")?;
            }
            Err(e) => {
                eprintln!("streamkit: {}: {e}", args.method);
                return Ok(1);
            }
        }
    }
    Ok(0)
}
