#!/usr/bin/env bash
# chaos.sh: the classic five-server herd under clients and faults, then a check that no
# acknowledged location was lost or left stale anywhere, and how long the herd took to
# converge after the last fault was healed.
#
#   ./chaos.sh [--secs N] [--herd PATH] [--mode auto|netns|loopback] [--seed S]
#              [--clients N] [--rate R] [--end heal|catchup|quiet-crash] [--victim NAME]
#              [--sever-secs N] [--keep] [--no-state]
#
#   --secs N     how long clients and faults run (default 60); then heal, quiet, check
#   --herd PATH  the herd binary (default target/release/herd, built if missing)
#   --mode       netns: each server on its own host (a network namespace), the herd's
#                six links six point-to-point veth cables, clients on a bridge. Faults:
#                kill -9, host crash (cables pulled, kill -9, the host's network stack
#                thrown away), SIGTERM, each followed by a restart; cutting one link
#                (`ip link set ... down`); isolating a server (its cables and LAN port
#                down); severing one (its cables down; clients still reach it).
#                loopback: 127.0.0.1 ports. Faults: kill -9 or SIGTERM + restart, and
#                freezing a server with SIGSTOP/SIGCONT (as its peers see it, a frozen
#                server is partitioned: connected, silent). No network faults.
#                auto (default): netns if it works here, else loopback.
#   --seed S     the fault schedule and the clients' choices (default: from the clock)
#   --clients N  client IDs (default 50); --rate R: IAMATs per second, all clients (100)
#   --end heal   (default) at the end: heal everything, restart everything down, stop
#                the clients, check
#   --end catchup  at the end: heal; then netns: sever a server and cut a link, clients
#                on for --sever-secs (2), clients off, crash the severed server's host
#                (what it acknowledged meanwhile is on its disk alone); loopback:
#                freeze a server, kill -9 another, clients off; then heal and restart,
#                and check: the convergence time is purely catch-up, with no traffic
#   --end quiet-crash  at the end: heal, clients off; then, in quiet, crash a server's
#                host (netns; loopback: kill -9), restart it, and send IAMATs for 2 s to
#                that server alone; check that the others learn them
#   --victim NAME  the server the catchup / quiet-crash end hits (default: at random)
#   --sever-secs N how long the catchup end keeps its victim severed (default 2)
#   --keep       keep the temp dir (config, logs, state, fault log) even on PASS
#   --no-state   run the herd without state-dir: not a promise, a check of the checker
#                (a server that forgets what it acknowledged should make the run FAIL)
#
# Every 1-3 s one fault: a stop, restarted after 0.5-2 s (never more than two servers
# down at once; after SIGTERM the server must exit 0 by itself within 10 s), or a
# partition healed after 1-3 s (at most two at once). Then every server is polled with
# `WHATSAT <client> 1 1` until all five hold, for every client, the newest acknowledged
# location (or a newer one whose reply was lost) and agree; 30 s or FAIL. converge_ms
# counts from the last heal or restart; quiet_converge_ms from the later of that and
# the clients' stop.
#
# Prints one summary line `chaos: mode=... result=PASS|FAIL`; exit 0 only on PASS. The
# trap stops every process and removes every namespace, veth and bridge made here, on
# any exit; on FAIL the temp dir is kept and its path printed. Every loop is bounded.
set -uo pipefail
export LC_ALL=C  # EPOCHREALTIME with a dot
cd "$(dirname "$0")"
ROOT=$(pwd)

SECS=60 HERD_ARG="" MODE=auto SEED="" CLIENTS=50 RATE=100 KEEP=0 END=heal NO_STATE=0 VICTIM="" SEVER_SECS=2
CONVERGE_TIMEOUT=30
usage() { sed -n '2,50p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --secs) SECS=$2; shift 2 ;;
    --herd) HERD_ARG=$2; shift 2 ;;
    --mode) MODE=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --end) END=$2; shift 2 ;;
    --no-state) NO_STATE=1; shift ;;
    --victim) VICTIM=$2; shift 2 ;;
    --sever-secs) SEVER_SECS=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "chaos.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$MODE" in auto|netns|loopback) ;; *) echo "chaos.sh: --mode auto|netns|loopback" >&2; exit 2 ;; esac
case "$END" in heal|catchup|quiet-crash) ;; *) echo "chaos.sh: --end heal|catchup|quiet-crash" >&2; exit 2 ;; esac
[[ "$SEVER_SECS" =~ ^[0-9]+$ ]] || { echo "chaos.sh: --sever-secs takes whole seconds" >&2; exit 2; }
[[ "$SECS" =~ ^[0-9]+$ ]] || { echo "chaos.sh: --secs takes whole seconds" >&2; exit 2; }
[ -n "$SEED" ] || SEED=$(( $(date +%s) % 100000 ))
[[ "$SEED" =~ ^[0-9]+$ ]] || { echo "chaos.sh: --seed takes a number" >&2; exit 2; }
RANDOM=$SEED

