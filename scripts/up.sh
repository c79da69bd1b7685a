#!/usr/bin/env bash
# Brings the whole system up on the directory source with the example in examples/basic:
# nats-server, controller, gateway, discovery, access-log, an echo backend and Envoy, all on
# loopback. Stays in the foreground; Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-tools.sh
cargo build --workspace --bins
exec target/debug/kgw-up --config-dir "${1:-examples/basic}"
