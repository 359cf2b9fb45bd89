#!/usr/bin/env python3
"""The clients and the checker of chaos.sh (Python 3 standard library only).

    chaos_client.py ready --servers NAME=HOST:PORT,... [--timeout S]
        Waits until every server accepts a TCP connection; exit 1 if one does not.

    chaos_client.py run --servers ... --out ACKED.json [--clients 50] [--threads 10]
                        [--rate 100] [--seed S] [--max-secs S] [--stop-file PATH]
        IAMATs with strictly increasing client times (per client) to random servers,
        until SIGTERM, the stop file appears, or --max-secs. Records, per client, the
        newest AT reply any server sent (the *acknowledged* location) and every later
        IAMAT that got no reply (it may have been accepted; a server may legitimately
        hold it). Writes ACKED.json at the end.

    chaos_client.py check --servers ... --acked ACKED.json [--since-ns NS] [--timeout 30]
        Polls every server with `WHATSAT <client> 1 1` for every client until all of them
        hold, for every client, a location at least as new as the newest acknowledged
        one, and all agree; prints one `check: key=value ...` line; exit 1 if not
        converged within --timeout.

Classification of what a server holds for a client, against the newest acknowledged AT:
    ok       the acknowledged AT line itself, byte for byte
    newer    a later IAMAT of this client that got no reply (accepted, reply lost)
    lost     nothing (`? ` reply) although an AT was acknowledged
    stale    an AT line with an older client time than the acknowledged one
    mismatch the acknowledged client time but another line (never expected)
    phantom  a newer client time this client never sent (never expected)
"""

import argparse
import json
import os
import random
import signal
import socket
import sys
import threading
import time

CONNECT_TIMEOUT = 1.0
REPLY_TIMEOUT = 2.0


def parse_servers(text):
    servers = []
    for item in text.split(","):
        name, addr = item.split("=", 1)
        host, port = addr.rsplit(":", 1)
        servers.append((name, host, int(port)))
    return servers


def fmt_time(ns):
    return "%d.%09d" % (ns // 1_000_000_000, ns % 1_000_000_000)


def parse_time(text):
    """Client time text (as this client sends it, or any SPEC time) -> integer ns."""
    neg = text.startswith("-")
    text = text.lstrip("+-")
    whole, _, frac = text.partition(".")
    ns = int(whole or "0") * 1_000_000_000 + int((frac[:9] + "000000000")[:9] or "0")
    return -ns if neg else ns


def parse_at(line):
    """`AT SERVER DIFF CLIENT LOC TIME` -> dict, or None."""
    f = line.split()
    if len(f) != 6 or f[0] != "AT":
        return None
    try:
        return {"server": f[1], "client": f[3], "loc": f[4], "ns": parse_time(f[5])}
    except ValueError:
        return None


# --------------------------------------------------------------------------- ready


def cmd_ready(args):
    deadline = time.monotonic() + args.timeout
    pending = parse_servers(args.servers)
    while pending and time.monotonic() < deadline:
        still = []
        for name, host, port in pending:
            try:
                socket.create_connection((host, port), timeout=0.5).close()
            except OSError:
                still.append((name, host, port))
        pending = still
        if pending:
            time.sleep(0.05)
    if pending:
        print("ready: not listening: " + " ".join(n for n, _, _ in pending), file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------- run


class Conn:
    """A persistent client connection to one server, reading reply lines."""

    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
        self.sock.settimeout(REPLY_TIMEOUT)
        self.buf = b""

    def request(self, line):
        self.sock.sendall(line.encode() + b"\n")
        while b"\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed by server")
            self.buf += chunk
            if len(self.buf) > 65536:
                raise ConnectionError("reply too long")
        reply, _, self.buf = self.buf.partition(b"\n")
        return reply.decode("utf-8", "replace")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Client:
    def __init__(self, cid):
        self.cid = cid
        self.last_ns = 0
        self.acked = None  # the newest AT line a server sent back
        self.acked_ns = None
        self.pending = []  # [ns, server, loc] sent after the newest ack, no reply


def cmd_run(args):
    servers = parse_servers(args.servers)
    rng = random.Random(args.seed)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    clients = [Client("%s%03d" % (args.prefix, i)) for i in range(args.clients)]
    lock = threading.Lock()
    stats = {"sent": 0, "acked": 0, "no_reply": 0, "refused": 0, "bad_reply": 0}
    bad = []
    per_server = {name: {"sent": 0, "acked": 0} for name, _, _ in servers}
    interval = args.threads / args.rate

    def worker(k, seed):
        wrng = random.Random(seed)
        mine = clients[k :: args.threads]
        conns = {}
        nxt = time.monotonic()
        while not stop.is_set() and mine:
            now = time.monotonic()
            if now < nxt:
                stop.wait(nxt - now)
                continue
            nxt = max(nxt + interval, now - 1.0)
            c = wrng.choice(mine)
            name, host, port = wrng.choice(servers)
            ns = max(time.time_ns(), c.last_ns + 1000)
            c.last_ns = ns
            loc = "%+.6f%+.6f" % (wrng.uniform(-60, 70), wrng.uniform(-179.9, 179.9))
            line = "IAMAT %s %s %s" % (c.cid, loc, fmt_time(ns))
            conn = conns.get(name)
            try:
                if conn is None:
                    conn = conns[name] = Conn(host, port)
            except OSError:
                with lock:
                    stats["refused"] += 1
                continue  # nothing was sent
            with lock:
                stats["sent"] += 1
                per_server[name]["sent"] += 1
            try:
                reply = conn.request(line)
            except (OSError, ConnectionError):
                conn.close()
                del conns[name]
                with lock:
                    stats["no_reply"] += 1
                c.pending.append([ns, name, loc])
                continue
            at = parse_at(reply)
            if (
                at is None
                or at["server"] != name
                or reply.split()[3:] != line.split()[1:]
            ):
                with lock:
                    stats["bad_reply"] += 1
                    if len(bad) < 20:
                        bad.append({"sent": line, "to": name, "reply": reply})
                c.pending.append([ns, name, loc])
                continue
            c.acked, c.acked_ns, c.pending = reply, ns, []
            with lock:
                stats["acked"] += 1
                per_server[name]["acked"] += 1
        for conn in conns.values():
            conn.close()

    threads = [
        threading.Thread(target=worker, args=(k, rng.random()), daemon=True)
        for k in range(args.threads)
    ]
    for t in threads:
        t.start()
    start = time.monotonic()
    last_report = start
    while not stop.is_set():
        stop.wait(0.2)
        now = time.monotonic()
        if args.stop_file and os.path.exists(args.stop_file):
            stop.set()
        if now - start > args.max_secs:
            stop.set()
        if now - last_report >= args.report_every:
            last_report = now
            with lock:
                print("client: t=%ds %s" % (now - start, " ".join("%s=%d" % kv for kv in stats.items())),
                      file=sys.stderr, flush=True)
    for t in threads:
        t.join(CONNECT_TIMEOUT + REPLY_TIMEOUT + 2)
    out = {
        "stats": stats,
        "per_server": per_server,
        "bad_replies": bad,
        "clients": {
            c.cid: {"acked": c.acked, "acked_ns": c.acked_ns, "pending": c.pending}
            for c in clients
        },
    }
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f)
    os.replace(tmp, args.out)
    print("client: done %s" % " ".join("%s=%d" % kv for kv in stats.items()), file=sys.stderr, flush=True)
    return 0


