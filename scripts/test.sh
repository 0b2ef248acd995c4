#!/usr/bin/env bash
# Runs every test: unit tests, and integration tests that start their own nats-server and
# trellis hosts on loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/prereqs.sh
cargo build --workspace --locked
cargo test --workspace --locked
