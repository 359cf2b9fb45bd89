#!/usr/bin/env bash
# bench.sh: reproduce BENCHMARKS.md. Builds the release binaries, starts the classic
# five-server herd from a temporary config on free loopback ports (never the ports of
# ./herd.conf), with a local stand-in places service, runs every herd-bench mode RUNS
# times, and prints a table of medians beside the targets of issues #4, #9 and #10.
# Latency figures come with their ratio to a do-nothing reference server
# (`herd-bench reference`) measured in the same run; `scale` runs its own herd with
# state-dir on, loads SCALE_N clients and times three crash restarts.
#
#   ./bench.sh                      RUNS=3 SECS=5, everything
#   RUNS=5 SECS=10 ./bench.sh       more and longer runs
#   SKIP_BUILD=1 SKIP_SIZE=1 ./bench.sh   reuse target/release, skip the size build
#   SCALE_N=100000 SCALE_RUNS=1 ./bench.sh  a smaller, single scale run
#   ONLY="latency scale" ./bench.sh        only some sections (conns latency propagate
#                                           throughput whatsat idle exhaust memory scale size)
#
# Every wait below is a bounded loop; every process started here is stopped on exit.
# The herd logs every line, so a full run writes a few GB of logs under TMPDIR (removed
# on exit).
set -euo pipefail
cd "$(dirname "$0")"

RUNS=${RUNS:-3}
SECS=${SECS:-5}
CONNS=${CONNS:-19000}          # idle connections for the `conns` figure
LAT_N=${LAT_N:-20000}          # ping-pong samples per run
PROP_N=${PROP_N:-2000}         # propagation samples per run
TP_CONNS=${TP_CONNS:-64}       # throughput connections
TP_WINDOW=${TP_WINDOW:-16}     # throughput requests in flight per connection
WS_CONNS=${WS_CONNS:-32}       # WHATSAT connections
SCALE_N=${SCALE_N:-1000000}    # clients loaded by `scale`
SCALE_RUNS=${SCALE_RUNS:-$RUNS}  # `scale` runs (each loads SCALE_N clients afresh)
ONLY=${ONLY:-}                 # sections to run (space-separated); empty: all
EXHAUST_NOFILE=256             # ulimit -n of the server that runs out of descriptors
IDLE_SECS=5                    # how long idle CPU is watched
# The stand-in ignores the key; the herd scrubs it from its logs, so it must not be a
# word that client IDs contain ("bench" would turn every ID into "[redacted]").
PLACES_KEY=standin-key-not-secret

HERD=target/release/herd
BENCH=target/release/herd-bench
NAMES=(Riley Jaquez Juzang Bernard Campbell)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/herd-bench.XXXXXX")
RAW="$TMP/raw.txt"             # every summary line, for the record
KEEP=target/bench              # where the raw lines are copied at the end
STARTED=()                     # pids of processes started here
declare -A PID=()              # server name -> pid, of the herd running now

log() { printf '%s\n' "$*" >&2; }
# forget PID: drop a stopped process from STARTED, so its pid, once reused by the
# system, is never signalled by cleanup.
forget() {
    local kept=() pid
    for pid in "${STARTED[@]}"; do [ "$pid" = "$1" ] || kept+=("$pid"); done
    STARTED=("${kept[@]}")
}

