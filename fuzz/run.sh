#!/usr/bin/env bash
# Runs every fuzz target for a while (default 20 s each) from the committed seeds.
# cargo-fuzz needs nightly-only compiler flags; RUSTC_BOOTSTRAP lets the stable
# toolchain accept them, since no other toolchain is available here.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-20}
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
cargo fuzz build
for t in $(cargo fuzz list); do
  mkdir -p "corpus/$t"
  echo "--- $t (${secs} s)"
  if ! cargo fuzz run "$t" "corpus/$t" "seeds/$t" -- -max_total_time="$secs" -max_len=4096 >"corpus/$t.log" 2>&1; then
    tail -n 60 "corpus/$t.log"
    echo "fuzz target $t failed"
    exit 1
  fi
  grep -E '^Done' "corpus/$t.log"
done
