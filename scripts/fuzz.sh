#!/usr/bin/env bash
# Coverage-guided fuzzing: cargo-fuzz (libFuzzer) with the nightly toolchain rustup has.
# Usage: scripts/fuzz.sh SECONDS TARGET...
# Each target runs SECONDS from its seed corpus (fuzz/corpus/<target>, committed) plus
# the inputs earlier runs found (kept outside the clone); a crash fails the run and
# leaves its input in fuzz/artifacts/<target>/ (make it a regression test).
#
# No sanitizer (`-s none`): every crate here forbids unsafe code, so what fuzzing can
# find is panics and broken invariants (the targets assert them), and without ASan each
# target runs several times more inputs per second.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="$1"
shift
tools="${TILLGATE_TOOLS:-/var/cache/tillgate-tools}"
export PATH="$tools/cargo/bin:$PATH"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz into $tools/cargo"
  cargo install --root "$tools/cargo" cargo-fuzz --version 0.13.2 --locked
fi
target_dir="${FUZZ_TARGET_DIR:-/var/cache/tillgate-ci/fuzz-target}"
found="${FUZZ_CORPUS_DIR:-/var/cache/tillgate-ci/fuzz-corpus}"
cd fuzz
cargo +nightly fuzz build --release --debug-assertions -s none --target-dir "$target_dir" 2>&1 | tail -n 3
summary=()
for t in "$@"; do
  mkdir -p "$found/$t"
  log=$(mktemp)
  if ! cargo +nightly fuzz run --release --debug-assertions -s none --target-dir "$target_dir" "$t" \
      "$found/$t" "corpus/$t" -- -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log"
    grep -m 3 -A 2 "panicked at" "$log" || true
    echo "fuzz: $t FAILED; the input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  corpus=$(ls "$found/$t" | wc -l)
  summary+=("$t: ${seconds}s, ${execs:-?} executions, corpus $corpus")
  rm -f "$log"
done
printf 'fuzz: %s\n' "${summary[@]}"
