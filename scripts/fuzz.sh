#!/usr/bin/env bash
# make fuzz: each libFuzzer target for FUZZ_SECONDS, from its seeds (Fuzz/corpus/<name>) and the
# corpus it grew before (.build-fuzz/corpus/<name>). Prints each target's executions and any
# crash; exits 1 if any target crashed (the input is in .build-fuzz/crash-*: fix the bug, then
# keep the input in Fuzz/regressions/<name>/ so the normal tests replay it).
set -uo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${FUZZ_SECONDS:-120}
status=0
for pair in FuzzNPY:npy FuzzSafetensors:safetensors FuzzTokenizer:tokenizer FuzzImage:image FuzzJSONLines:jsonl FuzzPickle:pickle FuzzTorch:torch FuzzFeatures:features FuzzShards:shards; do
  t=${pair%%:*}; c=${pair##*:}
  mkdir -p .build-fuzz/corpus/$c
  echo "== $t for ${SECONDS_EACH} s (seeds: Fuzz/corpus/$c)"
  log=.build-fuzz/$t.log
  (cd .build-fuzz && ASAN_OPTIONS=detect_leaks=0 ./release/$t -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix=crash-$c- corpus/$c ../Fuzz/corpus/$c) > "$log" 2>&1
  rc=$?
  grep -E "^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)" "$log" | sed 's/^/   /'
  if [ $rc -ne 0 ]; then
    status=1
    echo "   CRASH (exit $rc):"; grep -E "ERROR|Fatal error|SUMMARY|Test unit written" "$log" | head -5 | sed 's/^/   /'
  fi
done
exit $status
