//! Standard SSH clients against Streamkit: the real OpenSSH `ssh` and paramiko (a
//! second, independent implementation) against a real `streamkit serve`, and
//! `ssh` against a peer made with the library.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// Services for these tests.
const WHO: &str = r#"who=exec:echo "$STREAMKIT_PEER $LANG $*"; echo "to stderr" >&2; exit 7"#;

fn server(k: &Keys, token: Option<&str>) -> Server {
    let key = k.p("server");
    let ak = k.p("authorized_keys");
    let mut args = vec![
        "--bind",
        "tcp://127.0.0.1:0",
        "--name",
        "srv",
        "--key",
        &key,
        "--authorized-keys",
        &ak,
        "--service",
        "echo=echo",
        "--service",
        WHO,
    ];
    if let Some(t) = token {
        args.extend(["--token", t]);
    }
    Server::start(&args)
}

fn port(srv: &Server) -> String {
    srv.url().rsplit(':').next().unwrap().to_owned()
}

#[test]
fn openssh_exec_streams_bytes_exit_status_env_and_stderr() {
    let k = Keys::new();
    let srv = server(&k, None);
    let p = port(&srv);
    // 1 MiB of random bytes through `echo`, byte for byte.
    let data = pattern(1 << 20);
    let mut c = ssh(&k, &p);
    c.args(["alice@127.0.0.1", "echo"]);
    let out = run_command(c, &data);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        out.stdout == data,
        "echo returned {} bytes, different",
        out.stdout.len()
    );
    assert_eq!(stderr(&out), "");
    // The peer name is the SSH user; SetEnv arrives as a header; extra words as args;
    // stderr comes back as plain bytes; the exit code as ssh's exit status.
    let mut c = ssh(&k, &p);
    c.args([
        "-o",
        "SetEnv=LANG=C",
        "alice@127.0.0.1",
        "who",
        "one",
        "two",
    ]);
    let out = run_command(c, b"");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "alice C one two\n");
    assert_eq!(stderr(&out), "to stderr\n");
    assert_eq!(out.status.code(), Some(7));
    // A service that does not exist is reported like a missing command.
    let mut c = ssh(&k, &p);
    c.args(["alice@127.0.0.1", "nope"]);
    let out = run_command(c, b"");
    assert_eq!(out.status.code(), Some(127));
    assert!(
        stderr(&out).contains("nope: service not found"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn openssh_subsystem_and_direct_tcpip() {
    let k = Keys::new();
    let srv = server(&k, None);
    let p = port(&srv);
    let mut c = ssh(&k, &p);
    c.args(["-s", "alice@127.0.0.1", "echo"]);
    let out = run_command(c, b"via subsystem");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, b"via subsystem");
    // -W: stdio forwarded to the service the host names (the port is ignored).
    let mut c = ssh(&k, &p);
    c.args(["-W", "echo:1", "alice@127.0.0.1"]);
    let out = run_command(c, b"via -W");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, b"via -W");
    // -L: a local port forwarded to the service. `-f` returns once the forward is up.
    let local = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ctl = k.path("ctl");
    let mut c = ssh(&k, &p);
    c.args(["-f", "-N", "-M", "-o", "ExitOnForwardFailure=yes", "-S"])
        .arg(&ctl)
        .arg("-L")
        .arg(format!("{local}:echo:1"))
        .arg("alice@127.0.0.1");
    let out = run_command(c, b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let mut s = std::net::TcpStream::connect(("127.0.0.1", local)).unwrap();
    s.write_all(b"via -L").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"via -L");
    let mut stop = ssh(&k, &p);
    stop.arg("-S")
        .arg(&ctl)
        .args(["-O", "exit", "alice@127.0.0.1"]);
    run_command(stop, b"");
}

/// An askpass program that answers with `answer`.
fn askpass(dir: &Path, answer: &str) -> PathBuf {
    let path = dir.join(format!("askpass-{}", answer.len()));
    std::fs::write(&path, format!("#!/bin/sh\necho '{answer}'\n")).unwrap();
    let mut perm = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o700);
    std::fs::set_permissions(&path, perm).unwrap();
    path
}

#[test]
fn openssh_token_login() {
    let k = Keys::new();
    let srv = server(&k, Some("opensesame"));
    let p = port(&srv);
    for (answer, ok) in [("opensesame", true), ("guess", false)] {
        let mut c = ssh_interactive(&k, &p);
        c.args([
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=password",
        ])
        .args(["-o", "NumberOfPasswordPrompts=1", "dave@127.0.0.1", "echo"])
        .env("SSH_ASKPASS", askpass(k.dir.path(), answer))
        .env("SSH_ASKPASS_REQUIRE", "force");
        let out = run_command(c, b"with a token");
        if ok {
            assert!(out.status.success(), "{}", stderr(&out));
            assert_eq!(out.stdout, b"with a token");
        } else {
            assert_eq!(out.status.code(), Some(255));
            assert!(
                stderr(&out).contains("Permission denied"),
                "{}",
                stderr(&out)
            );
        }
    }
}

