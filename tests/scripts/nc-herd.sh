#!/usr/bin/env bash
# The scripted shell test: the classic five servers from a temp copy of herd.conf,
# pointed at a stand-in places server, driven with nc; replies checked exactly.
# Usage: tests/scripts/nc-herd.sh PATH/TO/herd
set -euo pipefail
HERD=$(realpath "$1")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok - $*"; PASSED=$((PASSED + 1)); }
PASSED=0

# Free ports from the kernel: five client ports, five bus ports and the stand-in.
read -r -a PORTS <<<"$(python3 -c '
import socket
ss = [socket.socket() for _ in range(11)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')"
PLACES_PORT=${PORTS[10]}

# The stand-in places service: a legacy Nearby Search answer with 8 results; it
# records each request's path and query.
cat >"$TMP/standin.py" <<'PY'
import http.server, json, sys
results = [{"geometry": {"location": {"lat": 34.06 + i / 1000, "lng": -118.44}},
            "name": "Place %d" % i, "place_id": "id%d" % i, "types": ["cafe"],
            "vicinity": "Westwood"} for i in range(8)]
body = json.dumps({"html_attributions": [], "results": results, "status": "OK"}).encode()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        with open(sys.argv[2], "a") as f: f.write(self.path + "\n")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
python3 "$TMP/standin.py" "$PLACES_PORT" "$TMP/requests" &
PIDS+=($!)

# A temp copy of herd.conf on the free ports.
NAMES=(Riley Jaquez Juzang Bernard Campbell)
cp "$ROOT/herd.conf" "$TMP/herd.conf"
for i in "${!NAMES[@]}"; do
  sed -i -E "s/^(server[[:space:]]+${NAMES[$i]}[[:space:]]+)[^[:space:]]+.*/\\1127.0.0.1:${PORTS[$i]} bus 127.0.0.1:${PORTS[$((i + 5))]}/" "$TMP/herd.conf"
done
sed -i -E '/^(log-dir|state-dir|places)/d' "$TMP/herd.conf"
printf 'log-dir logs\nplaces google-legacy http://127.0.0.1:%s/maps/api/place/nearbysearch/json\n' \
  "$PLACES_PORT" >>"$TMP/herd.conf"
GOOGLE_PLACES_API_KEY=scripted-secret-key "$HERD" check --config "$TMP/herd.conf" >/dev/null || fail "herd check"
pass "herd check accepts the temp config"

declare -A PID_OF PORT_OF
for i in "${!NAMES[@]}"; do PORT_OF[${NAMES[$i]}]=${PORTS[$i]}; done
start() {
  GOOGLE_PLACES_API_KEY=scripted-secret-key "$HERD" serve "$1" --config "$TMP/herd.conf" \
    2>>"$TMP/stderr" &
  PID_OF[$1]=$!
  PIDS+=($!)
  for _ in $(seq 100); do nc -z 127.0.0.1 "${PORT_OF[$1]}" 2>/dev/null && return 0; sleep 0.05; done
  fail "$1 did not start listening"
}
for name in "${NAMES[@]}"; do start "$name"; done
for _ in $(seq 100); do nc -z 127.0.0.1 "$PLACES_PORT" 2>/dev/null && break; sleep 0.05; done

ask() { printf '%b' "$2" | nc -N 127.0.0.1 "${PORT_OF[$1]}"; }

# Waits (bounded) until server $1 answers WHATSAT for client $2 with AT line $3.
wait_for() {
  for _ in $(seq 100); do
    [ "$(ask "$1" "WHATSAT $2 10 5\n" | head -n 1)" = "$3" ] && return 0
    sleep 0.05
  done
  fail "$1 never learned $2"
}

# IAMAT at Riley: the exact AT line.
IAMAT='IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503'
AT=$(ask Riley "$IAMAT\n")
[[ "$AT" =~ ^AT\ Riley\ [+-][0-9]+\.[0-9]{9}\ kiwi\.cs\.ucla\.edu\ \+34\.068930-118\.445127\ 1621464827\.959498503$ ]] ||
  fail "IAMAT reply: $AT"
pass "IAMAT at Riley: $AT"

# WHATSAT at Campbell, the farthest server: the stored AT line, the JSON cut to 5
# results, then exactly one empty line.
wait_for Campbell kiwi.cs.ucla.edu "$AT"
ask Campbell 'WHATSAT kiwi.cs.ucla.edu 10 5\n' >"$TMP/reply"
[ "$(head -n 1 "$TMP/reply")" = "$AT" ] || fail "WHATSAT first line: $(head -n 1 "$TMP/reply")"
tail -n +2 "$TMP/reply" | python3 -c '
import json, sys
text = sys.stdin.read()
assert text.endswith("}\n\n") and not text.endswith("}\n\n\n"), repr(text[-10:])
assert "\n\n" not in text[:-2], "blank line inside the JSON"
v = json.loads(text)
assert list(v) == ["html_attributions", "results", "status"], list(v)
assert len(v["results"]) == 5 and v["status"] == "OK", v
' || fail "WHATSAT reply body"
grep -q 'location=%2B34.068930%2C-118.445127&radius=10000&key=scripted-secret-key' "$TMP/requests" ||
  fail "places request: $(tail -n 1 "$TMP/requests")"
pass "WHATSAT at Campbell: AT line, 5 results, one empty line; places asked with radius=10000"

# Invalid lines are echoed byte for byte, and the connection stays open.
OUT=$(ask Jaquez 'foo bar\nIAMAT too few\n\nWHATSAT nobody 10 5\nIAMAT k +1-2 3\n')
EXPECT_HEAD=$'? foo bar\n? IAMAT too few\n? \n? WHATSAT nobody 10 5'
[ "$(printf '%s\n' "$OUT" | head -n 4)" = "$EXPECT_HEAD" ] || fail "invalid lines: $OUT"
[[ "$(printf '%s\n' "$OUT" | tail -n 1)" == "AT Jaquez "* ]] || fail "connection did not stay open: $OUT"
pass "invalid lines get '? LINE' and the connection stays open"

# Kill by port, as the classic graders do: `lsof -ti:PORT` on a server's client port
# lists that server alone (peers link between bus ports), so `| xargs kill` stops it
# alone; the others keep flooding, and it catches up when restarted.
for name in "${NAMES[@]}"; do
  PIDS_ON_PORT=$(lsof -ti:"${PORT_OF[$name]}" | sort -u | tr '\n' ' ')
  [ "$PIDS_ON_PORT" = "${PID_OF[$name]} " ] ||
    fail "lsof -ti:${PORT_OF[$name]} lists '$PIDS_ON_PORT', not $name alone (${PID_OF[$name]})"
done
pass "lsof -ti:PORT lists only that server, for every server"
lsof -ti:"${PORT_OF[Campbell]}" | xargs kill
for _ in $(seq 100); do kill -0 "${PID_OF[Campbell]}" 2>/dev/null || break; sleep 0.05; done
kill -0 "${PID_OF[Campbell]}" 2>/dev/null && fail "Campbell still runs after kill by port"
for name in Riley Jaquez Juzang Bernard; do
  kill -0 "${PID_OF[$name]}" 2>/dev/null || fail "killing Campbell by port stopped $name too"
done
AT2=$(ask Riley 'IAMAT while.away +10.5-20.25 1700000000.5\n')
[[ "$AT2" == "AT Riley "* ]] || fail "second IAMAT: $AT2"
wait_for Bernard while.away "$AT2"
start Campbell
wait_for Campbell while.away "$AT2"
wait_for Campbell kiwi.cs.ucla.edu "$AT"
pass "lsof -ti:PORT | xargs kill stops Campbell alone; restarted, it catches up"

# Kill -9 Jaquez, update at Riley while it is away, restart it: it catches up.
# (in a group whose stderr is discarded: bash's "Killed" notice is expected here)
{ kill -9 "${PID_OF[Jaquez]}"; wait "${PID_OF[Jaquez]}"; } 2>/dev/null || true
AT3=$(ask Riley 'IAMAT while.dead +1.5-2.25 1700000001.5\n')
wait_for Juzang while.dead "$AT3"
start Jaquez
wait_for Jaquez while.dead "$AT3"
wait_for Jaquez while.away "$AT2"
pass "Jaquez killed with -9 and restarted catches up on what it missed"

# Half-close: several commands, the last without a newline, all answered before close.
OUT=$(printf 'IAMAT a +1-1 1\nIAMAT b +2-2 2' | nc -N 127.0.0.1 "${PORT_OF[Juzang]}")
[ "$(printf '%s\n' "$OUT" | wc -l)" = 2 ] || fail "half-close: $OUT"
pass "half-close flushes every reply"

# The key never reaches a log.
if grep -rq scripted-secret-key "$TMP/logs"; then fail "the API key is in a log"; fi
grep -q 'link-up' "$TMP/logs/Riley.log" || fail "no link-up in Riley's log"
pass "logs record links and never the key"

echo "$PASSED passed, 0 failed"