say() { printf 'chaos: %s\n' "$*" >&2; }
now_ms() { local t=${EPOCHREALTIME/./}; echo $(( t / 1000 )); }
now_ns() { local t=${EPOCHREALTIME/./}; echo $(( t * 1000 )); }
# Random choices set R (never in a subshell: a subshell reseeds RANDOM, and the
# schedule must follow from --seed).
rand_between() { R=$(( $1 + RANDOM % ($2 - $1 + 1) )); }  # inclusive, ms

NAMES=(Riley Jaquez Juzang Bernard Campbell)
LINKS=("Riley Jaquez" "Riley Juzang" "Bernard Jaquez" "Bernard Juzang" "Bernard Campbell" "Juzang Campbell")
if [ -n "$VICTIM" ] && [[ " ${NAMES[*]} " != *" $VICTIM "* ]]; then
  echo "chaos.sh: --victim is one of ${NAMES[*]}" >&2; exit 2
fi

# --- the binary -----------------------------------------------------------------------
if [ -n "$HERD_ARG" ]; then
  SRC_HERD=$HERD_ARG
else
  SRC_HERD=target/release/herd
  if [ ! -x "$SRC_HERD" ]; then
    say "building $SRC_HERD"
    cargo build --release >&2 || exit 2
  fi
fi
[ -x "$SRC_HERD" ] || { echo "chaos.sh: no executable herd at $SRC_HERD" >&2; exit 2; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/herd-chaos.XXXXXX")
mkdir -p "$TMP/logs" "$TMP/state"
# A private copy: a rebuild during the run cannot swap the binary under restarts.
cp "$SRC_HERD" "$TMP/herd"
HERD=$TMP/herd
CLIENT_PY=$ROOT/tests/scripts/chaos_client.py
# The interpreter itself, not a version-manager shim (shims take ~0.3 s per start).
PY=$(python3 -c 'import sys; print(sys.executable)') || { echo "chaos.sh: needs python3" >&2; exit 2; }
FAULTS_LOG=$TMP/faults.log
: >"$FAULTS_LOG"

declare -A TERM_AT TERM_TOOK STARTED_AT
declare -A PID ADDR NS DOWN_UNTIL FROZEN_UNTIL ISO_UNTIL ISO_HOW CUT_UNTIL CUT_END
CLIENT_PID=""
CHECK_PID=""
NETNS_MADE=()
BRNS=""
FAILED=0
FINISHED=0
STARTED=0  # the herd ran: keep the temp dir on failure

cleanup() {
  local n pid ns
  exec 3>&2 2>/dev/null  # no "Killed" notices for the processes stopped here
  for n in "${NAMES[@]}"; do
    pid=${PID[$n]:-}
    if [ -n "$pid" ]; then kill -CONT "$pid" 2>/dev/null; kill -KILL "$pid" 2>/dev/null; fi
  done
  [ -n "$CLIENT_PID" ] && kill -KILL "$CLIENT_PID" 2>/dev/null
  [ -n "$CHECK_PID" ] && kill -KILL "$CHECK_PID" 2>/dev/null
  { wait; } 2>/dev/null
  for ns in "${NETNS_MADE[@]}"; do
    # Anything still running in a namespace made here was started here.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null  # takes its veths (and the bridge) with it
  done
  exec 2>&3 3>&-
  if [ "$STARTED" = 1 ] && { [ "$FAILED" = 1 ] || [ "$FINISHED" = 0 ] || [ "$KEEP" = 1 ]; }; then
    say "kept $TMP (config, logs, state, faults.log, acked.json)"
  else
    rm -rf "$TMP"
  fi
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM HUP

# --- mode -------------------------------------------------------------------------------
netns_works() {
  local probe="herd-chaos-$$-probe"
  ip netns add "$probe" 2>/dev/null || return 1
  local ok=1
  ip -n "$probe" link add a0 type veth peer name a1 2>/dev/null && ok=0
  ip netns del "$probe" 2>/dev/null
  return $ok
}
netem_works() {
  local probe="herd-chaos-$$-probe"
  ip netns add "$probe" 2>/dev/null || return 1
  local ok=1
  ip -n "$probe" link set lo up && tc -n "$probe" qdisc add dev lo root netem delay 1ms 2>/dev/null && ok=0
  ip netns del "$probe" 2>/dev/null
  return $ok
}
if [ "$MODE" = auto ]; then
  if [ "$(id -u)" = 0 ] && command -v ip >/dev/null && netns_works; then MODE=netns; else MODE=loopback; fi
elif [ "$MODE" = netns ]; then
  netns_works || { echo "chaos.sh: network namespaces do not work here (root? iproute2?)" >&2; exit 2; }
fi
NETEM=no
if [ "$MODE" = netns ] && command -v tc >/dev/null && netem_works; then NETEM=yes; fi

# --- the herd's network ---------------------------------------------------------------
lower() { echo "$1" | tr '[:upper:]' '[:lower:]'; }
declare -A HOSTIP LANIP LANMAC BUS
# A host: its namespace, its address on lo, its LAN port on the bridge.
make_host() {
  local n=$1 l; l=$(lower "$1")
  ip netns add "${NS[$n]}" || return 1
  ip -n "${NS[$n]}" link set lo up
  ip -n "${NS[$n]}" addr add "${HOSTIP[$n]}/32" dev lo
  # A fixed MAC, like a real NIC's: the LAN's ARP cache stays right across a host crash.
  ip -n "$BRNS" link add "p-$l" type veth peer name lan0 address "${LANMAC[$n]}" \
    netns "${NS[$n]}" || return 1
  ip -n "$BRNS" link set "p-$l" master br0
  ip -n "$BRNS" link set "p-$l" up
  ip -n "${NS[$n]}" addr add "${LANIP[$n]}/24" dev lan0
  ip -n "${NS[$n]}" link set lan0 up
  ip -n "$BRNS" route replace "${HOSTIP[$n]}/32" via "${LANIP[$n]}"
}
# A cable for the link a-b: a veth pair, each end with its host's address and the
# other's as the far end (so bringing an end back up brings the route back).
make_cable() {
  local a=$1 b=$2 la lb
  la=$(lower "$a") lb=$(lower "$b")
  ip -n "${NS[$a]}" link add "to-$lb" type veth peer name "to-$la" netns "${NS[$b]}" || return 1
  ip -n "${NS[$a]}" addr add "${HOSTIP[$a]}/32" peer "${HOSTIP[$b]}/32" dev "to-$lb"
  ip -n "${NS[$b]}" addr add "${HOSTIP[$b]}/32" peer "${HOSTIP[$a]}/32" dev "to-$la"
  ip -n "${NS[$a]}" link set "to-$lb" up
  ip -n "${NS[$b]}" link set "to-$la" up
  if [ "$NETEM" = yes ]; then
    tc -n "${NS[$a]}" qdisc add dev "to-$lb" root netem delay 5ms 2ms
    tc -n "${NS[$b]}" qdisc add dev "to-$la" root netem delay 5ms 2ms
  fi
}
if [ "$MODE" = netns ]; then
  # Server i listens on 10.213.1.i (on its lo and on each of its cables, as a /32 with
  # the linked peer's address as the far end, so a healed cable brings its route back).
  # Each link is a veth cable between the two namespaces; each server also has a LAN
  # port (lan0, 10.213.0.i/24) on a bridge in its own namespace, where the clients run
  # (10.213.0.254) with a route to every server's address. Nothing touches the root
  # namespace.
  BRNS="herd-chaos-$$-lan"
  ip netns add "$BRNS" || exit 2
  NETNS_MADE+=("$BRNS")
  ip -n "$BRNS" link set lo up
  ip -n "$BRNS" link add br0 type bridge || exit 2
  ip -n "$BRNS" addr add 10.213.0.254/24 dev br0
  ip -n "$BRNS" link set br0 up
  i=0
  for n in "${NAMES[@]}"; do
    i=$((i + 1))
    NS[$n]="herd-chaos-$$-$(lower "$n")"
    HOSTIP[$n]="10.213.1.$i"
    LANIP[$n]="10.213.0.$i"
    LANMAC[$n]=$(printf '02:13:00:00:00:%02x' "$i")
    NETNS_MADE+=("${NS[$n]}")
  done
  for n in "${NAMES[@]}"; do make_host "$n" || exit 2; done
  for link in "${LINKS[@]}"; do make_cable $link || exit 2; done
  PORT=12101
  for n in "${NAMES[@]}"; do ADDR[$n]="${HOSTIP[$n]}:$PORT"; done
  IN_LAN=(ip netns exec "$BRNS")
else
  read -r -a PORTS <<<"$(python3 -c '
import socket
ss = [socket.socket() for _ in range(10)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')"
  i=0
  for n in "${NAMES[@]}"; do
    ADDR[$n]="127.0.0.1:${PORTS[$i]}"
    BUS[$n]="bus 127.0.0.1:${PORTS[$((i + 5))]}"
    i=$((i + 1))
  done
  IN_LAN=()
fi

{
  echo "# chaos.sh mode=$MODE seed=$SEED"
  for n in "${NAMES[@]}"; do printf 'server %-9s %s %s\n' "$n" "${ADDR[$n]}" "${BUS[$n]:-}"; done
  for link in "${LINKS[@]}"; do echo "link $link"; done
  echo "places offline"
  echo "log-dir logs"
  [ "$NO_STATE" = 1 ] || echo "state-dir state"
} >"$TMP/herd.conf"
# The herd authenticates its links (HMAC-SHA256 handshakes with nonces) as in production:
# a fresh random secret per run, in the environment only.
HERD_SECRET=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
export HERD_SECRET
"$HERD" check --config "$TMP/herd.conf" >/dev/null || { echo "chaos.sh: herd check failed" >&2; exit 2; }
SERVERS_ARG=$(for n in "${NAMES[@]}"; do printf '%s=%s,' "$n" "${ADDR[$n]}"; done)
SERVERS_ARG=${SERVERS_ARG%,}

# --- servers ------------------------------------------------------------------------------
start_server() {
  local n=$1
  if [ "$MODE" = netns ]; then
    # `ip netns exec` execs the command: $! is the server itself.
    ip netns exec "${NS[$n]}" "$HERD" serve "$n" --config "$TMP/herd.conf" \
      >>"$TMP/logs/$n.stderr" 2>&1 &
  else
    "$HERD" serve "$n" --config "$TMP/herd.conf" >>"$TMP/logs/$n.stderr" 2>&1 &
  fi
  PID[$n]=$!
  STARTED_AT[$n]=$(now_ms)
}
# True if server $1's process has exited (or is a zombie): read from /proc, no fork.
is_dead() {
  local pid=${PID[$1]:-} st
  [ -n "$pid" ] || return 0
  [ -r "/proc/$pid/stat" ] || return 0
  read -r _ _ st _ <"/proc/$pid/stat" 2>/dev/null || return 0
  [ "$st" = Z ] || [ "$st" = X ]
}

FAULTS=0 KILLS=0 HOST_CRASHES=0 TERMS=0 TERM_FAILS=0 TERM_SLOWEST=0 CUTS=0 ISOLATIONS=0 SEVERS=0 FREEZES=0 CRASHES=0
START_MS=$(now_ms)
fault() { echo "$(( $(now_ms) - START_MS )) $*" >>"$FAULTS_LOG"; say "t=$(( ($(now_ms) - START_MS) / 1000 ))s $*"; }

STARTED=1
for n in "${NAMES[@]}"; do start_server "$n"; done
"${IN_LAN[@]}" "$PY" "$CLIENT_PY" ready --servers "$SERVERS_ARG" --timeout 15 || {
  FAILED=1; echo "chaos.sh: the herd did not start listening" >&2; exit 1; }

# --- clients ----------------------------------------------------------------------------------
"${IN_LAN[@]}" "$PY" "$CLIENT_PY" run --servers "$SERVERS_ARG" --out "$TMP/acked.json" \
  --clients "$CLIENTS" --rate "$RATE" --seed "$SEED" --prefix "chaos$SEED-" \
  --max-secs $((SECS + 120)) 2>>"$TMP/client.log" &
CLIENT_PID=$!
HERD_ID=$(sha256sum "$HERD" | cut -c1-12)
GIT_ID=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)
if [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]; then GIT_ID="$GIT_ID+changes"; fi
say "mode=$MODE netem=$NETEM seed=$SEED secs=$SECS end=$END clients=$CLIENTS rate=$RATE/s"
say "herd=$SRC_HERD sha256=$HERD_ID git=$GIT_ID date=$(date -u +%Y-%m-%dT%H:%M:%SZ) tmp=$TMP"

# --- faults -------------------------------------------------------------------------------
down_count() {  # killed or frozen
  local n c=0
  for n in "${NAMES[@]}"; do
    if [ -n "${DOWN_UNTIL[$n]:-}" ] || [ -n "${FROZEN_UNTIL[$n]:-}" ]; then c=$((c + 1)); fi
  done
  echo "$c"
}
partition_count() {
  local k c=0
  for k in "${!ISO_UNTIL[@]}" "${!CUT_UNTIL[@]}"; do [ -n "$k" ] && c=$((c + 1)); done
  echo "$c"
}
pick() { [ $# -gt 0 ] || return 1; local a=("$@"); R=${a[RANDOM % $#]}; }

do_kill() {  # $1: a server to kill, else one at random; $2: process, host or term, else any
  local c=() n
  for n in "${NAMES[@]}"; do
    [ -z "${DOWN_UNTIL[$n]:-}" ] && [ -z "${FROZEN_UNTIL[$n]:-}" ] && c+=("$n")
  done
  if [ -n "${1:-}" ]; then n=$1; else pick "${c[@]}" || return 1; n=$R; fi
  LAST_KILLED=$n
  # The kind: a process crash (kill -9), a host crash (netns: the whole machine but its
  # disk), or a graceful stop (SIGTERM: the server drains and exits by itself; it is
  # restarted once it has, and must have exited 0 within STOP_LIMIT).
  local kind=${2:-}
  if [ -z "$kind" ]; then
    case $(( RANDOM % 3 )) in
      0) kind=process ;;
      1) if [ "$MODE" = netns ]; then kind=host; else kind=process; fi ;;
      2) kind=term ;;
    esac
  fi
  # A process only just exec'ed has not yet set up its signal handling (no program
  # has, in its first milliseconds) and dies of a SIGTERM by the default action: a
  # graceful stop is tried on a server started at least TERM_AFTER_START_MS ago, and
  # a younger one is killed -9 instead.
  local young=""
  if [ "$kind" = term ] && [ $(( $(now_ms) - ${STARTED_AT[$n]:-0} )) -lt "$TERM_AFTER_START_MS" ]; then
    kind=process young=" (started under $TERM_AFTER_START_MS ms ago: no graceful stop)"
  fi
  local how
  case $kind in
    host)
      crash_host "$n"
      how="host crash (cables pulled, kill -9, network stack rebuilt)"
      HOST_CRASHES=$((HOST_CRASHES + 1)) ;;
    term)
      kill -TERM "${PID[$n]}"
      TERM_AT[$n]=$(now_ms)
      how="SIGTERM (graceful stop)"
      TERMS=$((TERMS + 1)) ;;
    *)
      { kill -KILL "${PID[$n]}"; wait "${PID[$n]}"; } 2>/dev/null  # (no "Killed" notice)
      how="kill -9$young" ;;
  esac
  local after; rand_between 500 2000; after=$R
  DOWN_UNTIL[$n]=$(( $(now_ms) + after ))
  KILLS=$((KILLS + 1)); FAULTS=$((FAULTS + 1))
  fault "$how $n (restart in ${after} ms)"
}
# A host crash (netns), like a power cut: the host's cables and LAN port are deleted
# first (so no FIN or RST leaves it), then the server is killed -9 and the namespace
# deleted and made anew. Every TCP socket of that host is gone, orphaned ones too
# (after a plain kill -9 the kernel closes the sockets and keeps sending what the dead
# process had written); peers are not told, and learn only when they next send to it
# (a reset from the new host). The state dir (the disk) survives; the faults in force
# are put back on the new cables.
crash_host() {
  local n=$1 link a b i
  for link in "${LINKS[@]}"; do
    read -r a b <<<"$link"
    [ "$a" = "$n" ] && ip -n "${NS[$n]}" link del "to-$(lower "$b")"
    [ "$b" = "$n" ] && ip -n "${NS[$n]}" link del "to-$(lower "$a")"
  done
  ip -n "${NS[$n]}" link del lan0
  { kill -KILL "${PID[$n]}"; wait "${PID[$n]}"; } 2>/dev/null
  ip netns del "${NS[$n]}"
  make_host "$n"
  for link in "${LINKS[@]}"; do
    read -r a b <<<"$link"
    if [ "$a" = "$n" ] || [ "$b" = "$n" ]; then make_cable "$a" "$b"; fi
  done
  for a in "${!ISO_UNTIL[@]}"; do iso_set "$a" down "${ISO_HOW[$a]}"; done
  for i in "${!CUT_END[@]}"; do
    read -r a b <<<"${CUT_END[$i]}"
    ip -n "${NS[$a]}" link set "to-$(lower "$b")" down
  done
}
do_freeze() {
  local c=() n
  for n in "${NAMES[@]}"; do
    [ -z "${DOWN_UNTIL[$n]:-}" ] && [ -z "${FROZEN_UNTIL[$n]:-}" ] && c+=("$n")
  done
  pick "${c[@]}" || return 1; n=$R
  kill -STOP "${PID[$n]}"
  local after; rand_between 1000 3000; after=$R
  FROZEN_UNTIL[$n]=$(( $(now_ms) + after ))
  FREEZES=$((FREEZES + 1)); FAULTS=$((FAULTS + 1))
  fault "freeze (SIGSTOP) $n (SIGCONT in ${after} ms)"
}
# Isolating a server: its LAN port and the far end of each of its cables go down.
# Severing it: only the cables (clients still reach it; it is cut off from the herd).
iso_set() {
  local n=$1 state=$2 lan=${3:-lan} link a b l
  l=$(lower "$n")
  [ "$lan" = lan ] && ip -n "$BRNS" link set "p-$l" "$state"
  for link in "${LINKS[@]}"; do
    read -r a b <<<"$link"
    if [ "$a" = "$n" ]; then ip -n "${NS[$b]}" link set "to-$l" "$state"; fi
    if [ "$b" = "$n" ]; then ip -n "${NS[$a]}" link set "to-$l" "$state"; fi
  done
}
do_isolate() {  # $1: lan (isolate) or cables (sever); $2: a server, else one at random
  local c=() n how=${1:-lan}
  for n in "${NAMES[@]}"; do [ -z "${ISO_UNTIL[$n]:-}" ] && c+=("$n"); done
  if [ -n "${2:-}" ]; then n=$2; else pick "${c[@]}" || return 1; n=$R; fi
  iso_set "$n" down "$how"
  ISO_HOW[$n]=$how
  LAST_ISOLATED=$n
  local after; rand_between 1000 3000; after=$R
  ISO_UNTIL[$n]=$(( $(now_ms) + after ))
  FAULTS=$((FAULTS + 1))
  if [ "$how" = lan ]; then
    ISOLATIONS=$((ISOLATIONS + 1)); fault "isolate $n: LAN port and cables (heal in ${after} ms)"
  else
    SEVERS=$((SEVERS + 1)); fault "sever $n: all its cables, clients still reach it (heal in ${after} ms)"
  fi
}
# Cutting a link: one end of its cable (chosen at random) goes down; the other side
# sees the carrier go.
do_cut() {
  local c=() i link a b end
  for i in "${!LINKS[@]}"; do [ -z "${CUT_UNTIL[$i]:-}" ] && c+=("$i"); done
  pick "${c[@]}" || return 1; i=$R
  read -r a b <<<"${LINKS[$i]}"
  if (( RANDOM % 2 )); then end="$a $b"; else end="$b $a"; fi
  read -r a b <<<"$end"
  ip -n "${NS[$a]}" link set "to-$(lower "$b")" down
  CUT_END[$i]="$a $b"
  local after; rand_between 1000 3000; after=$R
  CUT_UNTIL[$i]=$(( $(now_ms) + after ))
  CUTS=$((CUTS + 1)); FAULTS=$((FAULTS + 1))
  fault "cut link ${LINKS[$i]} at $a's end (heal in ${after} ms)"
}
LAST_HEAL_NS=$(now_ns)
# Restarts server $1; after a SIGTERM, first waits (bounded) for the old process to
# finish its graceful stop, and checks that it exited 0.
STOP_LIMIT_MS=10000  # the server's grace period is 6 s
TERM_AFTER_START_MS=200
restart_server() {
  local n=$1 rc _
  if [ -n "${TERM_AT[$n]:-}" ]; then
    for _ in $(seq $(( STOP_LIMIT_MS / 50 ))); do
      is_dead "$n" && break
      [ $(( $(now_ms) - TERM_AT[$n] )) -ge "$STOP_LIMIT_MS" ] && break
      sleep 0.05
    done
    if ! is_dead "$n"; then
      TERM_FAILS=$((TERM_FAILS + 1))
      fault "FAIL: $n still running $STOP_LIMIT_MS ms after SIGTERM; kill -9"
      kill -KILL "${PID[$n]}" 2>/dev/null
    fi
    { wait "${PID[$n]}"; } 2>/dev/null; rc=$?
    local took=${TERM_TOOK[$n]:-$(( $(now_ms) - TERM_AT[$n] ))}
    [ "$took" -gt "$TERM_SLOWEST" ] && TERM_SLOWEST=$took
    if [ "$rc" != 0 ]; then
      TERM_FAILS=$((TERM_FAILS + 1))
      fault "FAIL: $n exited with status $rc after SIGTERM"
    fi
    unset "TERM_AT[$n]" "TERM_TOOK[$n]"
  fi
  start_server "$n"
}
heal_due() {  # $1: now (ms), or 'all'
  local t=$1 n i a b
  for n in "${NAMES[@]}"; do
    if [ -n "${DOWN_UNTIL[$n]:-}" ] && { [ "$t" = all ] || [ "$t" -ge "${DOWN_UNTIL[$n]}" ]; }; then
      restart_server "$n"; unset "DOWN_UNTIL[$n]"; LAST_HEAL_NS=$(now_ns); fault "restart $n"
    fi
    if [ -n "${FROZEN_UNTIL[$n]:-}" ] && { [ "$t" = all ] || [ "$t" -ge "${FROZEN_UNTIL[$n]}" ]; }; then
      kill -CONT "${PID[$n]}"; unset "FROZEN_UNTIL[$n]"; LAST_HEAL_NS=$(now_ns); fault "thaw (SIGCONT) $n"
    fi
    if [ -n "${ISO_UNTIL[$n]:-}" ] && { [ "$t" = all ] || [ "$t" -ge "${ISO_UNTIL[$n]}" ]; }; then
      iso_set "$n" up "${ISO_HOW[$n]}"; unset "ISO_UNTIL[$n]" "ISO_HOW[$n]"
      LAST_HEAL_NS=$(now_ns); fault "heal isolation of $n"
    fi
  done
  for i in "${!LINKS[@]}"; do
    if [ -n "${CUT_UNTIL[$i]:-}" ] && { [ "$t" = all ] || [ "$t" -ge "${CUT_UNTIL[$i]}" ]; }; then
      read -r a b <<<"${CUT_END[$i]}"
      ip -n "${NS[$a]}" link set "to-$(lower "$b")" up
      unset "CUT_UNTIL[$i]" "CUT_END[$i]"; LAST_HEAL_NS=$(now_ns); fault "heal link ${LINKS[$i]}"
    fi
  done
}
# A server that died without being killed here is a crash: count it and restart it.
check_crashes() {
  local n
  for n in "${NAMES[@]}"; do
    [ -n "${DOWN_UNTIL[$n]:-}" ] && continue
    if is_dead "$n"; then
      wait "${PID[$n]}" 2>/dev/null; local rc=$?
      CRASHES=$((CRASHES + 1))
      fault "CRASH: $n exited by itself (status $rc); restarting it"
      start_server "$n"
    fi
  done
}

