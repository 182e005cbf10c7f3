//! The hub's NAT test bed: network namespaces, as root. A "public" namespace
//! holds the hub; two private namespaces sit each behind a NAT namespace of its
//! own (iptables MASQUERADE), joined by veth pairs. Both private namespaces use
//! the same addresses, as two home networks would. Nothing outside these
//! namespaces is touched.
//!
//! ```text
//!  ns a 10.88.0.2 ─ 10.88.0.1 [nat1] 10.77.1.2 ─ 10.77.1.1 ┐
//!                                                         [pub: hub :7400]
//!  ns b 10.88.0.2 ─ 10.88.0.1 [nat2] 10.77.2.2 ─ 10.77.2.1 ┘
//! ```

use std::process::Command;

use crate::common::*;

/// The namespaces of one test, removed (with their links) when it ends.
struct Bed {
    id: String,
}

impl Bed {
    fn new() -> Bed {
        require_tool("ip", "iproute2");
        require_tool("iptables", "iptables");
        // Short, unique per process: interface names are at most 15 bytes.
        let id = format!("{:x}", std::process::id() % 0xfffff);
        let bed = Bed { id };
        let ns = |n: &str| bed.ns(n);
        for n in ["pub", "nat1", "nat2", "a", "b"] {
            sh(&format!("ip netns add {}", ns(n)));
            sh(&format!("ip -n {} link set lo up", ns(n)));
        }
        for (i, private) in [(1, "a"), (2, "b")] {
            let (p, n, inside, host) = (
                bed.ifname('p', i),
                bed.ifname('n', i),
                bed.ifname('i', i),
                bed.ifname('h', i),
            );
            let (pubns, natns, privns) = (ns("pub"), ns(&format!("nat{i}")), ns(private));
            for cmd in [
                // public ↔ NAT
                format!("ip link add {p} type veth peer name {n}"),
                format!("ip link set {p} netns {pubns}"),
                format!("ip link set {n} netns {natns}"),
                format!("ip -n {pubns} addr add 10.77.{i}.1/24 dev {p}"),
                format!("ip -n {pubns} link set {p} up"),
                format!("ip -n {natns} addr add 10.77.{i}.2/24 dev {n}"),
                format!("ip -n {natns} link set {n} up"),
                // NAT ↔ private
                format!("ip link add {inside} type veth peer name {host}"),
                format!("ip link set {inside} netns {natns}"),
                format!("ip link set {host} netns {privns}"),
                format!("ip -n {natns} addr add 10.88.0.1/24 dev {inside}"),
                format!("ip -n {natns} link set {inside} up"),
                format!("ip -n {privns} addr add 10.88.0.2/24 dev {host}"),
                format!("ip -n {privns} link set {host} up"),
                format!("ip -n {privns} route add default via 10.88.0.1"),
                format!("ip netns exec {natns} sysctl -qw net.ipv4.ip_forward=1"),
                format!(
                    "ip netns exec {natns} iptables -t nat -A POSTROUTING -o {n} -j MASQUERADE"
                ),
            ] {
                sh(&cmd);
            }
        }
        bed
    }

    fn ns(&self, n: &str) -> String {
        format!("sk{}-{n}", self.id)
    }

    fn ifname(&self, kind: char, i: u32) -> String {
        format!("sk{}{kind}{i}", self.id)
    }

    /// `streamkit ARGS` inside namespace `ns`.
    fn streamkit(&self, ns: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(ns), BIN])
            .args(args)
            .env_remove("STREAMKIT_TOKEN");
        c
    }

    /// A long-running `streamkit` in `ns`, ready once it prints `ready`.
    fn start(&self, ns: &str, args: &[&str], ready: &str) -> Server {
        let c = self.streamkit(ns, args);
        Server::from_command(c, ready)
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        for n in ["a", "b", "nat1", "nat2", "pub"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(n)])
                .status();
        }
    }
}

