#!/usr/bin/env bash
# Every test: formatting, lints, unit and integration tests, then the scripted nc test
# of the real binary. Fails loudly on the first failure.
set -euo pipefail
cd "$(dirname "$0")"

step() { printf '\n==> %s\n' "$*"; }

# What the scripted tests need beyond Rust: nc (netcat-openbsd, for -N and -z), lsof
# (kill by port, as the classic graders do) and python3 (the stand-in places server).
# Installed with apt when we can (root, or passwordless sudo); otherwise one line says
# what is missing and how to get it.
need() {
  local tool=$1 package=$2
  command -v "$tool" >/dev/null 2>&1 && return 0
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    if sudo -n true 2>/dev/null; then sudo=(sudo -n); else sudo=(false); fi
  fi
  if command -v apt-get >/dev/null 2>&1 && [ "${sudo[0]:-}" != false ]; then
    echo "test.sh: installing $package (for $tool)"
    "${sudo[@]}" apt-get install -y -qq "$package" >/dev/null 2>&1 ||
      { "${sudo[@]}" apt-get update -qq >/dev/null 2>&1 &&
        "${sudo[@]}" apt-get install -y -qq "$package" >/dev/null 2>&1; } || true
  fi
  command -v "$tool" >/dev/null 2>&1 && return 0
  echo "test.sh: missing $tool: install it (Debian/Ubuntu: apt-get install $package) and run again" >&2
  exit 1
}
need nc netcat-openbsd
need lsof lsof
need python3 python3

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