END_MS=$(( START_MS + SECS * 1000 ))
rand_between 1000 3000; NEXT_FAULT=$(( START_MS + R ))
ticks=0
while [ "$(now_ms)" -lt "$END_MS" ] && [ $ticks -lt $(( SECS * 20 + 100 )) ]; do
  ticks=$((ticks + 1))
  t=$(now_ms)
  heal_due "$t"
  check_crashes
  for n in "${!TERM_AT[@]}"; do  # how long graceful stops take (to the 0.1 s tick)
    if [ -z "${TERM_TOOK[$n]:-}" ] && is_dead "$n"; then TERM_TOOK[$n]=$(( t - TERM_AT[$n] )); fi
  done
  if [ "$t" -ge "$NEXT_FAULT" ]; then
    r=$(( RANDOM % 100 ))
    if [ "$MODE" = netns ]; then
      if [ $r -lt 40 ] && [ "$(down_count)" -lt 2 ]; then do_kill
      elif [ "$(partition_count)" -lt 2 ]; then
        case $(( RANDOM % 3 )) in 0) do_cut ;; 1) do_isolate lan ;; 2) do_isolate cables ;; esac
      elif [ "$(down_count)" -lt 2 ]; then do_kill
      fi
    else
      if [ "$(down_count)" -lt 2 ]; then
        if [ $r -lt 60 ]; then do_kill; else do_freeze; fi
      fi
    fi
    rand_between 1000 3000; NEXT_FAULT=$(( t + R ))
  fi
  sleep 0.1
