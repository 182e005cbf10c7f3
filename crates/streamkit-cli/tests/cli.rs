//! The `streamkit` binary, driven as a user would: real processes, real keys,
#![allow(clippy::unwrap_used)]
//! real sockets; stdin, stdout, stderr and exit codes checked.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_streamkit");
/// Catches hangs only.
const HANG: Duration = Duration::from_secs(60);

struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new() -> Keys {
        let k = Keys {
            dir: tempfile::tempdir().unwrap(),
        };
        for name in ["server", "client", "stranger"] {
            let out = run(&["keygen", "-f", k.path(name).to_str().unwrap()], b"");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::fs::copy(k.path("client.pub"), k.path("authorized_keys")).unwrap();
        k
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn p(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    fn fingerprint(&self, name: &str) -> String {
        streamkit_fingerprint(&std::fs::read_to_string(self.path(&format!("{name}.pub"))).unwrap())
    }
}

fn streamkit_fingerprint(pub_line: &str) -> String {
    streamkit::PublicKey::from_openssh(pub_line)
        .unwrap()
        .fingerprint()
}

/// Runs the binary to completion with `stdin`.
fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = wait_with_timeout(child);
    writer.join().unwrap();
    out
}

fn wait_with_timeout(child: Child) -> Output {
    let (tx, rx) = mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(HANG) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
            panic!("streamkit hung for {HANG:?}");
        }
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A running `streamkit serve`.
struct Server {
    child: Option<Child>,
    urls: Vec<String>,
    lines: mpsc::Receiver<String>,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .arg("serve")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut urls = Vec::new();
        loop {
            let line = lines
                .recv_timeout(HANG)
                .expect("serve never said it was serving");
            if let Some(url) = line.strip_prefix("streamkit: listening on ") {
                urls.push(url.to_owned());
            }
            if line.starts_with("streamkit: serving as") {
                break;
            }
        }
        Server {
            child: Some(child),
            urls,
            lines,
        }
    }

    fn url(&self) -> &str {
        &self.urls[0]
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id();
        assert!(
            Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(pid.to_string())
                .status()
                .unwrap()
                .success()
        );
    }

    /// Waits for a server that was already signalled; its exit status and the rest of stderr.
    fn wait_exit(mut self) -> (std::process::ExitStatus, String) {
        let child = self.child.take().unwrap();
        let out = wait_with_timeout(child);
        let mut rest = String::new();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
            rest.push_str(&l);
            rest.push('\n');
        }
        (out.status, rest)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn standard_server(k: &Keys, extra: &[&str]) -> Server {
    let mut args = vec![
        "--bind",
        "tcp://127.0.0.1:0",
        "--name",
        "srv",
        "--key",
        k.path("server").to_str().unwrap().to_owned().leak(),
        "--authorized-keys",
        k.path("authorized_keys")
            .to_str()
            .unwrap()
            .to_owned()
            .leak(),
        "--service",
        "echo=echo",
        "--service",
        "sink=sink",
        "--service",
        "fail=exec:echo to-stdout; echo first problem >&2; sleep 0.1; echo second problem >&2; exit 3",
        "--service",
        "env=exec:echo \"$STREAMKIT_PEER $STREAMKIT_SERVICE $STREAMKIT_H_color $LANG\"",
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn open_args<'a>(k: &'a Keys, url: &'a str, service: &'a str) -> Vec<String> {
    vec![
        "open".into(),
        url.into(),
        service.into(),
        "--key".into(),
        k.p("client"),
        "--name".into(),
        "tester".into(),
        "--host-key-fingerprint".into(),
        k.fingerprint("server"),
    ]
}

fn run_open(args: &[String], stdin: &[u8]) -> Output {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&refs, stdin)
}

fn pattern(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[test]
fn keygen_writes_a_private_and_a_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id");
    let out = run(
        &["keygen", "-f", key.to_str().unwrap(), "-C", "me@here"],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let private = std::fs::read_to_string(&key).unwrap();
    assert!(private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
    let public = std::fs::read_to_string(dir.path().join("id.pub")).unwrap();
    assert!(
        public.starts_with("ssh-ed25519 ") && public.trim_end().ends_with("me@here"),
        "{public}"
    );
    // stdout is the fingerprint.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        streamkit_fingerprint(&public)
    );
    // Never overwrites.
    let again = run(&["keygen", "-f", key.to_str().unwrap()], b"");
    assert_eq!(again.status.code(), Some(255));
    assert!(stderr(&again).contains("File exists"), "{}", stderr(&again));
    assert_eq!(std::fs::read_to_string(&key).unwrap(), private);
}

#[test]
fn serve_refuses_to_start_without_client_authentication() {
    let k = Keys::new();
    let out = run(
        &[
            "serve",
            "--bind",
            "tcp://127.0.0.1:0",
            "--key",
            &k.p("server"),
            "--service",
            "e=echo",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(255));
    let msg = stderr(&out);
    assert!(
        msg.contains("--authorized-keys") && msg.contains("--insecure-open"),
        "{msg}"
    );
    assert_eq!(msg.lines().count(), 1, "{msg}");
    let out = run(
        &[
            "serve",
            "--bind",
            "tcp://127.0.0.1:0",
            "--token",
            "t",
            "--service",
            "e=bogus",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("unknown service spec"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn echo_round_trips_a_mebibyte_byte_for_byte() {
    let k = Keys::new();
    let srv = standard_server(&k, &[]);
    let data = pattern(1 << 20);
    let out = run_open(&open_args(&k, srv.url(), "echo"), &data);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        out.stdout == data,
        "echo returned {} bytes, different",
        out.stdout.len()
    );
    assert_eq!(stderr(&out), "");
}

#[test]
fn exec_passes_stdout_stderr_and_exit_status() {
    let k = Keys::new();
    let srv = standard_server(&k, &[]);
    let out = run_open(&open_args(&k, srv.url(), "fail"), b"");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "to-stdout\n");
    assert_eq!(
        stderr(&out),
        "first problem\nsecond problem\n",
        "error frames, one per line"
    );

    let mut args = open_args(&k, srv.url(), "env");
    args.extend([
        "-H".into(),
        "color=blue,green".into(),
        "-H".into(),
        "LANG=C.UTF-8".into(),
    ]);
    let out = run_open(&args, b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "tester env blue,green C.UTF-8\n"
    );
}

#[test]
fn sink_and_unix_sockets() {
    let k = Keys::new();
    let sock = k.path("srv.sock");
    let url = format!("unix://{}", sock.display());
    let srv = standard_server(&k, &["--bind", url.clone().leak()]);
    assert_eq!(srv.urls.len(), 2);
    let out = run_open(&open_args(&k, &url, "sink"), &pattern(3 << 20));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
}

#[test]
fn tcp_service_joins_a_real_tcp_server() {
    // A line-echo server that greets first.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { break };
            std::thread::spawn(move || {
                conn.write_all(b"hello from tcp\n").unwrap();
                let mut buf = Vec::new();
                conn.read_to_end(&mut buf).unwrap();
                conn.write_all(&buf.to_ascii_uppercase()).unwrap();
            });
        }
    });
    let k = Keys::new();
    let web = format!("web=tcp:127.0.0.1:{port}");
    let dead = "dead=tcp:127.0.0.1:1";
    let srv = standard_server(&k, &["--service", web.leak(), "--service", dead]);
    let out = run_open(&open_args(&k, srv.url(), "web"), b"shout this\n");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from tcp\nSHOUT THIS\n"
    );
    let out = run_open(&open_args(&k, srv.url(), "dead"), b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("connect 127.0.0.1:1"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn refused_keys_tokens_and_host_keys_fail_with_one_line() {
    let k = Keys::new();
    let srv = standard_server(&k, &["--token", "opensesame"]);
    let one_line = |out: &Output, needle: &str| {
        assert_eq!(out.status.code(), Some(255), "{}", stderr(out));
        let msg = stderr(out);
        assert_eq!(msg.lines().count(), 1, "{msg}");
        assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
    };
    // A key the server does not know.
    let mut args = open_args(&k, srv.url(), "echo");
    args[4] = k.p("stranger");
    one_line(&run_open(&args, b""), "does not trust our key");
    // The same key with a wrong token, then the right one.
    let mut wrong = args.clone();
    wrong.extend(["--token".into(), "guess".into()]);
    one_line(&run_open(&wrong, b""), "rejected our token");
    let mut right = args.clone();
    right.extend(["--token".into(), "opensesame".into()]);
    let out = run_open(&right, b"tok");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, b"tok");
    // A server whose host key is not the one we expect.
    let mut args = open_args(&k, srv.url(), "echo");
    args[8] = k.fingerprint("stranger");
    one_line(&run_open(&args, b""), "is not trusted");
    // known_hosts that names this host with another key: a mismatch.
    let port = srv.url().rsplit(':').next().unwrap();
    let stranger = std::fs::read_to_string(k.path("stranger.pub")).unwrap();
    std::fs::write(
        k.path("known_hosts"),
        format!("[127.0.0.1]:{port} {stranger}"),
    )
    .unwrap();
    let mut args = open_args(&k, srv.url(), "echo");
    args[7] = "--known-hosts".into();
    args[8] = k.p("known_hosts");
    one_line(&run_open(&args, b""), "host key mismatch");
    // No host trust at all is refused before connecting.
    let mut args = open_args(&k, srv.url(), "echo");
    args.truncate(7);
    one_line(&run_open(&args, b""), "--known-hosts");
    // Unknown services.
    one_line(
        &run_open(&open_args(&k, srv.url(), "nope"), b""),
        "service not found",
    );
    // After all that the server still serves.
    let out = run_open(&open_args(&k, srv.url(), "echo"), b"still here");
    assert_eq!(out.stdout, b"still here");
}

#[test]
fn sigterm_shuts_down_gracefully_and_a_killed_server_fails_the_client() {
    let k = Keys::new();
    let srv = standard_server(&k, &[]);
    // A transfer in progress when SIGTERM arrives still completes.
    let mut child = Command::new(BIN)
        .args(open_args(&k, srv.url(), "echo"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    stdin.write_all(b"before the signal\n").unwrap();
    let mut first = [0u8; 18];
    stdout.read_exact(&mut first).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut rest = Vec::new();
        stdout.read_to_end(&mut rest).unwrap();
        tx.send(rest).unwrap();
    });
    srv.signal("TERM");
    stdin.write_all(b"after the signal\n").unwrap();
    drop(stdin);
    let rest = rx.recv_timeout(HANG).unwrap();
    assert_eq!(rest, b"after the signal\n");
    let out = wait_with_timeout(child);
    assert!(out.status.success(), "{}", stderr(&out));
    let (status, log) = srv.wait_exit();
    assert!(
        status.success(),
        "serve exits 0 after a graceful shutdown: {log}"
    );

    // A server that dies mid-stream: the client reports an error, not a clean end.
    let srv = standard_server(&k, &[]);
    let mut child = Command::new(BIN)
        .args(open_args(&k, srv.url(), "echo"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"x").unwrap();
    let mut one = [0u8; 1];
    child.stdout.as_mut().unwrap().read_exact(&mut one).unwrap();
    srv.signal("KILL");
    let out = wait_with_timeout(child);
    drop(stdin);
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    assert!(stderr(&out).contains("connection"), "{}", stderr(&out));
}

#[test]
fn demo_runs_the_tour() {
    let out = run(&["demo", "--bulk-mb", "8"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "== 1.",
        "service not found",
        "round trip",
        "MB/s",
        "Graceful shutdown",
    ] {
        assert!(
            text.contains(needle),
            "demo output lacks {needle:?}:\n{text}"
        );
    }
}
