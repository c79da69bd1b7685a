#!/usr/bin/env bash
# Builds the fuzz targets of fuzz/ (cargo-fuzz, libFuzzer; the parsers of outside input)
# and runs each for a number of executions over its committed corpus. Any crash, panic,
# timeout or out-of-memory fails the run; the input is kept in fuzz/artifacts/<target>/.
#
#   scripts/fuzz.sh [RUNS-PER-TARGET] [TARGET...]     (default: 100000 runs, every target)
#
# New inputs found go to a scratch directory, never into the committed corpus. For a long
# run that should grow the corpus: fuzz/README.md. Works on the stable toolchain (no
# sanitizer: Rust is memory-safe; panics, overflows and debug assertions are the bugs
# looked for). cargo-fuzz installs into ~/.cache/kgw-tools/cargo-fuzz (crates.io only),
# builds go to ~/.cache/kgw-fuzz/target (KGW_FUZZ_TARGET_DIR), both outside the repo.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-100000}
[ $# -gt 0 ] && shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(manifest admission_review als_message kv_value rest_xds_body)

cargo_fuzz_version=0.13.2
tools=${KGW_TOOLS_DIR:-$HOME/.cache/kgw-tools}/cargo-fuzz
export PATH="$tools/bin:$PATH"
if ! cargo fuzz --version 2>/dev/null | grep -q "$cargo_fuzz_version"; then
  echo "installing cargo-fuzz $cargo_fuzz_version into $tools" >&2
  cargo install cargo-fuzz --locked --version "$cargo_fuzz_version" --root "$tools" --quiet
fi

target_dir=${KGW_FUZZ_TARGET_DIR:-$HOME/.cache/kgw-fuzz/target}
triple=$(rustc -vV | sed -n 's/^host: //p')
start=$(date +%s)
# -s none: no sanitizer, so no nightly-only flag; cargo-fuzz still instruments for
# coverage and turns on debug assertions and overflow checks.
(cd fuzz && nice -n 10 cargo fuzz build -s none --target-dir "$target_dir" --target "$triple")
echo "fuzz: targets built in $(($(date +%s) - start)) s" >&2

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in "${targets[@]}"; do
  mkdir -p "$scratch/$target" "fuzz/artifacts/$target"
  t0=$(date +%s)
  if ! "$target_dir/$triple/release/$target" -runs="$runs" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="fuzz/artifacts/$target/" -print_final_stats=1 \
    "$scratch/$target" "fuzz/corpus/$target" >"$scratch/$target.log" 2>&1; then
    tail -n 60 "$scratch/$target.log" >&2
    echo "fuzz: $target FAILED; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$scratch/$target.log")
  cov=$(grep -o 'cov: [0-9]*' "$scratch/$target.log" | tail -n 1)
  echo "fuzz: $target ok: ${execs:-?} executions, $cov, $(($(date +%s) - t0)) s" >&2
done
echo "fuzz: ${#targets[@]} targets, 0 crashes, $(($(date +%s) - start)) s in all" >&2