done

# --- heal, quiet, check -----------------------------------------------------------------
# The checker starts now and waits for the clients' results and the heal time, so the
# first look comes within milliseconds of both.
SINCE_FILE=$TMP/last-heal.ns
ACKED_FILES=$TMP/acked.json
[ "$END" = quiet-crash ] && ACKED_FILES=$TMP/acked.json,$TMP/acked2.json
"${IN_LAN[@]}" "$PY" "$CLIENT_PY" check --servers "$SERVERS_ARG" --acked "$ACKED_FILES" \
  --since-file "$SINCE_FILE" --wait $((60 + SEVER_SECS)) --timeout "$CONVERGE_TIMEOUT" --out "$TMP/check.json" \
  >"$TMP/check.txt" 2>&1 &
CHECK_PID=$!
stop_clients() {
  kill -TERM "$CLIENT_PID" 2>/dev/null
  for _ in $(seq 500); do kill -0 "$CLIENT_PID" 2>/dev/null || break; sleep 0.02; done
  wait "$CLIENT_PID" 2>/dev/null
  CLIENT_PID=""
  fault "clients stopped"
}
heal_all() {
  heal_due all
  check_crashes
  echo "$LAST_HEAL_NS" >"$SINCE_FILE.tmp" && mv "$SINCE_FILE.tmp" "$SINCE_FILE"
}
if [ "$END" = heal ]; then
  fault "end of faults: heal everything, restart everything down, then stop the clients"
  heal_all
  stop_clients
