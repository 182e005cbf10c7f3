//! A plugin host and its plugin, as two processes.
//!
//! The host binds a Unix socket in a private directory, writes a key for the
//! plugin there, and spawns this same program as the plugin. The plugin
//! registers its hooks, connects, and the host calls them; inside a hook the
//! plugin calls back into the host (for its configuration and its log) and
//! passes the host a callback it calls per word.
//!
//! ```text
//! cargo run -p streamkit-rpc --example plugin
//! ```
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use streamkit::{Event, Identity, Peer, PeerConfig, PublicKey, Trust};
use streamkit_rpc::{Callback, Code, Context, Rpc, RpcError};

#[derive(Debug, Serialize, Deserialize)]
struct Message {
    from: String,
    text: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct EachWord {
    text: String,
    visit: Callback<String, ()>,
}

/// Also run by `cargo test` (`tests/scenarios/plugin_example.rs`).
#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let result = match args.next().as_deref() {
        Some("--plugin") => plugin(&args.next().unwrap(), &args.next().unwrap()).await,
        _ => host().await,
    };
    if let Err(e) = result {
        eprintln!("plugin example: {e}");
        std::process::exit(1);
    }
}

async fn host() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("host.sock");
    let (host_id, plugin_id) = (Identity::generate(), Identity::generate());
    let plugin_key = dir.path().join("plugin.key");
    plugin_id.save(&plugin_key, "plugin")?;

    let peer = Peer::new(PeerConfig::new(
        "host",
        host_id.clone(),
        Trust::new().with_key(plugin_id.public_key()),
    ))?;
    peer.bind(&format!("unix://{}", socket.display())).await?;
    let rpc = Rpc::new(&peer)?;
    // What the host offers its plugins.
    rpc.unary("host.config", |_ctx, key: String| async move {
        match key.as_str() {
            "greeting" => Ok("Hello".to_string()),
            _ => Err(RpcError::new(Code(404), format!("no setting {key:?}"))),
        }
    });
    let (log_tx, mut log_rx) = tokio::sync::mpsc::channel::<String>(64);
    rpc.unary("host.log", move |ctx: Context, line: String| {
        let tx = log_tx.clone();
        async move {
            let _ = tx.send(format!("[{}] {line}", ctx.caller())).await;
            Ok(())
        }
    });

    let mut events = peer.events();
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("--plugin")
        .arg(&socket)
        .arg(&plugin_key)
        .env("HOST_KEY", host_id.public_key().to_openssh())
        .kill_on_drop(true)
        .spawn()?;
    // Wait for the plugin to connect.
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(ev) = events.next().await {
            if matches!(ev, Event::Connected { ref peer, .. } if peer == "plugin") {
                break;
            }
        }
    })
    .await?;
    println!("host: plugin connected");

    // Call the plugin's hook; it calls back into the host while it runs.
    let caller = rpc.caller().peer("plugin").timeout(Duration::from_secs(10));
    let reply: Message = caller
        .call(
            "plugin.on_message",
            &Message {
                from: "alice".into(),
                text: "how are you".into(),
            },
        )
        .await?;
    println!("host: plugin replied {:?}", reply.text);
    assert_eq!(reply.text, "Hello alice, you said: how are you");

    // A callback passed as an argument: the plugin calls it once per word.
    let (word_tx, mut word_rx) = tokio::sync::mpsc::channel::<String>(64);
    let visit = rpc.callback(move |_ctx, word: String| {
        let tx = word_tx.clone();
        async move {
            let _ = tx.send(word).await;
            Ok(())
        }
    });
    let n: usize = caller
        .call(
            "plugin.each_word",
            &EachWord {
                text: "streams of frames".into(),
                visit,
            },
        )
        .await?;
    let mut words = Vec::new();
    while let Ok(w) = word_rx.try_recv() {
        words.push(w);
    }
    println!("host: the plugin visited {n} words: {words:?}");
    assert_eq!(words, ["streams", "of", "frames"]);

    let mut log = Vec::new();
    while let Ok(line) = log_rx.try_recv() {
        log.push(line);
    }
    println!("host: plugin log {log:?}");
    assert_eq!(log, ["[plugin] greeting alice"]);

    // Errors travel typed.
    let err = caller
        .call::<_, String>("plugin.fail", &())
        .await
        .unwrap_err();
    println!("host: plugin.fail gave {err}");
    assert_eq!(err.code(), Code(404));

    caller.call::<_, ()>("plugin.quit", &()).await?;
    // Our sessions end with the node, so the plugin's graceful shutdown is quick.
    drop((caller, rpc));
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await??;
    println!("host: plugin exited with {status}");
    assert!(status.success());
    Ok(())
}

async fn plugin(socket: &str, key: &str) -> Result<(), Box<dyn std::error::Error>> {
    let host_key = PublicKey::from_openssh(&std::env::var("HOST_KEY")?)?;
    let peer = Peer::new(PeerConfig::new(
        "plugin",
        Identity::load(Path::new(key))?,
        Trust::new().with_key(host_key),
    ))?;
    let rpc = Rpc::new(&peer)?;
    let (quit_tx, mut quit_rx) = tokio::sync::mpsc::channel::<()>(1);
    // Hooks, registered before connecting so the host sees them at once.
    rpc.unary("plugin.on_message", |ctx: Context, m: Message| async move {
        let greeting: String = ctx
            .call_back()
            .call("host.config", &"greeting".to_string())
            .await?;
        ctx.call_back()
            .call::<_, ()>("host.log", &format!("greeting {}", m.from))
            .await?;
        Ok(Message {
            from: "plugin".into(),
            text: format!("{greeting} {}, you said: {}", m.from, m.text),
        })
    });
    rpc.unary("plugin.each_word", |ctx: Context, e: EachWord| async move {
        let words: Vec<&str> = e.text.split_whitespace().collect();
        for w in &words {
            e.visit.call(&ctx, &w.to_string()).await?;
        }
        Ok(words.len())
    });
    rpc.unary("plugin.fail", |ctx: Context, (): ()| async move {
        // The host's error comes back as this hook's error.
        ctx.call_back()
            .call::<_, String>("host.config", &"missing".to_string())
            .await
    });
    rpc.unary("plugin.quit", move |_ctx, (): ()| {
        let tx = quit_tx.clone();
        async move {
            let _ = tx.try_send(());
            Ok(())
        }
    });
    peer.connect(&format!("unix://{socket}")).await?;
    quit_rx.recv().await;
    // Let the reply to quit go out before leaving.
    peer.shutdown().await;
    Ok(())
}
