#!/usr/bin/env bash
# The benchmark (issue 4): builds in release mode, starts nats-server, the four processes
# and Envoy on loopback blocks of their own (so it runs beside a running system), runs every
# scenario, prints a table of each figure beside its goal and, as its last line, the path of
# the JSON it wrote (target/bench/). `--quick` runs every scenario small (CI runs it as a test).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-tools.sh
cargo build --release --workspace --bins
exec target/release/kgw-bench "$@"
