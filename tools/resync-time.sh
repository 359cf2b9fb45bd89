#!/usr/bin/env bash
# Times a full resync into an empty server, with no client polling it: every other
# server of CONFIG starts on its own state, NAME starts with its state file removed, and
# once NAME has used no CPU for 250 ms this prints the time from NAME's `start` log line
# to the last AT line it took from a peer, and NAME's CPU (all threads).
#
#     tools/resync-time.sh BIN CONFIG NAME
#
# CONFIG must set `state-dir` and `log-dir`; fill the states first (e.g. `herd-bench
# scale --herd BIN --config CONFIG`, 1M clients). NAME's state file is deleted; copy the
# state dir aside to run again. Used for BENCHMARKS.md ("Results after the fourth round").
set -euo pipefail
bin=$1 config=$2 name=$3
statedir=$(awk '$1 == "state-dir" { print $2 }' "$config")
logdir=$(awk '$1 == "log-dir" { print $2 }' "$config")
[ -n "$statedir" ] && [ -n "$logdir" ] || { echo "resync-time.sh: $config needs state-dir and log-dir" >&2; exit 2; }
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
for other in $(awk '$1 == "server" { print $2 }' "$config"); do
  [ "$other" = "$name" ] && continue
  "$bin" serve "$other" --config "$config" >/dev/null 2>&1 &
  pids+=($!)
done
sleep 3
rm -f "$statedir/$name.state" "$logdir/$name".log*
"$bin" serve "$name" --config "$config" >/dev/null 2>&1 &
pid=$!
pids+=("$pid")
sleep 0.5
prev=-1
while :; do
  t=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
  [ "$t" = "$prev" ] && break
  prev=$t
  sleep 0.25
done
python3 - "$logdir" "$name" "$t" <<'PY'
import datetime, glob, sys
logdir, name, ticks = sys.argv[1], sys.argv[2], int(sys.argv[3])
start = last = None
for path in glob.glob(f"{logdir}/{name}.log*"):
    for line in open(path, errors="replace"):
        parts = line.split(" ", 4)
        if len(parts) < 4:
            continue
        if parts[1] == "start" and start is None:
            start = parts[0]
        if parts[1:3] == ["in", "peer"] and parts[4].startswith("AT "):
            last = max(last or parts[0], parts[0])
stamp = lambda s: datetime.datetime.fromisoformat(s.rstrip("Z"))
print(f"{name}: start to the last AT line from a peer {int((stamp(last) - stamp(start)).total_seconds() * 1000)} ms, CPU {ticks * 10} ms")
PY
