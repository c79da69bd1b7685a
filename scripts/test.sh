#!/usr/bin/env bash
# Runs every test: unit and golden tests, the Helm chart checks, and the end-to-end tests
# with real nats-server and Envoy (which start the binaries built here).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-tools.sh
scripts/kube-tools.sh
cargo build --workspace --bins
cargo test --workspace "$@"
# A short run of every fuzz target (fuzz/, cargo-fuzz) over its committed corpus.
scripts/fuzz.sh