#[test]
fn openssh_requests_we_do_not_serve_are_refused() {
    let k = Keys::new();
    let srv = server(&k, None);
    let p = port(&srv);
    // No command: the shell request is refused.
    let mut c = ssh(&k, &p);
    c.args(["alice@127.0.0.1"]);
    let out = run_command(c, b"");
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("shell request failed"),
        "{}",
        stderr(&out)
    );
    // A forced terminal: the pty request is refused.
    let mut c = ssh(&k, &p);
    c.args(["-tt", "alice@127.0.0.1", "echo"]);
    let out = run_command(c, b"");
    assert!(
        stderr(&out).contains("PTY allocation request failed"),
        "{}",
        stderr(&out)
    );
    // X11 and remote forwarding are refused; the command still runs on the connection.
    let mut c = ssh(&k, &p);
    c.args([
        "-X",
        "-R",
        "127.0.0.1:47391:127.0.0.1:1",
        "alice@127.0.0.1",
        "echo",
    ])
    .env("DISPLAY", ":0");
    let out = run_command(c, b"still works");
    let err = stderr(&out);
    assert!(err.contains("X11 forwarding request failed"), "{err}");
    assert!(err.contains("remote port forwarding failed"), "{err}");
    assert!(out.status.success(), "{err}");
    assert_eq!(out.stdout, b"still works");
}

/// The Python with paramiko that `scripts/dev-setup` installs (`.venv` at the
/// top of the project, or `$STREAMKIT_PYTHON`). The test never installs it: a
/// missing one fails with the command that does.
fn paramiko_python() -> PathBuf {
    let python = std::env::var_os("STREAMKIT_PYTHON").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"),
        PathBuf::from,
    );
    let ready = Command::new(&python)
        .args(["-c", "import paramiko"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ready,
        "paramiko not found at {}: run scripts/dev-setup",
        python.display()
    );
    python
}

#[test]
fn paramiko_client() {
    let python = paramiko_python();
    let k = Keys::new();
    let srv = server(&k, Some("s3cret"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/paramiko_client.py");
    let mut c = Command::new(python);
    c.arg(script)
        .args(["127.0.0.1", &port(&srv)])
        .arg(k.path("client"))
        .arg(k.path("server.pub"))
        .arg("s3cret");
    let out = run_command(c, b"");
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "paramiko checks failed:\n{log}\n{}",
        stderr(&out)
    );
    assert!(log.contains("paramiko: all ok"), "{log}");
}

/// A program using the library serves standard clients too, and its
/// authorisation hook decides who gets which service.
#[test]
fn library_peer_serves_openssh_and_its_authorizer_applies() {
    use streamkit::{AccessRequest, Identity, Peer, PeerConfig, Trust};
    let k = Keys::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let id = Identity::load(k.path("server")).unwrap();
    let trust = Trust::new()
        .with_authorized_keys_file(k.path("authorized_keys"))
        .unwrap();
    let config = PeerConfig::new("lib", id, trust)
        .with_authorizer(|r: &AccessRequest<'_>| r.service != "secret" || r.peer == "root");
    let (peer, url) = rt.block_on(async {
        let peer = Peer::new(config).unwrap();
        let url = peer.bind("tcp://127.0.0.1:0").await.unwrap().to_string();
        (peer, url)
    });
    let p = url.rsplit(':').next().unwrap().to_owned();
    let server = peer.clone();
    rt.spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((meta, mut ch)) = server.accept().await {
            let mut body = Vec::new();
            ch.read_to_end(&mut body).await.unwrap();
            let reply = format!(
                "{} from {} ({} bytes)\n",
                meta.service(),
                meta.remote_peer(),
                body.len()
            );
            ch.write_all(reply.as_bytes()).await.unwrap();
            ch.write_error(b"a warning\n").await.unwrap();
            ch.write_trailers(["exit-status=3"]).await.unwrap();
            ch.close().await.unwrap();
        }
    });
    let mut c = ssh(&k, &p);
    c.args(["alice@127.0.0.1", "hello"]);
    let out = run_command(c, b"12345");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from alice (5 bytes)\n"
    );
    assert_eq!(stderr(&out), "a warning\n");
    assert_eq!(out.status.code(), Some(3));
    let mut c = ssh(&k, &p);
    c.args(["alice@127.0.0.1", "secret"]);
    let out = run_command(c, b"");
    assert_eq!(out.status.code(), Some(126));
    assert!(
        stderr(&out).contains("access to the service denied"),
        "{}",
        stderr(&out)
    );
    rt.block_on(peer.shutdown());
}
