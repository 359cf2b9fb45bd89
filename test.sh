#!/usr/bin/env bash
# Every test: formatting, lints, unit and integration tests, then the scripted nc test
# of the real binary. Fails loudly on the first failure.
set -euo pipefail
cd "$(dirname "$0")"

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --check
step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
step "cargo test"
cargo test
step "cargo tree -i tokio (must find nothing)"
if cargo tree -e normal -i tokio >/dev/null 2>&1; then
  echo "tokio is in the dependency tree" >&2
  exit 1
fi
step "scripted nc test of the five-server herd"
cargo build --quiet
tests/scripts/nc-herd.sh target/debug/herd
step "chaos round: kills, crashes, partitions; zero lost, zero stale"
./chaos.sh --secs 45 --herd target/debug/herd
echo
echo "test.sh: all passed"