elif [ "$END" = quiet-crash ]; then
  # A host that crashes while nothing is being sent: its peers' connections to it stay
  # "established" (nothing tells them), and when it is back, what it is told must still
  # reach the rest of the herd.
  fault "end of faults: heal, clients off, then in quiet a crash, a restart, and 2 s of IAMATs to it"
  heal_due all
  stop_clients
  sleep 1
  if [ "$MODE" = netns ]; then do_kill "$VICTIM" host; else do_kill "$VICTIM" process; fi
  victim=$LAST_KILLED
  sleep 1
  heal_due all
  "${IN_LAN[@]}" "$PY" "$CLIENT_PY" ready --servers "$victim=${ADDR[$victim]}" --timeout 10
  sleep 1
  fault "IAMATs to $victim alone for 2 s"
  "${IN_LAN[@]}" "$PY" "$CLIENT_PY" run --servers "$victim=${ADDR[$victim]}" --out "$TMP/acked2.json" \
    --clients "$CLIENTS" --rate "$RATE" --seed $((SEED + 1)) --prefix "chaos$SEED-" \
    --max-secs 2 2>>"$TMP/client.log"
  fault "clients stopped"
  echo "$LAST_HEAL_NS" >"$SINCE_FILE.tmp" && mv "$SINCE_FILE.tmp" "$SINCE_FILE"
