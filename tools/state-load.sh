#!/usr/bin/env bash
# Times a server's start on its state file: milliseconds from its `start` log line to its
# `state-loaded` line, and the CPU (all threads) it used until then, RUNS times.
#
#     tools/state-load.sh BIN CONFIG NAME [RUNS]
#
# CONFIG must set `state-dir` and `log-dir` (paths relative to where this is run, as herd
# reads them); NAME's state file is left as it is (fill it first, e.g. with
# `herd-bench scale --herd BIN --config CONFIG`, which leaves 1M-record states behind).
# Used for BENCHMARKS.md ("Results after the fourth round"): a 1M-record state.
set -euo pipefail
bin=$1 config=$2 name=$3 runs=${4:-5}
logdir=$(awk '$1 == "log-dir" { print $2 }' "$config")
[ -n "$logdir" ] || { echo "state-load.sh: $config sets no log-dir" >&2; exit 2; }
log=$logdir/$name.log
ms=() cpu=()
for _ in $(seq "$runs"); do
  rm -f "$log"
  "$bin" serve "$name" --config "$config" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 1000); do grep -q ' state-loaded ' "$log" 2>/dev/null && break; sleep 0.01; done
  cpu+=("$(awk '{ print ($14 + $15) * 10 }' "/proc/$pid/stat")")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  ms+=("$(python3 - "$log" <<'PY'
import datetime, sys
at = {}
for line in open(sys.argv[1], errors="replace"):
    stamp, kind = line.split(" ", 2)[:2]
    at.setdefault(kind, datetime.datetime.fromisoformat(stamp.rstrip("Z")))
print(int((at["state-loaded"] - at["start"]).total_seconds() * 1000))
PY
)")
done
echo "start to state-loaded, ms: ${ms[*]}"
echo "CPU until then (10 ms ticks, all threads), ms: ${cpu[*]}"
