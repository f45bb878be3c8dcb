#!/usr/bin/env bash
# Fuzz the parsers with cargo-fuzz (libFuzzer, AddressSanitizer, debug assertions): every
# target in fuzz/fuzz_targets/ for the given time, starting from the committed seeds
# (fuzz/seeds/<target>/) plus what earlier runs found (fuzz/corpus/<target>/, git-ignored).
# Exits non-zero if any target finds a crash (panic, overflow, stack overflow, OOM, timeout);
# the input is left in fuzz/artifacts/<target>/ and the log in fuzz/logs/<target>.log.
#
#   scripts/fuzz.sh                 # every target, 600 s each, one after the other
#   scripts/fuzz.sh 60              # 60 s each
#   scripts/fuzz.sh 600 config      # only the named targets
#   FUZZ_JOBS=2 scripts/fuzz.sh     # two targets at a time (one core each)
#
# Needs a C++ compiler (libfuzzer-sys builds libFuzzer). The only network it uses is crates.io
# (cargo-fuzz, if missing, and the fuzz crate's dependencies). cargo-fuzz passes nightly-only
# flags (-Zsanitizer=address); RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"

secs=${1:-600}
shift || true
case "$secs" in '' | *[!0-9]*) echo "usage: scripts/fuzz.sh [seconds-per-target] [target...]" >&2; exit 2 ;; esac
jobs=${FUZZ_JOBS:-1}

command -v c++ >/dev/null || { echo "scripts/fuzz.sh: needs a C++ compiler (apt-get install g++)" >&2; exit 1; }
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi
export RUSTC_BOOTSTRAP=1

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

cargo fuzz build
mkdir -p logs artifacts
stamp=$(mktemp)
trap 'rm -f "$stamp"' EXIT

run() { # target
  local t=$1
  mkdir -p "corpus/$t" "artifacts/$t"
  # -timeout: an input taking 10 s is a hang; -rss_limit_mb: 2 GiB is an OOM.
  cargo fuzz run "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    ${FUZZ_ARGS:-} >"logs/$t.log" 2>&1
}

declare -A rc=()
pending=("${targets[@]}")
while [ ${#pending[@]} -gt 0 ]; do
  batch=("${pending[@]:0:$jobs}")
  pending=("${pending[@]:$jobs}")
  declare -A pid=()
  for t in "${batch[@]}"; do
    echo "fuzzing $t for ${secs}s (log: fuzz/logs/$t.log)"
    run "$t" &
    pid[$t]=$!
  done
  for t in "${batch[@]}"; do
    if wait "${pid[$t]}"; then rc[$t]=0; else rc[$t]=$?; fi
  done
  unset pid
done

failed=0
printf '\n%-8s %6s %12s %8s %7s %7s %12s  %s\n' target secs execs exec/s cov ft corpus result
for t in "${targets[@]}"; do
  log="logs/$t.log"
  ran=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' <<<"$last")
  found=$(find "artifacts/$t" -type f -newer "$stamp" | wc -l)
  result=ok
  if [ "${rc[$t]}" != 0 ] || [ "$found" != 0 ]; then
    result="FAILED (exit ${rc[$t]}, $found new artifact(s) in fuzz/artifacts/$t)"
    failed=1
  fi
  printf '%-8s %6s %12s %8s %7s %7s %12s  %s\n' "$t" "${ran:--}" "${execs:--}" "${speed:--}" \
    "${cov:--}" "${ft:--}" "${corp:--}" "$result"
done
exit "$failed"