else
  # catchup: a last round of faults under client traffic, clients off, then heal: what
  # the herd must converge on is fixed before the heal, so the time measured is purely
  # the catch-up of the servers that were away.
  fault "end of faults: heal, last faults under client traffic, clients off, then heal"
  heal_due all
  if [ "$MODE" = netns ]; then
    do_isolate cables "$VICTIM"
    victim=$LAST_ISOLATED
    do_cut
    sleep "$SEVER_SECS"
    stop_clients
    # The newest acknowledged location of every client whose last IAMAT went to the
    # severed server exists, now, on that server alone; its host crashes.
    do_kill "$victim" host
  else
    do_freeze
    sleep 1
    do_kill "$VICTIM" process
    sleep 1
    stop_clients
  fi
  sleep 0.5
  heal_all
fi
[ -s "$TMP/acked.json" ] || { FAILED=1; echo "chaos.sh: the clients wrote no results (see $TMP/client.log)" >&2; exit 1; }
# The checker gives up by itself after --wait + --timeout (+ a few polls); bounded here too.
for _ in $(seq $(( (60 + SEVER_SECS + CONVERGE_TIMEOUT + 30) * 10 ))); do kill -0 "$CHECK_PID" 2>/dev/null || break; sleep 0.1; done
kill -KILL "$CHECK_PID" 2>/dev/null
wait "$CHECK_PID"
CHECK_RC=$?
CHECK_PID=""
CHECK_OUT=$(cat "$TMP/check.txt")
check_crashes

