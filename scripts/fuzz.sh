#!/usr/bin/env bash
# make fuzz: each libFuzzer target for FUZZ_SECONDS (default 120), or for FUZZ_RUNS executions
# when that is set (then FUZZ_SECONDS, if given, caps each run), from its seeds
# (Fuzz/corpus/<name>) and the corpus it grew before (.build-fuzz/corpus/<name>). FUZZ_ONLY
# (target names, space-separated) runs a subset. Prints each target's executions and any crash;
# exits 1 if any target crashed (the input is in .build-fuzz/crash-*: fix the bug, then keep the
# input in Fuzz/regressions/<name>/ so the normal tests replay it).
set -uo pipefail
cd "$(dirname "$0")/.."
limits=()
if [ -n "${FUZZ_RUNS:-}" ]; then
  limits+=(-runs="$FUZZ_RUNS")
  [ -n "${FUZZ_SECONDS:-}" ] && limits+=(-max_total_time="$FUZZ_SECONDS")
else
  limits+=(-max_total_time="${FUZZ_SECONDS:-120}")
fi
status=0
for pair in FuzzNPY:npy FuzzSafetensors:safetensors FuzzTokenizer:tokenizer FuzzImage:image FuzzJSONLines:jsonl FuzzPickle:pickle FuzzTorch:torch FuzzFeatures:features FuzzShards:shards FuzzCLIP:clip; do
  t=${pair%%:*}; c=${pair##*:}
  if [ -n "${FUZZ_ONLY:-}" ] && [[ " $FUZZ_ONLY " != *" $t "* ]]; then continue; fi
  mkdir -p .build-fuzz/corpus/$c
  echo "== $t (${limits[*]}; seeds: Fuzz/corpus/$c)"
  log=.build-fuzz/$t.log
  start=$(date +%s)
  # No stack trace kept per allocation (malloc_context_size=0): most of an execution's time in
  # the allocation-heavy targets (tokenizer, torch); a crash input replays with full traces.
  (cd .build-fuzz && ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:malloc_context_size=0} ./release/$t "${limits[@]}" -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix=crash-$c- corpus/$c ../Fuzz/corpus/$c) > "$log" 2>&1
  rc=$?
  echo "   seconds: $(( $(date +%s) - start ))"
  grep -E "^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)" "$log" | sed 's/^/   /'
  if [ $rc -ne 0 ]; then
    status=1
    echo "   CRASH (exit $rc):"; grep -E "ERROR|Fatal error|SUMMARY|Test unit written" "$log" | head -5 | sed 's/^/   /'
  fi
done
exit $status