# --------------------------------------------------------------------------- check


def whatsat_all(host, port, cids, timeout):
    """Pipelines `WHATSAT cid 1 1` for every cid; returns {cid: AT line or None}."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.settimeout(timeout)
    try:
        sock.sendall("".join("WHATSAT %s 1 1\n" % c for c in cids).encode())
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    lines = data.decode("utf-8", "replace").split("\n")
    held = {}
    i = 0
    for cid in cids:
        if i >= len(lines):
            raise ConnectionError("reply cut short")
        first = lines[i]
        i += 1
        if first.startswith("? "):
            held[cid] = None
            continue
        if not first.startswith("AT "):
            raise ConnectionError("unexpected reply line %r" % first[:100])
        held[cid] = first
        while i < len(lines) and lines[i] != "":  # the JSON, then the empty line
            i += 1
        i += 1
    return held


def classify(held, client):
    acked, acked_ns = client["acked"], client["acked_ns"]
    if held is None:
        return "lost" if acked else "none"
    at = parse_at(held)
    if at is None:
        return "mismatch"
    if acked is None or at["ns"] > acked_ns:
        for ns, server, loc in client["pending"]:
            if ns == at["ns"] and server == at["server"] and loc == at["loc"]:
                return "newer"
        return "phantom"
    if at["ns"] < acked_ns:
        return "stale"
    return "ok" if held == acked else "mismatch"


def poll(servers, data):
    cids = sorted(data["clients"])
    counts = {k: 0 for k in ("ok", "newer", "lost", "stale", "mismatch", "phantom", "none")}
    unreachable = []
    holdings = {}
    examples = []
    answers = {}

    def ask(name, host, port):
        try:
            answers[name] = whatsat_all(host, port, cids, 5.0)
        except (OSError, ConnectionError) as e:
            answers[name] = e

    # All servers at once, so a round takes as long as the slowest server.
    threads = [threading.Thread(target=ask, args=s) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, _, _ in servers:
        held = answers[name]
        if isinstance(held, Exception):
            unreachable.append("%s(%s)" % (name, held))
            continue
        holdings[name] = held
        for cid in cids:
            kind = classify(held[cid], data["clients"][cid])
            counts[kind] += 1
            if kind not in ("ok", "newer", "none") and len(examples) < 10:
                examples.append({"server": name, "client": cid, "kind": kind, "held": held[cid],
                                 "acked": data["clients"][cid]["acked"]})
    disagree = 0
    if holdings:
        for cid in cids:
            if len({h[cid] for h in holdings.values()}) > 1:
                disagree += 1
    return counts, disagree, unreachable, examples


def merge(paths):
    """The results of one or more client runs (one after the other) as one."""
    data = None
    for path in paths:
        with open(path) as f:
            more = json.load(f)
        if data is None:
            data = more
            continue
        for cid, c in more["clients"].items():
            old = data["clients"].setdefault(cid, {"acked": None, "acked_ns": None, "pending": []})
            if c["acked"] is not None:
                old["acked"], old["acked_ns"] = c["acked"], c["acked_ns"]
                old["pending"] = []
            old["pending"] += [p for p in c["pending"] if old["acked_ns"] is None or p[0] > old["acked_ns"]]
    return data


def cmd_check(args):
    servers = parse_servers(args.servers)
    # Wait (bounded) for the clients' results and, with --since-file, the heal time.
    wait_until = time.monotonic() + args.wait
    paths = args.acked.split(",")
    while time.monotonic() < wait_until:
        if all(os.path.exists(p) for p in paths) and (
            not args.since_file or os.path.exists(args.since_file)
        ):
            break
        time.sleep(0.005)
    if args.since_file:
        with open(args.since_file) as f:
            args.since_ns = int(f.read().strip())
    data = merge(paths)
    since_ns = args.since_ns or time.time_ns()
    # The clients write their results as they exit: the file's time is when all went quiet.
    quiet_ns = args.quiet_ns or max(os.stat(p).st_mtime_ns for p in paths)
    acked_clients = sum(1 for c in data["clients"].values() if c["acked"])
    deadline = time.monotonic() + args.timeout
    first = None
    rounds = 0
    converged_ms = None
    while True:
        rounds += 1
        begin_ns = time.time_ns()
        counts, disagree, unreachable, examples = poll(servers, data)
        done_ns = time.time_ns()
        poll_ms = (done_ns - begin_ns) / 1e6
        if first is None:
            first = (counts, disagree, unreachable)
            first_poll_ms = (begin_ns - since_ns) / 1e6
        bad = counts["lost"] + counts["stale"] + counts["mismatch"] + counts["phantom"]
        if not unreachable and bad == 0 and disagree == 0:
            converged_ms = (done_ns - since_ns) / 1e6
            quiet_ms = (done_ns - max(quiet_ns, since_ns)) / 1e6
            break
        if time.monotonic() >= deadline:
            break
        time.sleep(args.interval)
    settle = None
    if converged_ms is not None:
        # Nothing may regress once converged: look again a moment later.
        time.sleep(1.0)
        counts, disagree, unreachable, examples = poll(servers, data)
        settle_bad = (counts["lost"] + counts["stale"] + counts["mismatch"] + counts["phantom"]
                      + disagree + len(unreachable))
        settle = settle_bad == 0
    ok = converged_ms is not None and settle
    fields = {
        "clients": len(data["clients"]),
        "acked_clients": acked_clients,
        "servers": len(servers),
        "rounds": rounds,
        "first_lost": first[0]["lost"],
        "first_stale": first[0]["stale"],
        "first_disagree": first[1],
        "first_unreachable": len(first[2]),
        "lost": counts["lost"],
        "stale": counts["stale"],
        "newer": counts["newer"],
        "mismatch": counts["mismatch"],
        "phantom": counts["phantom"],
        "disagree": disagree,
        "unreachable": len(unreachable),
        "converge_ms": "%.0f" % converged_ms if converged_ms is not None else "none",
        "quiet_converge_ms": "%.0f" % quiet_ms if converged_ms is not None else "none",
        "first_poll_ms": "%.0f" % first_poll_ms,
        "poll_ms": "%.0f" % poll_ms,
        "result": "PASS" if ok else "FAIL",
    }
    print("check: " + " ".join("%s=%s" % kv for kv in fields.items()), flush=True)
    if not ok:
        for e in examples:
            print("check: example %s" % json.dumps(e), flush=True)
        for u in unreachable:
            print("check: unreachable %s" % u, flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"fields": fields, "examples": examples, "unreachable": unreachable}, f, indent=1)
    return 0 if ok else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("ready")
    r.add_argument("--servers", required=True)
    r.add_argument("--timeout", type=float, default=10)
    r = sub.add_parser("run")
    r.add_argument("--servers", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--clients", type=int, default=50)
    r.add_argument("--threads", type=int, default=10)
    r.add_argument("--rate", type=float, default=100, help="IAMATs per second, all threads")
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--prefix", default="chaos-")
    r.add_argument("--max-secs", type=float, default=3600)
    r.add_argument("--stop-file")
    r.add_argument("--report-every", type=float, default=10)
    r = sub.add_parser("check")
    r.add_argument("--servers", required=True)
    r.add_argument("--acked", required=True, help="results of `run`; several: comma-separated, in order")
    r.add_argument("--since-ns", type=int, default=0, help="the last heal (converge_ms)")
    r.add_argument("--quiet-ns", type=int, default=0, help="when the clients stopped")
    r.add_argument("--since-file", help="read --since-ns from this file, once it exists")
    r.add_argument("--wait", type=float, default=0, help="seconds to wait for the input files")
    r.add_argument("--timeout", type=float, default=30)
    r.add_argument("--interval", type=float, default=0.02)
    r.add_argument("--out")
    args = p.parse_args()
    return {"ready": cmd_ready, "run": cmd_run, "check": cmd_check}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