field() { sed -n "s/.*[ :]$1=\([^ ]*\).*/\1/p" <<<"$2" | head -1; }
CHECK_LINE=$(grep '^check: clients=' <<<"$CHECK_OUT")
read -r SENT ACKED NOREPLY BAD <<<"$("$PY" -c '
import json, sys
t = [0, 0, 0, 0]
for path in sys.argv[1].split(","):
    s = json.load(open(path))["stats"]
    t = [a + b for a, b in zip(t, (s["sent"], s["acked"], s["no_reply"], s["bad_reply"]))]
print(*t)' "$ACKED_FILES")"
PANICS=$(grep -l -i 'panicked' "$TMP"/logs/*.stderr 2>/dev/null | wc -l)

RESULT=PASS
if [ "$CHECK_RC" != 0 ] || [ "$CRASHES" != 0 ] || [ "$PANICS" != 0 ] || [ "$BAD" != 0 ] ||
  [ "$TERM_FAILS" != 0 ]; then RESULT=FAIL; fi
[ "$RESULT" = PASS ] || FAILED=1
if [ "$MODE" = netns ]; then
  PARTS="partitions=$((CUTS + ISOLATIONS + SEVERS)) (link-cuts=$CUTS isolations=$ISOLATIONS severs=$SEVERS)"
else
  PARTS="partitions=$FREEZES (SIGSTOP freezes; loopback: no network faults)"
fi
[ -n "$CHECK_LINE" ] && say "$CHECK_LINE"
grep '^check: \(example\|unreachable\)' <<<"$CHECK_OUT" | sed 's/^/chaos: /' >&2
say "clients: sent=$SENT acked=$ACKED no_reply=$NOREPLY bad_reply=$BAD"
FINISHED=1
if [ "$MODE" = netns ]; then
  KILLS="$KILLS (host-crashes=$HOST_CRASHES sigterms=$TERMS)"
else
  KILLS="$KILLS (sigterms=$TERMS)"
fi
echo "chaos: mode=$MODE secs=$SECS seed=$SEED netem=$NETEM faults=$FAULTS kills=$KILLS $PARTS" \
  "crashes=$CRASHES sigterm_fails=$TERM_FAILS sigterm_slowest_ms=$TERM_SLOWEST acked=$ACKED lost=$(field lost "$CHECK_LINE") stale=$(field stale "$CHECK_LINE")" \
  "newer=$(field newer "$CHECK_LINE") disagree=$(field disagree "$CHECK_LINE")" \
  "converge_ms=$(field converge_ms "$CHECK_LINE") quiet_converge_ms=$(field quiet_converge_ms "$CHECK_LINE")" \
  "end=$END result=$RESULT"
[ "$RESULT" = PASS ]
