//! A hub from the command line: `streamkit hub`, a service behind it served with
//! `serve --connect`, reached by name with `open --via` and with OpenSSH's
//! ProxyJump.

use std::process::Command;

use crate::common::*;

/// Keys for a hub, alice (the caller) and carol (behind the hub), and the files
/// each side trusts.
struct Setup {
    keys: Keys,
}

impl Setup {
    fn new() -> Setup {
        let keys = Keys::new();
        for name in ["hub", "alice", "carol"] {
            let out = run(&["keygen", "-f", keys.p(name).as_str()], b"");
            assert!(out.status.success(), "{}", stderr(&out));
        }
        let public = |n: &str| std::fs::read_to_string(keys.path(&format!("{n}.pub"))).unwrap();
        // The hub admits alice and carol; carol admits alice.
        std::fs::write(
            keys.path("hub_authorized"),
            public("alice") + &public("carol"),
        )
        .unwrap();
        std::fs::write(keys.path("carol_authorized"), public("alice")).unwrap();
        Setup { keys }
    }

    fn p(&self, name: &str) -> String {
        self.keys.p(name)
    }

    fn public(&self, name: &str) -> String {
        std::fs::read_to_string(self.keys.path(&format!("{name}.pub"))).unwrap()
    }

    /// One known_hosts file naming the hub by its address and carol by her name.
    fn known_hosts(&self, hub_port: &str) -> String {
        let path = self.keys.path("known_hosts");
        std::fs::write(
            &path,
            format!(
                "[127.0.0.1]:{hub_port} {}carol {}",
                self.public("hub"),
                self.public("carol")
            ),
        )
        .unwrap();
        path.display().to_string()
    }

    fn hub(&self) -> Server {
        Server::hub(&[
            "--bind",
            "tcp://127.0.0.1:0",
            "--name",
            "hub",
            "--key",
            &self.p("hub"),
            "--authorized-keys",
            &self.p("hub_authorized"),
        ])
    }

    /// carol, behind the hub: she binds nothing and dials the hub.
    fn carol(&self, hub: &Server) -> Server {
        let kh = self.known_hosts(&hub.port());
        let carol = Server::start(&[
            "--connect",
            hub.url(),
            "--known-hosts",
            &kh,
            "--name",
            "carol",
            "--key",
            &self.p("carol"),
            "--authorized-keys",
            &self.p("carol_authorized"),
            "--service",
            "echo=echo",
            "--service",
            "who=exec:echo \"$STREAMKIT_PEER\"; echo warned >&2; exit 3",
        ]);
        carol.wait_line("streamkit: connected to \"hub\"");
        carol
    }
}

#[test]
fn open_via_a_hub_reaches_a_service_behind_it_by_name() {
    let s = Setup::new();
    let hub = s.hub();
    let _carol = s.carol(&hub);
    let kh = s.known_hosts(&hub.port());
    let data = pattern(3 << 20);
    let out = run(
        &[
            "open",
            "--via",
            hub.url(),
            "carol",
            "echo",
            "--name",
            "alice",
            "--key",
            &s.p("alice"),
            "--known-hosts",
            &kh,
        ],
        &data,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout == data, "{} bytes back", out.stdout.len());
    // The caller's name reaches the service, error frames come back on stderr and
    // the exit status as ours.
    let out = run(
        &[
            "open",
            "--via",
            hub.url(),
            "carol",
            "who",
            "--name",
            "alice",
            "--key",
            &s.p("alice"),
            "--known-hosts",
            &kh,
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "alice\n");
    assert_eq!(stderr(&out), "warned\n");
}

#[test]
fn open_via_a_hub_refuses_a_peer_whose_key_it_does_not_know() {
    let s = Setup::new();
    let hub = s.hub();
    let _carol = s.carol(&hub);
    // A known_hosts that names the hub only: carol's key cannot be checked.
    let kh = s.keys.path("hub_only");
    std::fs::write(
        &kh,
        format!("[127.0.0.1]:{} {}", hub.port(), s.public("hub")),
    )
    .unwrap();
    let out = run(
        &[
            "open",
            "--via",
            hub.url(),
            "carol",
            "echo",
            "--name",
            "alice",
            "--key",
            &s.p("alice"),
            "--known-hosts",
            kh.to_str().unwrap(),
        ],
        b"x",
    );
    assert_eq!(out.status.code(), Some(255));
    let err = stderr(&out);
    assert!(err.contains("through hub \"hub\""), "{err}");
    assert!(
        err.contains("not trusted") || err.contains("untrusted"),
        "{err}"
    );
}

/// OpenSSH's ProxyJump through the hub: the jump's `direct-tcpip` to `carol` is
/// routed to carol, and carol answers the SSH session inside.
#[test]
fn openssh_proxyjump_through_the_hub_reaches_a_service_behind_it() {
    require_tool("ssh", "the OpenSSH client");
    let s = Setup::new();
    let hub = s.hub();
    let _carol = s.carol(&hub);
    let kh = s.known_hosts(&hub.port());
    let data = pattern(1 << 20);
    // The jump runs as an ssh of its own, which takes only the configuration
    // file: everything goes in one, as a user would write it in ~/.ssh/config.
    let config = s.keys.path("ssh_config");
    std::fs::write(
        &config,
        format!(
            "Host *\n  IdentityFile {}\n  IdentitiesOnly yes\n  StrictHostKeyChecking yes\n  \
             UserKnownHostsFile {kh}\n  GlobalKnownHostsFile /dev/null\n  BatchMode yes\n",
            s.p("alice")
        ),
    )
    .unwrap();
    let mut ssh = Command::new("ssh");
    ssh.arg("-F")
        .arg(&config)
        .args(["-J", &format!("alice@127.0.0.1:{}", hub.port())])
        .args(["-l", "alice", "carol", "echo"]);
    let out = run_command(ssh, &data);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout == data, "{} bytes back", out.stdout.len());
}
