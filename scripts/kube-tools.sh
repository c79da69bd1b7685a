#!/usr/bin/env bash
# Builds the Go test binaries (kube-apiserver, kubectl, etcd, helm, and Jaeger as the tracing
# backend) from the pinned Go modules under harness/kube-tools/, once per version, into
#   ${KGW_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kgw-tools}/<tool>-<version>/<binary>
# and prints one `name=path` line per binary (progress goes to stderr). Go is test
# infrastructure only: the product stays Rust. Needs nothing but Go (no cgo, no make).
# Usage: scripts/kube-tools.sh [binary...]   (default: all of them)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mods=$root/harness/kube-tools
cache=${KGW_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kgw-tools}

# The pinned Go, never a downloaded toolchain; the modules are resolved from go.sum.
export GOTOOLCHAIN=local CGO_ENABLED=0
export GOFLAGS="-mod=mod -buildvcs=false -trimpath"

# binary | module dir | main package | module whose version keys the cache
tools=(
  "kube-apiserver|kubernetes|k8s.io/kubernetes/cmd/kube-apiserver|k8s.io/kubernetes"
  "kubectl|kubernetes|k8s.io/kubernetes/cmd/kubectl|k8s.io/kubernetes"
  "etcd|etcd|go.etcd.io/etcd/server/v3|go.etcd.io/etcd/server/v3"
  "helm|helm|helm.sh/helm/v3/cmd/helm|helm.sh/helm/v3"
  "jaeger|jaeger|github.com/jaegertracing/jaeger/cmd/jaeger|github.com/jaegertracing/jaeger"
)

# The required version of a module, read from go.mod (no Go needed to check the cache).
pinned_version() {
  awk -v m="$2" '($1 == m || ($1 == "require" && $2 == m)) && $0 !~ /=>/ { print ($1 == m ? $2 : $3); exit }' "$mods/$1/go.mod"
}

# Stamps the version the binary reports, as each project's release build does.
ldflags() {
  local bin=$1 version=$2
  case $bin in
    kube-apiserver | kubectl)
      local minor=${version#v1.}; minor=${minor%%.*}
      local f=""
      for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        f+=" -X $p.gitVersion=$version -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
      done
      echo "-s -w$f" ;;
    helm) echo "-s -w -X helm.sh/helm/v3/internal/version.version=$version" ;;
    jaeger) echo "-s -w -X github.com/jaegertracing/jaeger/internal/version.latestVersion=$version" ;;
    *) echo "-s -w" ;;
  esac
}

build() {
  local bin=$1 dir=$2 pkg=$3 out=$4 version=$5
  local start=$SECONDS tmp="$out.tmp.$$"
  echo "kube-tools: building $bin $version (the first build takes minutes)" >&2
  mkdir -p "$(dirname "$out")"
  (cd "$mods/$dir" && go build -ldflags "$(ldflags "$bin" "$version")" -o "$tmp" "$pkg") \
    || { rm -f "$tmp"; echo "kube-tools: building $bin failed" >&2; return 1; }
  mv -f "$tmp" "$out"
  echo "kube-tools: built $bin in $((SECONDS - start)) s" >&2
}

mkdir -p "$cache"
# One builder at a time across processes (parallel test binaries, several checkouts);
# without flock(1) the atomic rename below still keeps every binary whole.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$cache/.lock"
  flock 9
fi

wanted=("$@")
for entry in "${tools[@]}"; do
  IFS='|' read -r bin dir pkg module <<<"$entry"
  if [ ${#wanted[@]} -gt 0 ] && [[ " ${wanted[*]} " != *" $bin "* ]]; then
    continue
  fi
  version=$(pinned_version "$dir" "$module")
  [ -n "$version" ] || { echo "kube-tools: no version of $module in $dir/go.mod" >&2; exit 1; }
  out=$cache/$dir-$version/$bin
  [ -x "$out" ] || build "$bin" "$dir" "$pkg" "$out" "$version"
  echo "$bin=$out"
done
