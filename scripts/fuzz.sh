#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a while (default 10 s each; FUZZ_SECONDS to change).
# cargo-fuzz needs nightly-only sanitizer flags; RUSTC_BOOTSTRAP lets the stable toolchain
# accept them, which is all it needs here.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
seconds="${FUZZ_SECONDS:-10}"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}-fuzz"
cargo fuzz build -O
for target in $(cargo fuzz list); do
  echo "fuzzing $target for ${seconds}s"
  log="$(mktemp)"
  if ! cargo fuzz run -O "$target" -- -max_total_time="$seconds" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "fuzz target $target found a failure (the input is in fuzz/artifacts/$target)" >&2
    exit 1
  fi
  grep -E "^Done" "$log" || true
  rm -f "$log"
done
