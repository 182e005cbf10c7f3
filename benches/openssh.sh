#!/usr/bin/env bash
# Bulk through one channel: OpenSSH (`ssh HOST 'cat >/dev/null'`, sshd on loopback)
# beside `streamkit open URL sink`, in one run, as a ratio.
#
#   benches/openssh.sh [MEGABYTES]      (default 512; runs each side 3 times, keeps the best)
#
# Installs openssh-server if sshd is missing (Debian/Ubuntu, as root). Both sides run
# on loopback on this machine: the client, the server and the cipher share its cores.
set -euo pipefail
cd "$(dirname "$0")/.."
MB=${1:-512}
RUNS=3

if ! command -v sshd >/dev/null && [ ! -x /usr/sbin/sshd ]; then
  echo "installing openssh-server..." >&2
  apt-get update -qq && apt-get install -y -qq openssh-server >/dev/null
fi
SSHD=$(command -v sshd || echo /usr/sbin/sshd)

cargo build --release -q -p streamkit-cli
SK=target/release/streamkit

dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# ---- OpenSSH: sshd with its own host key, accepting one generated client key.
ssh-keygen -q -t ed25519 -N '' -f "$dir/host" </dev/null
ssh-keygen -q -t ed25519 -N '' -f "$dir/client" </dev/null
cp "$dir/client.pub" "$dir/authorized_keys"
chmod 600 "$dir/authorized_keys"
mkdir -p /run/sshd
ssh_port=$(free_port)
"$SSHD" -D -e -p "$ssh_port" -h "$dir/host" \
  -o ListenAddress=127.0.0.1 -o AuthorizedKeysFile="$dir/authorized_keys" \
  -o StrictModes=no -o PermitRootLogin=prohibit-password -o UsePAM=no \
  -o PidFile=none 2>"$dir/sshd.log" &
pids+=($!)

# Streamkit: `serve` with a sink service, trusting the same kind of key.
"$SK" keygen -f "$dir/sk-server" >/dev/null 2>&1
"$SK" keygen -f "$dir/sk-client" >/dev/null 2>&1
cp "$dir/sk-client.pub" "$dir/sk-authorized"
sk_port=$(free_port)
"$SK" serve --bind "tcp://127.0.0.1:$sk_port" --name bench --key "$dir/sk-server" \
  --authorized-keys "$dir/sk-authorized" --service sink=sink 2>"$dir/serve.log" &
pids+=($!)

wait_port() {
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "nothing listens on port $1" >&2
  exit 1
}
wait_port "$ssh_port"
wait_port "$sk_port"

# Best cipher OpenSSH offers here (AES-GCM where the CPU has AES instructions).
if grep -qw aes /proc/cpuinfo; then cipher=aes256-gcm@openssh.com; else cipher=chacha20-poly1305@openssh.com; fi

ssh_once() {
  head -c "${MB}M" /dev/zero | ssh -T -p "$ssh_port" -i "$dir/client" -c "$cipher" \
    -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
    -o BatchMode=yes root@127.0.0.1 'cat >/dev/null'
}
sk_once() {
  head -c "${MB}M" /dev/zero | "$SK" open "tcp://127.0.0.1:$sk_port" sink \
    --key "$dir/sk-client" --insecure-accept-any-host-key >/dev/null
}
# Prints MB/s for the best of $RUNS runs of $1.
best_rate() {
  local best=0 t0 t1 rate
  for _ in $(seq "$RUNS"); do
    t0=$(date +%s.%N)
    "$1"
    t1=$(date +%s.%N)
    rate=$(python3 -c "print(f'{$MB * 1048576 / ($t1 - $t0) / 1e6:.0f}')")
    if [ "$rate" -gt "$best" ]; then best=$rate; fi
  done
  echo "$best"
}

ssh_rate=$(best_rate ssh_once)
sk_rate=$(best_rate sk_once)
ratio=$(python3 -c "print(f'{$sk_rate / $ssh_rate:.2f}')")
printf '\nbulk, one channel, %s MiB over loopback TCP (best of %s)\n' "$MB" "$RUNS"
printf '  %-52s %6s MB/s\n' "OpenSSH ssh 'cat >/dev/null' ($cipher)" "$ssh_rate"
printf '  %-52s %6s MB/s\n' "streamkit open URL sink" "$sk_rate"
printf '  %-52s %6sx\n' "ratio streamkit / OpenSSH" "$ratio"
