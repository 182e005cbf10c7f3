//! Helpers for the tests that drive the `streamkit` binary.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_streamkit");
/// Catches hangs only.
pub const HANG: Duration = Duration::from_secs(60);

pub struct Keys {
    pub dir: tempfile::TempDir,
}

impl Keys {
    pub fn new() -> Keys {
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

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn p(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    pub fn fingerprint(&self, name: &str) -> String {
        streamkit_fingerprint(&std::fs::read_to_string(self.path(&format!("{name}.pub"))).unwrap())
    }
}

pub fn streamkit_fingerprint(pub_line: &str) -> String {
    streamkit::PublicKey::from_openssh(pub_line)
        .unwrap()
        .fingerprint()
}

/// Runs the binary to completion with `stdin`.
pub fn run(args: &[&str], stdin: &[u8]) -> Output {
    run_with_env(args, stdin, &[])
}

/// [`run`] with environment variables set (and no `STREAMKIT_TOKEN` from ours).
pub fn run_with_env(args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("STREAMKIT_TOKEN")
        .envs(env.iter().copied());
    run_command(c, stdin)
}

/// Runs any command to completion with `stdin`, its output captured (a hang
/// fails the test).
pub fn run_command(mut c: Command, stdin: &[u8]) -> Output {
    let mut child = c
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

/// Fails the test with the setup command when a tool it drives is missing (the
/// suite never installs anything itself).
pub fn require_tool(tool: &str, what: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()));
    assert!(found, "{what} (`{tool}`) not found: run scripts/dev-setup");
}

pub fn wait_with_timeout(child: Child) -> Output {
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

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A running `streamkit serve`.
pub struct Server {
    pub child: Option<Child>,
    pub urls: Vec<String>,
    pub lines: mpsc::Receiver<String>,
    /// The line that said it was ready.
    pub ready_line: String,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        Server::start_command("serve", args, "streamkit: serving as")
    }

    /// A running `streamkit hub`.
    pub fn hub(args: &[&str]) -> Server {
        Server::start_command("hub", args, "streamkit: hub ")
    }

    /// Runs `streamkit COMMAND ARGS` until it prints a line starting with `ready`.
    pub fn start_command(command: &str, args: &[&str], ready: &str) -> Server {
        let mut c = Command::new(BIN);
        c.arg(command).args(args);
        Server::from_command(c, ready)
    }

    /// Runs `c` until it prints a line starting with `ready`.
    pub fn from_command(mut c: Command, ready: &str) -> Server {
        let mut child = c
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
        let ready_line = loop {
            let line = lines
                .recv_timeout(HANG)
                .expect("serve never said it was serving");
            if let Some(url) = line.strip_prefix("streamkit: listening on ") {
                urls.push(url.to_owned());
            }
            if line.starts_with(ready) {
                break line;
            }
        };
        Server {
            child: Some(child),
            urls,
            lines,
            ready_line,
        }
    }

    pub fn url(&self) -> &str {
        &self.urls[0]
    }

    /// The TCP port of the first endpoint.
    pub fn port(&self) -> String {
        self.url().rsplit(':').next().unwrap().to_owned()
    }

    /// Waits for a line of stderr starting with `prefix`; returns it.
    pub fn wait_line(&self, prefix: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(HANG)
                .unwrap_or_else(|_| panic!("never printed {prefix:?}"));
            if line.starts_with(prefix) {
                return line;
            }
        }
    }

    pub fn signal(&self, sig: &str) {
        require_tool("kill", "kill (procps)");
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
    pub fn wait_exit(mut self) -> (std::process::ExitStatus, String) {
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

/// A known_hosts file naming the server, as `ssh` would record it.
pub fn known_hosts(k: &Keys, port: &str) -> PathBuf {
    let path = k.path("known_hosts");
    let public = std::fs::read_to_string(k.path("server.pub")).unwrap();
    std::fs::write(&path, format!("[127.0.0.1]:{port} {public}")).unwrap();
    path
}

/// `ssh` with a clean configuration: only the options given here apply.
pub fn ssh(k: &Keys, port: &str) -> Command {
    let mut c = ssh_interactive(k, port);
    // ssh keeps the first value given for an option: this one must come last.
    c.args(["-o", "BatchMode=yes"]);
    c
}

/// `ssh` that may prompt (through `SSH_ASKPASS`).
pub fn ssh_interactive(k: &Keys, port: &str) -> Command {
    let kh = known_hosts(k, port);
    require_tool("ssh", "the OpenSSH client");
    let mut c = Command::new("ssh");
    c.args(["-F", "/dev/null", "-p", port, "-i"])
        .arg(k.path("client"))
        .args([
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=yes",
        ])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", kh.display()))
        .args(["-o", "GlobalKnownHostsFile=/dev/null"]);
    c
}

pub fn pattern(len: usize) -> Vec<u8> {
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
