"""A second, independent SSH implementation (paramiko) against `streamkit serve`.

Run by tests/ssh_clients.rs with: HOST PORT CLIENT_KEY SERVER_PUB TOKEN.
Each check prints a line; any failure raises, so the exit status tells.
"""

import base64
import os
import socket
import sys
import threading

import paramiko

host, port, keyfile, server_pub, token = sys.argv[1:6]
port = int(port)


def connect(**auth):
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    kind, b64 = open(server_pub).read().split()[:2]
    key = paramiko.Ed25519Key(data=base64.b64decode(b64))
    client.get_host_keys().add(f"[{host}]:{port}", kind, key)
    client.connect(host, port, look_for_keys=False, allow_agent=False, timeout=30, **auth)
    return client


def run(transport, command, stdin=b"", env=None):
    chan = transport.open_session(timeout=30)
    if env:
        for k, v in env.items():
            chan.set_environment_variable(k, v)
    chan.exec_command(command)
    return exchange(chan, stdin)


def exchange(chan, stdin):
    """Sends stdin (then EOF) while reading stdout and stderr; returns all three."""

    def feed():
        chan.sendall(stdin)
        chan.shutdown_write()

    writer = threading.Thread(target=feed)
    writer.start()
    out, err = bytearray(), bytearray()
    chan.settimeout(30)
    while True:
        if chan.recv_stderr_ready():
            err += chan.recv_stderr(65536)
            continue
        chunk = chan.recv(65536)
        if not chunk:
            break
        out += chunk
    while True:
        chunk = chan.recv_stderr(65536)
        if not chunk:
            break
        err += chunk
    writer.join()
    status = chan.recv_exit_status()
    return bytes(out), bytes(err), status


key = paramiko.Ed25519Key.from_private_key_file(keyfile)
client = connect(username="carol", pkey=key)
t = client.get_transport()

data = os.urandom(1 << 20)
out, err, status = run(t, "echo", data)
assert out == data, f"echo returned {len(out)} bytes, different"
assert status == 0 and err == b"", (status, err)
print("ok exec echo 1 MiB")

out, err, status = run(t, "who one two", env={"LANG": "C"})
assert out == b"carol C one two\n", out
assert err == b"to stderr\n", err
assert status == 7, status
print("ok env, args, stderr and exit status")

chan = t.open_session()
chan.invoke_subsystem("echo")
out, err, status = exchange(chan, b"via subsystem")
assert out == b"via subsystem" and status == 0, (out, status)
print("ok subsystem")

chan = t.open_channel("direct-tcpip", ("echo", 1), ("127.0.0.1", 0))
out, _, _ = exchange(chan, b"via direct-tcpip")
assert out == b"via direct-tcpip", out
print("ok direct-tcpip")

out, err, status = run(t, "nope")
assert status == 127 and b"service not found" in err, (status, err)
print("ok unknown service")

# What a plain client must not get, each refused with the standard failure while
# the connection stays usable.
chan = t.open_session()
try:
    chan.get_pty()
    raise AssertionError("pty granted")
except paramiko.SSHException:
    pass
chan = t.open_session()
try:
    chan.invoke_shell()
    raise AssertionError("shell granted")
except paramiko.SSHException:
    pass
for kind, dest in [("x11", None), ("forwarded-tcpip", ("127.0.0.1", 1)), ("auth-agent@openssh.com", None)]:
    try:
        if kind == "x11":
            t.open_x11_channel(("127.0.0.1", 0))
        else:
            t.open_channel(kind, dest, ("127.0.0.1", 0))
        raise AssertionError(f"{kind} channel granted")
    except paramiko.ChannelException as e:
        assert e.code == 1, (kind, e.code)
try:
    t.request_port_forward("127.0.0.1", 0)
    raise AssertionError("tcpip-forward granted")
except paramiko.SSHException:
    pass
out, _, status = run(t, "echo", b"still usable")
assert out == b"still usable" and status == 0, (out, status)
print("ok pty, shell, x11, forwarded-tcpip, agent and tcpip-forward refused; connection usable")
client.close()

client = connect(username="dave", password=token)
out, _, status = run(client.get_transport(), "echo", b"token")
assert out == b"token" and status == 0
client.close()
try:
    connect(username="dave", password="wrong" + token)
    raise AssertionError("wrong token accepted")
except paramiko.AuthenticationException:
    pass
print("ok token login, wrong token refused")
# A client that opens sessions and pushes data without ever naming a service
# (`exec`): each session takes its initial 64 KiB window and no more, however much
# the client has to send, and the connection keeps working.
client = connect(username="dave", password=token)
t = client.get_transport()
idle = []
for _ in range(100):
    chan = t.open_session(timeout=30)
    chan.setblocking(0)
    idle.append(chan)
took = [0] * len(idle)
chunk = b"z" * 32768
stalled_rounds = 0
while stalled_rounds < 10:
    moved = 0
    for i, chan in enumerate(idle):
        if took[i] >= 1 << 20:
            continue
        try:
            n = chan.send(chunk)
        except socket.timeout:
            continue
        took[i] += n
        moved += n
    stalled_rounds = 0 if moved else stalled_rounds + 1
    if not moved:
        import time
        time.sleep(0.05)
assert all(0 < n <= 65536 for n in took), sorted(set(took))
out, _, status = run(t, "echo", b"still works")
assert out == b"still works" and status == 0, (out, status)
client.close()
print(f"ok 100 sessions without exec took {sum(took)} bytes ({max(took)} at most each)")
print("paramiko: all ok")
