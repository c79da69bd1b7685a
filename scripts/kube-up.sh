#!/usr/bin/env bash
# Brings the whole system up on the Kubernetes source: builds etcd, kube-apiserver and kubectl
# from Go into a cache on first use (scripts/kube-tools.sh), starts them, applies
# examples/basic through the API server, starts nats-server, the four processes (gateway and
# discovery watching the API server), an echo backend and Envoy, prints KUBECONFIG=<path> and
# stays in the foreground; Ctrl-C stops everything it started. Needs root (the echo backend
# runs in a network namespace: the API server refuses loopback endpoints).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-tools.sh
scripts/kube-tools.sh >/dev/null
cargo build --workspace --bins
exec target/debug/kgw-kube-up --config-dir "${1:-examples/basic}"