fn sh(cmd: &str) {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn peers_behind_two_nats_reach_each_other_through_a_hub() {
    let bed = Bed::new();
    let k = Keys::new();
    for name in ["hub", "alice", "bob"] {
        let out = run(&["keygen", "-f", k.p(name).as_str()], b"");
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let public = |n: &str| std::fs::read_to_string(k.path(&format!("{n}.pub"))).unwrap();
    std::fs::write(k.path("peers"), public("alice") + &public("bob")).unwrap();
    // One known_hosts: the hub by both of its addresses, the peers by name.
    std::fs::write(
        k.path("known_hosts"),
        format!(
            "[10.77.1.1]:7400 {hub}[10.77.2.1]:7400 {hub}[127.0.0.1]:7400 {hub}alice {}bob {}",
            public("alice"),
            public("bob"),
            hub = public("hub"),
        ),
    )
    .unwrap();
    let (kh, peers) = (k.p("known_hosts"), k.p("peers"));
    let hub_args = [
        "hub",
        "--bind",
        "tcp://0.0.0.0:7400",
        "--name",
        "hub",
        "--key",
        &k.p("hub"),
        "--authorized-keys",
        &peers,
    ];
    let hub = bed.start("pub", &hub_args, "streamkit: hub ");
    // alice and bob serve from behind their NATs: each binds a port of its own
    // (which the hub cannot reach) and dials the hub.
    let serve = |ns: &str, name: &str, hub_addr: &str| {
        let key = k.p(name);
        let connect = format!("tcp://{hub_addr}:7400");
        let args = [
            "serve",
            "--bind",
            "tcp://0.0.0.0:7000",
            "--connect",
            &connect,
            "--known-hosts",
            &kh,
            "--name",
            name,
            "--key",
            &key,
            "--authorized-keys",
            &peers,
            "--service",
            "echo=echo",
            "--service",
            "who=exec:echo \"$STREAMKIT_PEER\"; echo warned >&2; exit 3",
        ];
        let s = bed.start(ns, &args, "streamkit: serving as");
        s.wait_line("streamkit: connected to \"hub\"");
        s
    };
    let alice = serve("a", "alice", "10.77.1.1");
    let bob = serve("b", "bob", "10.77.2.1");

    // Each calls the other's services through the hub, end to end.
    let call = |ns: &str, hub_addr: &str, me: &str, target: &str, service: &str, input: &[u8]| {
        let via = format!("tcp://{hub_addr}:7400");
        let key = k.p(me);
        let name = format!("{me}-cli");
        let args = [
            "open",
            "--via",
            &via,
            target,
            service,
            "--name",
            &name,
            "--key",
            &key,
            "--known-hosts",
            &kh,
        ];
        run_command(bed.streamkit(ns, &args), input)
    };
    let data = pattern(2 << 20);
    let out = call("a", "10.77.1.1", "alice", "bob", "echo", &data);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout == data, "{} bytes back", out.stdout.len());
    let out = call("b", "10.77.2.1", "bob", "alice", "who", b"");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "bob-cli\n");
    assert_eq!(stderr(&out), "warned\n");

    // The public side cannot dial either of them...
    let direct = run_command(
        bed.streamkit(
            "pub",
            &[
                "open",
                "tcp://10.88.0.2:7000",
                "echo",
                "--insecure-accept-any-host-key",
            ],
        ),
        b"",
    );
    assert_eq!(direct.status.code(), Some(255));
    assert!(
        stderr(&direct).contains("unreachable"),
        "{}",
        stderr(&direct)
    );
    // ...yet reaches alice over her own connection to the hub.
    let key = k.p("bob");
    let out = run_command(
        bed.streamkit(
            "pub",
            &[
                "open",
                "--via",
                "tcp://127.0.0.1:7400",
                "alice",
                "echo",
                "--name",
                "ops",
                "--key",
                &key,
                "--known-hosts",
                &kh,
            ],
        ),
        b"called back",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, b"called back");

    // OpenSSH's ProxyJump from the public side to bob's service.
    require_tool("ssh", "the OpenSSH client");
    let config = k.path("ssh_config");
    std::fs::write(
        &config,
        format!(
            "Host *\n  IdentityFile {}\n  IdentitiesOnly yes\n  StrictHostKeyChecking yes\n  \
             UserKnownHostsFile {kh}\n  GlobalKnownHostsFile /dev/null\n  BatchMode yes\n",
            k.p("alice")
        ),
    )
    .unwrap();
    let mut ssh = Command::new("ip");
    ssh.args(["netns", "exec", &bed.ns("pub"), "ssh", "-F"])
        .arg(&config)
        .args(["-J", "alice@127.0.0.1:7400", "-l", "alice", "bob", "echo"]);
    let out = run_command(ssh, b"through the jump");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, b"through the jump");

    // The hub dies and comes back: both find it again, and each other.
    drop(hub);
    alice.wait_line("streamkit: lost \"hub\"");
    bob.wait_line("streamkit: lost \"hub\"");
    let _hub = bed.start("pub", &hub_args, "streamkit: hub ");
    alice.wait_line("streamkit: connected to \"hub\"");
    bob.wait_line("streamkit: connected to \"hub\"");
    let out = call("a", "10.77.1.1", "alice", "bob", "echo", b"again");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, b"again");
}
