#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for SECONDS each (default 60) and prints the executions
# per target. Exits non-zero when any target finds a crash (libFuzzer saves the input under
# fuzz/artifacts/<target>/; commit it to fuzz/corpus/<target>/ as a regression seed once fixed).
#
# Usage: scripts/fuzz.sh [SECONDS]
# Needs the nightly toolchain; installs cargo-fuzz when it is missing. Each target fuzzes a
# scratch corpus (fuzz/target/corpus-work/<target>) seeded from the committed one, so the
# committed corpus stays small.
set -euo pipefail

secs="${1:-60}"
case "$secs" in
  '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/fuzz"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz (a few minutes)..." >&2
  cargo install cargo-fuzz
fi

targets=(decode_record open_journal_dir manager_ops)
mkdir -p "$root/fuzz/target"
build_log="$root/fuzz/target/fuzz-build.log"
if ! cargo +nightly fuzz build >"$build_log" 2>&1; then
  echo "FUZZ BUILD FAILED (full log: $build_log):" >&2
  grep -E '^(error|warning: unused)' -A8 "$build_log" | head -n 60 >&2 || tail -n 40 "$build_log" >&2
  exit 1
fi
tail -n 1 "$build_log" >&2

# sled flushes on every durable append; a RAM-backed temp dir keeps executions fast.
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then
  export TMPDIR=/dev/shm
fi

status=0
for t in "${targets[@]}"; do
  work="$root/fuzz/target/corpus-work/$t"
  log="$root/fuzz/target/fuzz-$t.log"
  mkdir -p "$work"
  # -timeout: one input running this long is a hang (the targets bound their own waits lower).
  if cargo +nightly fuzz run "$t" "$work" "corpus/$t" -- \
      -max_total_time="$secs" -timeout=120 -rss_limit_mb=4096 -print_final_stats=1 \
      >"$log" 2>&1; then
    result="ok"
  else
    result="CRASH (see $log and fuzz/artifacts/$t/)"
    status=1
  fi
  execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | awk '{print $2}' | tail -n 1)"
  echo "$t: ${execs:-?} executions in ${secs}s: $result"
done
exit "$status"
