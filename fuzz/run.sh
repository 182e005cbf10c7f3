#!/usr/bin/env bash
# Runs every fuzz target for a while (default 20 s each) from the committed seeds,
# two at a time (one per core of a small machine).
#
#   fuzz/run.sh [SECONDS]          FUZZ_PROFILE=smoke fuzz/run.sh 10   (CI: quicker build)
#
# The targets are libFuzzer binaries built the way `cargo fuzz build -s none`
# builds them (coverage instrumentation, `--cfg fuzzing`, debug assertions), by
# cargo itself: nothing to install. The code under test forbids `unsafe`, so the
# address sanitizer adds little; `cargo fuzz run TARGET` (cargo-fuzz, with ASan)
# works on the same targets for longer campaigns. Nightly-only flags are accepted
# by the stable toolchain through RUSTC_BOOTSTRAP, since no other toolchain is
# available here.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-20}
profile=${FUZZ_PROFILE:-release}
triple=$(rustc -vV | sed -n 's/^host: //p')
export RUSTC_BOOTSTRAP=1
export RUSTFLAGS="-Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 -Cllvm-args=-sanitizer-coverage-stack-depth \
 --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# --target keeps these flags away from build scripts and proc macros.
# In the main workspace's target directory, so that build scripts and proc macros
# built for the tests are reused.
target_dir=${CARGO_TARGET_DIR:-../target}
cargo build --locked --profile "$profile" --target "$triple" --target-dir "$target_dir" --bins
bin="$target_dir/$triple/$profile"

targets=$(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^streamkit-fuzz$')
run_one() {
  local t=$1
  mkdir -p "corpus/$t"
  if ! "$bin/$t" "corpus/$t" "seeds/$t" -max_total_time="$secs" -max_len=4096 \
      >"corpus/$t.log" 2>&1; then
    tail -n 60 "corpus/$t.log"
    echo "fuzz target $t failed"
    return 1
  fi
  echo "--- $t (${secs} s): $(grep -E '^Done' "corpus/$t.log")"
}
# Two at a time; any failure fails the run.
pids=()
status=0
for t in $targets; do
  run_one "$t" &
  pids+=($!)
  if [ ${#pids[@]} -ge 2 ]; then
    wait "${pids[0]}" || status=1
    pids=("${pids[@]:1}")
  fi
done
for p in "${pids[@]}"; do wait "$p" || status=1; done
exit $status
