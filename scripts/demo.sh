#!/usr/bin/env bash
# Starts a local lattice (nats-server + one host), runs the http-hello component behind the
# http-server provider on http://127.0.0.1:${PORT:-8080}, and a counter component (under /count)
# that keeps its count in NATS KV through a linked provider, and shows both answering.
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/prereqs.sh
cargo build --workspace --locked
cargo build --release --target wasm32-wasip2 --manifest-path tests/components/Cargo.toml \
  --target-dir "${CARGO_TARGET_DIR:-target}/wasm-components"

target="${CARGO_TARGET_DIR:-target}"
trellis="$target/debug/trellis"
wasm="$target/wasm-components/wasm32-wasip2/release/http_hello.wasm"
counter="$target/wasm-components/wasm32-wasip2/release/kv_counter.wasm"
port="${PORT:-8080}"
nats_port="${NATS_PORT:-4222}"
export TRELLIS_NATS_URL="nats://127.0.0.1:$nats_port" TRELLIS_LATTICE=demo

# `trellis up` spawns nats-server itself; keep the URL out of its environment so it does.
env -u TRELLIS_NATS_URL "$trellis" up --nats-port "$nats_port" &
up=$!
stop() { kill -TERM $up 2>/dev/null || true; wait $up 2>/dev/null || true; }
trap stop EXIT
trap 'stop; exit 0' INT TERM

for _ in $(seq 100); do
  "$trellis" get hosts --output json 2>/dev/null | grep -q '"id"' && break
  kill -0 $up 2>/dev/null || { echo "trellis up exited" >&2; exit 1; }
  sleep 0.2
done
"$trellis" get hosts
"$trellis" start component "$wasm" --id hello
"$trellis" start provider http-server --id web
"$trellis" link put --source web --target hello --interface wasi:http/incoming-handler \
  --config "address=127.0.0.1:$port"
# A second component on the same address under /count, counting in NATS JetStream KV through
# a linked key-value provider (run inside the host).
"$trellis" start component "$counter" --id counter
"$trellis" start provider keyvalue-nats --id kv --builtin
"$trellis" link put --source counter --target kv --interface wasi:keyvalue/store
"$trellis" link put --source web --target counter --interface wasi:http/incoming-handler \
  --name count --config "address=127.0.0.1:$port" --config path_prefix=/count
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$port/" >/dev/null 2>&1 && break; sleep 0.2; done

echo
echo "\$ curl http://127.0.0.1:$port/hello"
curl -s "http://127.0.0.1:$port/hello"
echo "\$ curl http://127.0.0.1:$port/count/visits; curl http://127.0.0.1:$port/count/visits"
curl -s "http://127.0.0.1:$port/count/visits"; echo
curl -s "http://127.0.0.1:$port/count/visits"; echo
echo
echo "The lattice is up. Try: curl http://127.0.0.1:$port/anything   (Ctrl-C to stop)"
wait $up
