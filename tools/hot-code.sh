#!/usr/bin/env bash
# Writes tools/hot-code.ld: the functions a running herd server executes, so the linker
# puts them together at the start of the binary's code (build.rs passes the script).
#
# Why: the kernel maps a program's code into a process a folio (16 KiB and up of the
# file) at a time, not a function at a time. With the ~2.5 MB of code in the order the
# compiler left it, the ~400 KiB a server runs are spread over most of it, and a lone
# server kept 1.5 MB of code pages mapped; packed together they take about half a MB
# (BENCHMARKS.md, "Results after the third round").
#
# How: the release build itself, with its symbols kept (`-C strip=none` changes no
# function's name), runs under valgrind's callgrind in three scenes:
#   1. a lone zero-config server (offline places): one IAMAT, one WHATSAT, SIGTERM;
#   2. two linked servers with a state dir, places from a local stand-in (legacy Nearby
#      Search over HTTP, `herd-bench standin`): updates both ways, WHATSAT, SIGTERM;
#   3. the same with HERD_SECRET (encrypted links).
# tools/hot-code.py then lists, in order: the lone server's functions by exact name; the
# crates that pick their code by CPU feature (valgrind's CPU may differ from this one);
# the linked servers' functions; then all of them again with the hash left out of the
# name (`17h*E`, `Cs*_`), so that a build with another toolchain, whose hashes differ,
# still gets most of the layout. A function the list misses costs memory, never
# correctness. Rerun after large changes:
#
#     tools/hot-code.sh            # needs valgrind (apt-get install valgrind)
#     HOT_CODE_KEEP=1 tools/hot-code.sh   # and keep the callgrind outputs
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "hot-code.sh: needs valgrind (apt-get install valgrind)" >&2; exit 1; }

TARGET=${TARGET_DIR:-target/hot-code}
TMP=$(mktemp -d)
[ -z "${HOT_CODE_KEEP:-}" ] || echo "hot-code.sh: keeping $TMP"
STARTED=()  # pids of everything started here, stopped on any exit
trap 'for p in "${STARTED[@]}"; do kill -KILL "$p" 2>/dev/null || true; done; [ -n "${HOT_CODE_KEEP:-}" ] || rm -rf "$TMP"' EXIT
# Without the current layout (HERD_NO_CODE_LAYOUT, for both builds, so the library is
# built once): names do not depend on it, and a broken hot-code.ld must not stop its
# own repair.
export HERD_NO_CODE_LAYOUT=1
cargo rustc --release --quiet --target-dir "$TARGET" --bin herd -- -C strip=none
cargo build --release --quiet --target-dir "$TARGET" --bin herd-bench
HERD=$TARGET/release/herd
BENCH=$TARGET/release/herd-bench

wait_port() {  # wait_port PORT: until something listens there (30 s at most)
    for _ in $(seq 300); do (: </dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done
    echo "hot-code.sh: port $1 never opened" >&2; exit 1
}
wait_log() {  # wait_log FILE TEXT: until FILE holds TEXT (60 s at most: callgrind is slow)
    for _ in $(seq 600); do grep -qF -- "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    echo "hot-code.sh: $1 never said \"$2\"" >&2; exit 1
}
# under_callgrind OUT ARGS...: starts herd ARGS under callgrind (writing OUT-<thread>);
# its pid is then in $!.
under_callgrind() {
    local out=$1; shift
    valgrind --tool=callgrind --demangle=no --separate-threads=yes \
        --callgrind-out-file="$out" "$HERD" "$@" >"$out.log" 2>&1 &
    STARTED+=($!)
}
stop() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# 1. A lone zero-config server.
printf 'server Zero 127.0.0.1:14931\n' >"$TMP/lone.conf"
unset GOOGLE_PLACES_API_KEY HERD_SECRET
under_callgrind "$TMP/lone.cg" serve Zero --config "$TMP/lone.conf"
pid=$!
wait_port 14931
"$BENCH" memory --addr 127.0.0.1:14931 --pid "$pid" >/dev/null
stop "$pid"

# 2 and 3. Two linked servers with a state dir and places over HTTP from the stand-in,
# without and with the herd secret.
"$BENCH" standin --addr 127.0.0.1:14950 --max-secs 600 >/dev/null 2>&1 &
standin=$!
STARTED+=("$standin")
wait_port 14950
cat >"$TMP/pair.conf" <<EOF
server Alpha 127.0.0.1:14932 bus 127.0.0.1:14942
server Beta 127.0.0.1:14933 bus 127.0.0.1:14943
link Alpha Beta
places google-legacy http://127.0.0.1:14950/json
state-dir $TMP/state
log-dir $TMP/logs
EOF
pair() {  # pair OUT [SECRET]
    rm -rf "$TMP/state" "$TMP/logs"
    local secret=${2:-}
    GOOGLE_PLACES_API_KEY=hot-code-key HERD_SECRET=$secret "$HERD" serve Beta --config "$TMP/pair.conf" >"$TMP/beta.log" 2>&1 &
    local beta=$!
    STARTED+=("$beta")
    GOOGLE_PLACES_API_KEY=hot-code-key HERD_SECRET=$secret under_callgrind "$1" serve Alpha --config "$TMP/pair.conf"
    local pid=$!
    wait_port 14932
    wait_port 14933
    wait_log "$TMP/logs/Alpha.log" " link-up peer Beta "
    "$BENCH" memory --addr 127.0.0.1:14932 --pid "$pid" >/dev/null
    "$BENCH" memory --addr 127.0.0.1:14933 --pid "$beta" >/dev/null
    # Each update has crossed the link both ways before the scene ends.
    wait_log "$TMP/logs/Beta.log" " in peer Alpha AT Alpha "
    wait_log "$TMP/logs/Alpha.log" " in peer Beta AT Beta "
    stop "$pid"
    stop "$beta"
}
pair "$TMP/pair.cg"
pair "$TMP/secret.cg" "hot-code-secret-$$"
kill "$standin" 2>/dev/null || true

nm --defined-only "$HERD" >"$TMP/symbols.txt"
python3 tools/hot-code.py "$TMP" >"$TMP/hot-code.ld"
mv "$TMP/hot-code.ld" tools/hot-code.ld
echo "hot-code.sh: wrote tools/hot-code.ld ($(grep -c '^    \*(' tools/hot-code.ld) patterns)"
