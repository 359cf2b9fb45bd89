#!/bin/sh
# Private memory of `herd serve` answering from the built-in places data after one
# WHATSAT: Private_Clean + Private_Dirty of /proc/PID/smaps_rollup, in kB (Linux only).
#
#   cargo build --release && tools/places-memory.sh [HERD] [SERVERS]
#
# Starts SERVERS (default 1) lone servers from the same binary, each with a config of one
# server on 127.0.0.1 (ports from 12191 up), no links and no places line, and the API key
# unset, so WHATSAT answers from the built-in data; sends each one IAMAT and one WHATSAT,
# then prints each one's memory. A lone server counts every page of the binary it has
# touched (code included) as private, as no other process maps them; with two or more,
# pages they both touched are shared. Needs python3 for the client.
set -eu
herd=${1:-target/release/herd}
servers=${2:-1}
dir=$(mktemp -d)
pids=""
trap 'for p in $pids; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"' EXIT
i=0
while [ "$i" -lt "$servers" ]; do
    port=$((12191 + i))
    printf 'server Riley 127.0.0.1:%s\nlog-dir %s\n' "$port" "$dir/logs$i" >"$dir/herd$i.conf"
    env -u GOOGLE_PLACES_API_KEY "$herd" serve Riley --config "$dir/herd$i.conf" &
    pids="$pids $!"
    i=$((i + 1))
done
i=0
for pid in $pids; do
    python3 - $((12191 + i)) <<'PY'
import socket, sys, time
port = int(sys.argv[1])
for _ in range(100):
    try:
        s = socket.create_connection(("127.0.0.1", port))
        break
    except OSError:
        time.sleep(0.05)
else:
    sys.exit("herd did not start")
f = s.makefile("rwb")
f.write(b"IAMAT kiwi +34.068930-118.445127 1621464827.9\n")
f.flush()
f.readline()
f.write(b"WHATSAT kiwi 10 5\n")
f.flush()
lines = []
while (line := f.readline()) not in (b"\n", b""):
    lines.append(line)
places = b"".join(lines[1:]).count(b'"name"')
print(f"port {port}: {lines[0].decode().strip()} and {places} places")
PY
    i=$((i + 1))
done
for pid in $pids; do
    printf 'pid %s: ' "$pid"
    awk '/^(Rss|Shared_Clean|Private_Clean|Private_Dirty|Anonymous):/ { printf "%s %s kB, ", $1, $2 }
         /^Private_(Clean|Dirty):/ { kb += $2 }
         END { print "private", kb, "kB" }' "/proc/$pid/smaps_rollup"
done