cleanup() {
    local pid
    for pid in "${STARTED[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    # herd up stops its children within its 10 s grace; wait at most 12 s for all.
    for _ in $(seq 120); do
        local alive=0
        for pid in "${STARTED[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for pid in "${STARTED[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    # Servers orphaned by a killed `herd up`: only processes running our temp config.
    for pid in "${PID[@]}"; do
        grep -qF "$TMP" "/proc/$pid/cmdline" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    done
    # Servers of a killed `herd-bench scale`: only processes running our scale config.
    for cmdline in /proc/[0-9]*/cmdline; do
        grep -qF "$TMP/scale.conf" "$cmdline" 2>/dev/null || continue
        pid=${cmdline#/proc/}; pid=${pid%/cmdline}
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [ -s "$RAW" ]; then mkdir -p "$KEEP" && cp "$RAW" "$KEEP/last-run.txt"; fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- build -------------------------------------------------------------------------
if [ -z "${SKIP_BUILD:-}" ]; then
    log "building release binaries..."
    cargo build --release --bins >&2
fi
[ -x "$HERD" ] && [ -x "$BENCH" ] || { log "missing $HERD or $BENCH"; exit 1; }
# Room for CONNS connections on both ends (the servers raise their own soft limit too).
HARD=$(ulimit -Hn)
[ "$HARD" = unlimited ] && HARD=1048576
ulimit -n "$HARD" 2>/dev/null || true
[ "$(ulimit -n)" -ge $((CONNS + 256)) ] ||
    log "warning: ulimit -n is $(ulimit -n); $CONNS connections need more (lower CONNS or raise ulimit -Hn)"

# --- free ports: 9 in a row (5 servers, stand-in, exhaustion server, reference,
#     zero-config server), each with PORT + 10000 free too: a server's default bus
#     port (SPEC §3). Client ports stay below 22768 so that no bus port falls in the
#     kernel's ephemeral range (32768 up), where a client connection could hold it.
port_busy() { ss -Htan "( sport = :$1 )" 2>/dev/null | grep -q .; }
NPORTS=9
BASE=
for base in $(seq 12100 10 22750); do
    ok=1
    for i in $(seq "$NPORTS"); do
        { port_busy $((base + i)) || port_busy $((base + i + 10000)); } && { ok=0; break; }
    done
    [ "$ok" = 1 ] && { BASE=$base; break; }
done
[ -n "$BASE" ] || { log "no $NPORTS free ports (and their bus ports) between 12101 and 22759"; exit 1; }
port() { echo $((BASE + $1)); }   # 1..5 servers, 6 stand-in, 7 exhaustion, 8 reference, 9 zero-config
addr() { echo "127.0.0.1:$(port "$1")"; }
RILEY=$(addr 1)
BERNARD=$(addr 4)
CAMPBELL=$(addr 5)
STANDIN=$(addr 6)
SOLO=$(addr 7)
REFERENCE=$(addr 8)
ZERO=$(addr 9)
# want SECTION: true when ONLY is empty or names SECTION.
want() { [ -z "$ONLY" ] || [[ " $ONLY " == *" $1 "* ]]; }

# classic_herd: the classic five servers and six links on the ports picked above. No
# bus addresses: each server's bus is its client port + 10000 (SPEC §3).
classic_herd() {
    cat <<EOF
server Riley     $(addr 1)
server Jaquez    $(addr 2)
server Juzang    $(addr 3)
server Bernard   $(addr 4)
server Campbell  $(addr 5)
link Riley   Jaquez
link Riley   Juzang
link Bernard Jaquez
link Bernard Juzang
link Bernard Campbell
link Juzang  Campbell
EOF
}
{ echo "# written by bench.sh: the classic herd on free ports"; classic_herd; cat <<EOF
places google-legacy http://$STANDIN/json
log-dir $TMP/logs
EOF
} >"$TMP/herd.conf"
# The scale runs: the same herd with state on disk and offline places (the built-in
# data set), so a polling WHATSAT (radius 1 km, 1 place) asks no other process.
{ echo "# written by bench.sh: the classic herd with state-dir, for herd-bench scale"; classic_herd; cat <<EOF
places offline
state-dir state
log-dir logs-scale
EOF
} >"$TMP/scale.conf"
# A lone server with nothing but its address: no key, so offline places.
mkdir -p "$TMP/zero"
cat >"$TMP/zero/herd.conf" <<EOF
server Zero $ZERO
EOF
cat >"$TMP/solo.conf" <<EOF
# written by bench.sh: one server to run out of descriptors
server Solo $SOLO
places google-legacy http://$STANDIN/json
log-dir $TMP/logs-solo
EOF

# wait_listening PORT...: true once every port listens (at most 10 s).
wait_listening() {
    for _ in $(seq 100); do
        local all=1 p
        for p in "$@"; do ss -Htln "( sport = :$p )" | grep -q . || { all=0; break; }; done
        [ "$all" = 1 ] && return 0
        sleep 0.1
    done
    return 1
}

# --- the stand-in places service ----------------------------------------------------
"$BENCH" standin --addr "$STANDIN" --max-secs 7200 >"$TMP/standin.out" 2>&1 &
STARTED+=($!)
wait_listening "$(port 6)" || { log "stand-in did not start"; cat "$TMP/standin.out" >&2; exit 1; }
# --- the do-nothing reference server, for the latency ratios --------------------------
"$BENCH" reference --addr "$REFERENCE" --max-secs 7200 >"$TMP/reference.out" 2>&1 &
REF_PID=$!
STARTED+=("$REF_PID")
wait_listening "$(port 8)" || { log "reference server did not start"; cat "$TMP/reference.out" >&2; exit 1; }

# --- herd lifecycle -----------------------------------------------------------------
UP_PID=
start_herd() {
    : >"$TMP/up.out"
    GOOGLE_PLACES_API_KEY="$PLACES_KEY" "$HERD" up --config "$TMP/herd.conf" >"$TMP/up.out" 2>&1 &
    UP_PID=$!
    STARTED+=("$UP_PID")
    wait_listening "$(port 1)" "$(port 2)" "$(port 3)" "$(port 4)" "$(port 5)" ||
        { log "herd did not start"; cat "$TMP/up.out" >&2; exit 1; }
    local name i=1
    for name in "${NAMES[@]}"; do
        PID[$name]=$(sed -n "s/^herd up: started $name (pid \([0-9]*\)).*/\1/p" "$TMP/up.out")
        # Else the listener of its port, as ss reports it.
        [ -n "${PID[$name]}" ] ||
            PID[$name]=$(ss -Htlnp "( sport = :$(port $i) )" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -n 1)
        [ -n "${PID[$name]}" ] || { log "no pid for $name"; exit 1; }
        i=$((i + 1))
    done
    # Links are up once a report at Riley reaches Campbell (at most 10 tries).
    for _ in $(seq 10); do
        "$BENCH" propagate --from "$RILEY" --to "$CAMPBELL" --n 1 --lookups 0 --max-secs 10 >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    log "the herd's links did not come up"; exit 1
}
# stop_pid PID [TENTHS]: SIGTERM, SIGKILL after TENTHS × 0.1 s (default 100), reap.
stop_pid() {
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq "${2:-100}"); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    forget "$1"
}
stop_herd() {
    stop_pid "$UP_PID" 150
    # The ports must be free before the next herd binds them.
    for _ in $(seq 100); do
        local busy=0 i
        for i in 1 2 3 4 5; do ss -Htln "( sport = :$(port $i) )" | grep -q . && busy=1; done
        [ "$busy" = 0 ] && break
        sleep 0.1
    done
}

# cpu_ticks PID: user+system ticks (USER_HZ) used so far.
cpu_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
# herd_ticks: CPU ticks of all five servers so far.
herd_ticks() {
    local name sum=0
    for name in "${NAMES[@]}"; do sum=$((sum + $(cpu_ticks "${PID[$name]}"))); done
    echo "$sum"
}
# settle: wait (at most 15 s) until the herd has used no CPU for a whole second, so
# log writers catching up after a load do not count as idle CPU.
settle() {
    local before after
    for _ in $(seq 15); do
        before=$(herd_ticks); sleep 1; after=$(herd_ticks)
        [ "$before" = "$after" ] && return 0
    done
    log "  the herd was still busy after 15 s"
}
# wakeups PID: context switches of all its threads so far.
wakeups() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ { s += $2 } END { print s + 0 }'; }

# run_bench NAME ARGS...: runs herd-bench, records and echoes its summary line.
run_bench() {
    local name=$1; shift
    local out line status=0
    out=$("$BENCH" "$@" 2>&1) || status=$?
    line=$(printf '%s\n' "$out" | grep '^mode=' | tail -n 1)
    [ -n "$line" ] || line="mode=$name error=no_summary"
    [ "$status" = 0 ] || line="$line exit=$status"
    printf '%s %s\n' "$name" "$line" >>"$RAW"
    printf '%s\n' "$out" | grep -v '^mode=' | sed 's/^/    /' >&2
    log "  $name: $line"
    printf '%s\n' "$line"
}

# get KEY LINE: the value of KEY in a summary line.
get() { printf '%s\n' "$2" | tr ' ' '\n' | sed -n "s/^$1=//p" | head -n 1; }
# median VALUES...: the median of the numeric values ("-" when there are none).
median() {
    printf '%s\n' "$@" | grep -E '^-?[0-9.]+$' | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# all KEY NAME: every run's KEY for runs recorded as NAME.
all() { grep "^$2 " "$RAW" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
med() { median $(all "$1" "$2"); }
# runs NAME: "a / b / c" of KEY over the runs, to show the spread.
runs() { all "$1" "$2" | paste -sd/ - | sed 's#/# / #g'; }

log "herd-bench on $(nproc) cores; ports $((BASE + 1))..$((BASE + NPORTS)) (bus +10000); $RUNS runs of $SECS s"

# ratio NAME A B KEYS...: records, for each KEY, A's value ÷ B's value (summary lines)
# as KEY_ratio under NAME: the herd's figure against the reference server's.
ratio() {
    local name=$1 a=$2 b=$3 line="mode=$1" key; shift 3
    for key in "$@"; do
        line="$line ${key}_ratio=$(awk -v x="$(get "$key" "$a")" -v y="$(get "$key" "$b")" \
            'BEGIN { if (x + 0 > 0 && y + 0 > 0) printf "%.1f", x / y; else print "-" }')"
    done
    printf '%s %s\n' "$name" "$line" >>"$RAW"
    log "  $name: $line"
}

# --- 1. connections: a fresh herd per run, so freed memory of an earlier run cannot
#        hide the cost of the next. Bernard, because it dials all its links: with
#        peers on the client port (before the bus port), a server's accepted peer
#        links count against its connection limit. --------------------------------------
if want conns; then
    for r in $(seq "$RUNS"); do
        start_herd
        log "conns run $r: $CONNS connections to Bernard"
        run_bench conns conns --addr "$BERNARD" --n "$CONNS" --pid "${PID[Bernard]}" >/dev/null || true
        stop_herd
    done
fi

# --- 2. the main herd (only if a section needs it) ------------------------------------
MAIN=0
for section in idle latency propagate throughput whatsat; do want "$section" && MAIN=1; done
if [ "$MAIN" = 1 ]; then
    start_herd
    HERD_PIDS=$(for name in "${NAMES[@]}"; do printf '%s,' "${PID[$name]}"; done)
fi
idle_cpu() {  # idle_cpu TAG: CPU ticks and wakeups per server over IDLE_SECS
    local name t0=() w0=() i=0 line="mode=idle secs=$IDLE_SECS" total=0 wtotal=0
    for name in "${NAMES[@]}"; do t0+=("$(cpu_ticks "${PID[$name]}")"); w0+=("$(wakeups "${PID[$name]}")"); done
    sleep "$IDLE_SECS"
    for name in "${NAMES[@]}"; do
        local dt=$(($(cpu_ticks "${PID[$name]}") - t0[i])) dw=$(($(wakeups "${PID[$name]}") - w0[i]))
        line="$line ${name}_ticks=$dt ${name}_wakeups=$dw"
        total=$((total + dt)); wtotal=$((wtotal + dw)); i=$((i + 1))
    done
    line="$line ticks=$total wakeups=$wtotal"
    printf '%s %s\n' "$1" "$line" >>"$RAW"
    log "  $1: $line"
}
if want idle; then
    # One `herd status` first, as an operator would: its handshake timeouts end early,
    # and a reactor left with their deadlines would wake each server 5 s later.
    "$HERD" status --config "$TMP/herd.conf" >/dev/null 2>&1 || log "herd status: not every link up"
    # The link check's client (start_herd) exits just before this: its connections'
    # close, the EOF read and logged, is its own traffic, not idle time. Let it land.
    sleep 1
    log "idle CPU of the fresh herd over $IDLE_SECS s"
    idle_cpu idle-fresh
fi

# peer_updates: AT lines all five servers have logged as read from a peer so far.
peer_updates() { cat "$TMP"/logs/*.log | grep -c ' in peer [^ ]* AT ' || true; }
if want latency; then
    for r in $(seq "$RUNS"); do
        log "latency run $r: ping-pong at Riley, herd CPU until Campbell holds the last update"
        before=$(peer_updates)
        herd=$(run_bench latency latency --addr "$RILEY" --n "$LAT_N" --converge "$CAMPBELL" --pids "$HERD_PIDS") || true
        # The floor of a ping-pong update's CPU: every message the herd reads for it
        # (the IAMAT, then each link message) costs at least what one round trip costs
        # the do-nothing server (a wake-up, a read, a write).
        sleep 0.5   # the log writers' last batch, and any late duplicate
        messages=$(awk -v d="$(( $(peer_updates) - before ))" -v n="$(get acked "$herd")" \
            'BEGIN { if (n + 0 > 0) printf "%.2f", d / n; else print "-" }')
        log "latency run $r: the same against the do-nothing reference server, its CPU too"
        ref=$(run_bench latency-ref latency --addr "$REFERENCE" --n "$LAT_N" --pids "$REF_PID") || true
        ratio latratio "$herd" "$ref" p50_us p99_us
        floor=$(awk -v m="$messages" -v c="$(get herd_cpu_us_per_update "$ref")" -v h="$(get herd_cpu_us_per_update "$herd")" \
            'BEGIN { if (m + 0 > 0 && c + 0 > 0 && h + 0 > 0) printf "floor_us=%.1f herd_floor_ratio=%.2f", (1 + m) * c, h / ((1 + m) * c); else print "floor_us=- herd_floor_ratio=-" }')
        printf 'floor mode=floor link_messages_per_update=%s %s\n' "$messages" "$floor" >>"$RAW"
        log "  floor: link messages per update $messages, $floor"
    done
fi
if want propagate; then
    for r in $(seq "$RUNS"); do
        log "propagate run $r: Riley -> Campbell (2 hops)"
        run_bench propagate propagate --from "$RILEY" --to "$CAMPBELL" --n "$PROP_N" >/dev/null || true
    done
fi
if want throughput; then
    for r in $(seq "$RUNS"); do
        log "throughput run $r"
        declare -A T0=()
        for name in "${NAMES[@]}"; do T0[$name]=$(cpu_ticks "${PID[$name]}"); done
        start_ns=$(date +%s%N)
        herd=$(run_bench throughput throughput --addr "$RILEY" --conns "$TP_CONNS" --window "$TP_WINDOW" \
            --secs "$SECS" --converge "$CAMPBELL" --converge-timeout-ms 10000 --pids "$HERD_PIDS") || true
        wall=$(( ($(date +%s%N) - start_ns) / 1000000 ))
        cpu="mode=herdcpu wall_ms=$wall"
        for name in "${NAMES[@]}"; do
            cpu="$cpu ${name}_pct=$(( ($(cpu_ticks "${PID[$name]}") - T0[$name]) * 1000 / wall ))"
        done
        cuts=$(cat "$TMP"/logs/*.log | grep -c ' link-slow ' || true)
        cpu="$cpu link_cuts_total=$cuts"
        printf 'herdcpu %s\n' "$cpu" >>"$RAW"
        log "  CPU % of a core per server over the run (incl. connect and convergence): $cpu"
        log "throughput run $r: the same load against the do-nothing reference server"
        ref=$(run_bench throughput-ref throughput --addr "$REFERENCE" --conns "$TP_CONNS" --window "$TP_WINDOW" \
            --secs "$SECS") || true
        ratio tpratio "$herd" "$ref" p50_us p99_us
    done
fi
if want whatsat; then
    for r in $(seq "$RUNS"); do
        log "whatsat run $r"
        run_bench whatsat whatsat --addr "$RILEY" --conns "$WS_CONNS" --secs "$SECS" >/dev/null || true
    done
fi
if want idle; then
    log "idle CPU after the load over $IDLE_SECS s (once the herd has settled)"
    settle
    idle_cpu idle-after
fi
[ "$MAIN" = 0 ] || stop_herd

# --- 3. out of descriptors ------------------------------------------------------------
if want exhaust || want latency; then
    GOOGLE_PLACES_API_KEY="$PLACES_KEY" bash -c 'ulimit -n "$0"; exec "$1" serve Solo --config "$2"' \
        "$EXHAUST_NOFILE" "$HERD" "$TMP/solo.conf" >"$TMP/solo.out" 2>&1 &
    SOLO_PID=$!
    STARTED+=("$SOLO_PID")
    wait_listening "$(port 7)" || { log "solo server did not start"; exit 1; }
    if want latency; then
        for r in $(seq "$RUNS"); do
            log "latency run $r against a lone server (no peers): the herd's share of ping-pong"
            run_bench latency-solo latency --addr "$SOLO" --n "$LAT_N" --pids "$SOLO_PID" >/dev/null || true
        done
    fi
    if want exhaust; then
        for r in $(seq "$RUNS"); do
            log "exhaust run $r: $((EXHAUST_NOFILE + 150)) connections to a server with ulimit -n $EXHAUST_NOFILE"
            run_bench exhaust exhaust --addr "$SOLO" --n $((EXHAUST_NOFILE + 150)) --pid "$SOLO_PID" >/dev/null || true
        done
    fi
    stop_pid "$SOLO_PID"
fi

# --- 4. private memory of a lone zero-config server (offline places), fresh per run ---
if want memory; then
    for r in $(seq "$RUNS"); do
        env -u GOOGLE_PLACES_API_KEY "$HERD" serve Zero --config "$TMP/zero/herd.conf" >"$TMP/zero.out" 2>&1 &
        ZERO_PID=$!
        STARTED+=("$ZERO_PID")
        wait_listening "$(port 9)" || { log "zero-config server did not start"; cat "$TMP/zero.out" >&2; exit 1; }
        log "memory run $r: a lone zero-config server after one WHATSAT"
        run_bench memory memory --addr "$ZERO" --pid "$ZERO_PID" >/dev/null || true
        stop_pid "$ZERO_PID"
    done
fi

# --- 5. scale: SCALE_N clients held, then three crash restarts, a fresh herd and empty
#        state per run. herd-bench runs the servers itself (it kills and restarts them).
if want scale; then
    for r in $(seq "$SCALE_RUNS"); do
        rm -rf "$TMP/state" "$TMP/logs-scale"
        mkdir -p "$TMP/state"
        log "scale run $r: $SCALE_N clients through one connection to Riley, then restarts"
        run_bench scale scale --herd "$HERD" --config "$TMP/scale.conf" --n "$SCALE_N" >/dev/null || true
    done
    # The scale logs hold every line of millions of updates.
    rm -rf "$TMP/state" "$TMP/logs-scale"
fi

# --- 6. binary size -----------------------------------------------------------------
SIZE=$(stat -c %s "$HERD")
SIZE_NB=-
if want size && [ -z "${SKIP_SIZE:-}" ]; then
    log "building herd without the built-in places data (for its size)..."
    if cargo build --release --no-default-features --bin herd --target-dir target/nobuiltin >&2; then
        SIZE_NB=$(stat -c %s target/nobuiltin/release/herd)
    fi
fi
printf 'size mode=size bytes=%s bytes_nobuiltin=%s\n' "$SIZE" "$SIZE_NB" >>"$RAW"

# --- the table ------------------------------------------------------------------------
# verdict VALUE OP LIMIT: "yes" / "NO" / "-".
verdict() {
    case "$1" in -|'') echo "-"; return;; esac
    awk -v v="$1" -v l="$3" -v op="$2" 'BEGIN {
        ok = (op == "<=") ? v <= l : (op == ">=") ? v >= l : (op == "<") ? v < l : v == l
        print ok ? "yes" : "**NO**" }'
}
row() {  # row FIGURE VALUE OP LIMIT UNIT SPREAD (OP "info": no target)
    if [ "$3" = info ]; then
        printf '| %s | %s %s | — | | %s |\n' "$1" "$2" "$5" "$6"
    else
        printf '| %s | %s %s | %s %s %s | %s | %s |\n' "$1" "$2" "$5" "$3" "$4" "$5" "$(verdict "$2" "$3" "$4")" "$6"
    fi
}
fails() { grep "^$1 " "$RAW" | grep -c 'exit=' || true; }

cat <<EOF

## herd-bench results ($(date -u +%Y-%m-%d), median of $RUNS runs; scale: $SCALE_RUNS)

Machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), Linux $(uname -r); $(rustc --version); herd $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo '+changes').
The load generator runs on the same machine as the whole herd.

| figure | median | target | met | runs |
| --- | --- | --- | --- | --- |
EOF
row "IAMAT throughput at Riley (${TP_CONNS} conns × window ${TP_WINDOW}, ${SECS} s)" "$(med rps throughput)" ">=" 100000 "replies/s" "$(runs rps throughput)"
row "… Campbell converged after the run" "$(med converge_ms throughput)" "<=" 1000 "ms" "$(runs converge_ms throughput)"
row "… pipelined latency p50" "$(med p50_us throughput)" info - "µs" "$(runs p50_us throughput)"
row "… pipelined latency p99" "$(med p99_us throughput)" info - "µs" "$(runs p99_us throughput)"
row "… reference server, same load, p50" "$(med p50_us throughput-ref)" info - "µs" "$(runs p50_us throughput-ref)"
row "… reference server, same load, p99" "$(med p99_us throughput-ref)" info - "µs" "$(runs p99_us throughput-ref)"
row "… herd ÷ reference, p50" "$(med p50_us_ratio tpratio)" info - "×" "$(runs p50_us_ratio tpratio)"
row "… herd ÷ reference, p99" "$(med p99_us_ratio tpratio)" info - "×" "$(runs p99_us_ratio tpratio)"
row "… herd CPU per update, 5 servers, until Campbell converged" "$(med herd_cpu_us_per_update throughput)" "<=" 8 "µs" "$(runs herd_cpu_us_per_update throughput)"
row "Ping-pong IAMAT p50" "$(med p50_us latency)" "<=" 30 "µs" "$(runs p50_us latency)"
row "Ping-pong IAMAT p99" "$(med p99_us latency)" "<=" 100 "µs" "$(runs p99_us latency)"
row "… reference server, p50" "$(med p50_us latency-ref)" info - "µs" "$(runs p50_us latency-ref)"
row "… reference server, p99" "$(med p99_us latency-ref)" info - "µs" "$(runs p99_us latency-ref)"
row "… herd ÷ reference, p50" "$(med p50_us_ratio latratio)" info - "×" "$(runs p50_us_ratio latratio)"
row "… herd ÷ reference, p99" "$(med p99_us_ratio latratio)" info - "×" "$(runs p99_us_ratio latratio)"
row "… herd CPU per update, 5 servers, until Campbell holds the last" "$(med herd_cpu_us_per_update latency)" "<=" 40 "µs" "$(runs herd_cpu_us_per_update latency)"
row "… reference server, its CPU per round trip" "$(med herd_cpu_us_per_update latency-ref)" info - "µs" "$(runs herd_cpu_us_per_update latency-ref)"
row "… link messages read per update, 5 servers (AT lines logged \"in peer\")" "$(med link_messages_per_update floor)" info - "" "$(runs link_messages_per_update floor)"
row "… do-nothing floor: (1 + link messages) × the reference's CPU per round trip" "$(med floor_us floor)" info - "µs" "$(runs floor_us floor)"
row "… herd CPU per update ÷ that floor" "$(med herd_floor_ratio floor)" info - "×" "$(runs herd_floor_ratio floor)"
row "… same, a lone server with no peers, p50" "$(med p50_us latency-solo)" info - "µs" "$(runs p50_us latency-solo)"
row "… same, a lone server with no peers, p99" "$(med p99_us latency-solo)" info - "µs" "$(runs p99_us latency-solo)"
row "… same, a lone server with no peers, its CPU per update" "$(med herd_cpu_us_per_update latency-solo)" info - "µs" "$(runs herd_cpu_us_per_update latency-solo)"
row "Propagation Riley → Campbell p50 (full WHATSAT reply, stand-in places)" "$(med p50_us propagate)" "<=" 300 "µs" "$(runs p50_us propagate)"
row "Propagation Riley → Campbell p99" "$(med p99_us propagate)" "<=" 1000 "µs" "$(runs p99_us propagate)"
row "… of which the final WHATSAT at Campbell, p50" "$(med whatsat_p50_us propagate)" info - "µs" "$(runs whatsat_p50_us propagate)"
row "… report reached Campbell (± one poll), p50" "$(med seen_p50_us propagate)" info - "µs" "$(runs seen_p50_us propagate)"
row "… report reached Campbell (± one poll), p99" "$(med seen_p99_us propagate)" info - "µs" "$(runs seen_p99_us propagate)"
row "Idle connections held by Bernard" "$(med held conns)" ">=" "$CONNS" "" "$(runs held conns)"
row "… server RSS per idle connection" "$(med rss_per_conn_bytes conns)" "<=" 1024 "bytes" "$(runs rss_per_conn_bytes conns)"
row "… time to open them all" "$(med open_ms conns)" "<" 2000 "ms" "$(runs open_ms conns)"
row "… ping-pong p99 while held" "$(med held_p99_us conns)" "<" 1000 "µs" "$(runs held_p99_us conns)"
row "WHATSAT, 20 results from the stand-in (${WS_CONNS} conns)" "$(med rps whatsat)" ">=" 5000 "replies/s" "$(runs rps whatsat)"
row "… WHATSAT p99" "$(med p99_us whatsat)" "<" 5000 "µs" "$(runs p99_us whatsat)"
row "Lone zero-config server (offline places) after one WHATSAT: private memory" "$(med private_bytes memory)" "<=" 2000000 "bytes" "$(runs private_bytes memory)"
row "… its RSS" "$(med rss_kib memory)" info - "KiB" "$(runs rss_kib memory)"
row "Idle herd, wakeups in ${IDLE_SECS} s, 5 servers (fresh but for one WHATSAT and one herd status)" "$(all wakeups idle-fresh)" "<=" 0 "" "CPU $(all ticks idle-fresh) ticks"
row "Idle herd, wakeups in ${IDLE_SECS} s, 5 servers (after the load)" "$(all wakeups idle-after)" "<=" 0 "" "CPU $(all ticks idle-after) ticks"
row "Scale: $SCALE_N clients through one connection to Riley" "$(med load_rps scale)" info - "updates/s" "$(runs load_rps scale)"
row "… Riley RSS per client held" "$(med rss_per_client_bytes scale)" "<=" 200 "bytes" "$(runs rss_per_client_bytes scale)"
row "… (a) Campbell kill -9, empty state: holds a 1000-client sample" "$(med a_hold_ms scale)" "<=" 2000 "ms" "$(runs a_hold_ms scale)"
row "… (a) bytes Campbell received on its links" "$(med a_link_bytes scale)" info - "bytes" "$(runs a_link_bytes scale)"
row "… (b) Campbell kill -9, 1000 new clients, own state: holds them" "$(med b_hold_ms scale)" "<=" 500 "ms" "$(runs b_hold_ms scale)"
row "… (b) bytes Campbell received on its links" "$(med b_link_bytes scale)" info - "bytes" "$(runs b_link_bytes scale)"
row "… (c) Riley kill -9, own state: first reply at all" "$(med c_first_ms scale)" info - "ms" "$(runs c_first_ms scale)"
row "… (c) Riley answers WHATSAT for a client it held" "$(med c_one_ms scale)" "<=" 1000 "ms" "$(runs c_one_ms scale)"
row "… (c) Riley holds the 1000-client sample" "$(med c_hold_ms scale)" info - "ms" "$(runs c_hold_ms scale)"
row "Out of descriptors: server CPU meanwhile" "$(med cpu_pct exhaust)" "<=" 5 "% of a core" "$(runs cpu_pct exhaust)"
row "… service back after they free up" "$(med recover_ms exhaust)" "<=" 1000 "ms" "$(runs recover_ms exhaust)"
row "Release binary, stripped, with the built-in places data" "$SIZE" info - "bytes" ""
row "Release binary, stripped, without the built-in places data" "$SIZE_NB" "<=" 3000000 "bytes" "--no-default-features"
cat <<EOF

Failed runs (exit status not 0): throughput $(fails throughput), latency $(fails latency), reference $(fails latency-ref)/$(fails throughput-ref), propagate $(fails propagate), conns $(fails conns), whatsat $(fails whatsat), memory $(fails memory), scale $(fails scale), exhaust $(fails exhaust).
Server CPU during throughput (% of one core, median): $(for n in "${NAMES[@]}"; do printf '%s %s, ' "$n" "$(med "${n}_pct" herdcpu)"; done | sed 's/, $//').
Peer links cut for a full queue (PEER_QUEUE) during the throughput runs, all servers: $(all link_cuts_total herdcpu | tail -n 1).
Idle wakeups per server over ${IDLE_SECS} s: fresh $(grep '^idle-fresh ' "$RAW" | tr ' ' '\n' | sed -n 's/_wakeups=/ /p' | paste -sd, -); after the load $(grep '^idle-after ' "$RAW" | tr ' ' '\n' | sed -n 's/_wakeups=/ /p' | paste -sd, -).
Raw summary lines: $KEEP/last-run.txt
EOF
