#!/usr/bin/env python3
"""Prints tools/hot-code.ld from what tools/hot-code.sh left in DIR: the callgrind
outputs of its three scenes, lone.cg-*, pair.cg-* and secret.cg-*, run on the release
build with its symbols kept, and that build's symbols (`nm` output, symbols.txt). Each
group of functions keeps the order the compiler gave them (their addresses in that
build, laid out without the script): sorted any other way, as by name, the same code
ran 7-10 % slower under load (callers and callees drift apart). Python 3 standard library
only.

    python3 tools/hot-code.py DIR > tools/hot-code.ld
"""

import glob
import re
import sys

ENTRY = re.compile(r"^(c?(?:ob|fn))=\((\d+)\)(?: (.*))?$")

# Crates whose functions a server picks at run time by CPU feature (memchr's AVX2 or
# SSE2 searchers, used on every logged line): valgrind's CPU may run other versions
# than this machine does, so these go after the lone server's functions whole (~10 KiB).
DISPATCHED = ["_ZN6memchr*"]


def ran(prefix):
    """Mangled names of the herd binary's functions that ran, from callgrind's PREFIX-*
    files."""
    found = set()
    for path in glob.glob(prefix + "-*"):
        objects, ob, names, used = {}, None, {}, set()
        for line in open(path, errors="replace"):
            m = ENTRY.match(line.rstrip("\n"))
            if not m:
                continue
            kind, key, name = m.groups()
            if kind.endswith("ob"):
                if name:
                    objects[key] = name
                if kind == "ob":
                    ob = key
            else:
                if name:
                    names[key] = name
                if kind == "fn" and objects.get(ob, "").endswith("/herd"):
                    used.add(key)
        for key in used:
            name = names.get(key, "").split("'")[0]  # callgrind's recursion depth
            if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$.]*", name):
                found.add(name)
    return found


def addresses(path):
    """Address of each symbol in `nm` output."""
    found = {}
    for line in open(path, errors="replace"):
        parts = line.split()
        if len(parts) == 3:
            found.setdefault(parts[2], int(parts[0], 16))
    return found


def loose(name):
    """`name` with what differs between toolchains and builds left out."""
    name = re.sub(r"17h[0-9a-f]{16}E", "17h*E", name)  # legacy mangling's hash
    name = re.sub(r"Cs[0-9A-Za-z]+_", "Cs*_", name)  # v0 mangling's crate hashes
    return re.sub(r"\.llvm\.\d+|\.\d+$", "*", name)  # LTO and local suffixes


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    tmp = sys.argv[1]
    lone = ran(f"{tmp}/lone.cg")
    linked = ran(f"{tmp}/pair.cg") | ran(f"{tmp}/secret.cg")
    if not lone or not linked:
        sys.exit("hot-code.py: no code of the herd binary ran (callgrind outputs empty?)")
    at = addresses(f"{tmp}/symbols.txt")

    def in_order(names):
        return sorted(names, key=lambda n: (at.get(n, 1 << 64), n))

    loose_first = {}
    for name in in_order(lone | linked):
        loose_first.setdefault(loose(name), len(loose_first))
    groups = [
        in_order(lone),
        DISPATCHED,
        in_order(linked - lone),
        sorted(loose_first, key=loose_first.get),
    ]
    print("/* Written by tools/hot-code.sh: the functions a running server executes, placed")
    print("   first in the binary's code (build.rs). Rerun it rather than edit this. */")
    print("SECTIONS\n{\n  .text.hot : {")
    seen = set()
    for group in groups:
        for pattern in group:
            if pattern not in seen:
                seen.add(pattern)
                # A function `f` is in section `.text.f`, or `.text.unlikely.f` if cold.
                print(f"    *(.text.{pattern} .text.unlikely.{pattern})")
    print("  }\n}\nINSERT BEFORE .text;")
    print(f"hot-code.py: lone {len(lone)}, linked {len(linked - lone)} functions",
          file=sys.stderr)


main()
