#!/usr/bin/env bash
# Issue 20's opening, as a new user tries it: HOSTS (default 100) `trellis host` processes on
# this machine, one of them running the scheduler, then an application of as many replicas as
# there are workers, deployed with `trellis app deploy` (which waits until it is placed). Prints
# how long listing the hosts and the deploy took and whether the deploy succeeded.
# Uses a built `trellis` ($TRELLIS, or target/release/trellis) and the http-hello component
# built by scripts/demo.sh (or $WASM). Everything it starts stops when it exits.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
trellis="${TRELLIS:-$target/release/trellis}"
wasm="${WASM:-$target/wasm-components/wasm32-wasip2/release/http_hello.wasm}"
hosts="${HOSTS:-100}"
port="${NATS_PORT:-14333}"
for f in "$trellis" "$wasm"; do
  [ -f "$f" ] || { echo "$f is missing: build it first (see the README)" >&2; exit 1; }
done

dir=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
export TRELLIS_NATS_URL="nats://127.0.0.1:$port"

nats-server -js -a 127.0.0.1 -p "$port" -sd "$dir/js" >"$dir/nats.log" 2>&1 &
pids+=($!)
sleep 1
"$trellis" host --allow-unsigned --scheduler --name scheduler >"$dir/scheduler.log" 2>&1 &
pids+=($!)
for i in $(seq 1 "$hosts"); do
  "$trellis" host --allow-unsigned --name "w$i" --label pool=workers --max-instances 8 \
    >"$dir/w$i.log" 2>&1 &
  pids+=($!)
done

started=$(date +%s.%N)
listed=0
for _ in $(seq 1 120); do
  listed=$("$trellis" get hosts --output json 2>/dev/null | grep -c '"id"' || true)
  [ "$listed" -gt "$hosts" ] && break
  sleep 1
done
echo "listed $listed hosts $(echo "$(date +%s.%N) - $started" | bc) s after starting them"

cp "$wasm" "$dir/hello.wasm"
cat >"$dir/app.yaml" <<EOF
name: hundred
version: "1"
components:
  - name: hello
    source: ./hello.wasm
    replicas: $hosts
    requirements: {pool: workers}
EOF
started=$(date +%s.%N)
rc=0
(cd "$dir" && "$trellis" app deploy app.yaml) || rc=$?
echo "app deploy exited $rc after $(echo "$(date +%s.%N) - $started" | bc) s"
echo "hosts the scheduler took for unknown: $(grep -c 'unknown' "$dir/scheduler.log" || true)"
exit "$rc"
