#!/usr/bin/env python3
"""Benchmark of `trace`: lookups per second over country sets totalling ~100,000 prefixes, and the
cold time of one `vpn-director trace` command (process start, config, loading every set).

    python3 bench/trace.py [--prefixes 100000] [--runs 7]

Prints a markdown table. Needs no root and no kernel access.
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import compile_package, ROOT, machine, write_block, write_zones  # noqa: E402

sys.path.insert(0, ROOT)
from vpn_director import config, desired, trace  # noqa: E402

COUNTRIES = ["ru", "ua", "by", "kz", "cn", "ir"]


def setup(tmp, total):
    write_zones(os.path.join(tmp, "ipsets"), {cc: total // len(COUNTRIES) for cc in COUNTRIES})
    with open(os.path.join(tmp, "rt_tables"), "w") as fh:
        fh.write("111 wgc1\n112 ovpnc1\n")
    raw = {"data_dir": tmp, "advanced": {"rt_tables": os.path.join(tmp, "rt_tables"), "state_dir": tmp},
           "xray": {"clients": ["192.168.50.0/25"], "servers": ["203.0.113.10"], "exclude_sets": COUNTRIES[:3]},
           "tunnel_director": {"tunnels": {"wgc1": {"clients": ["192.168.50.128/26"], "exclude": COUNTRIES},
                                           "ovpnc1": {"clients": ["192.168.50.192/26"], "exclude": COUNTRIES[3:]}}}}
    path = os.path.join(tmp, "vpn-director.json")
    with open(path, "w") as fh:
        json.dump(raw, fh)
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prefixes", type=int, default=100000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--lookups", type=int, default=50000)
    ap.add_argument("--write", metavar="FILE", help="also replace the results block in FILE")
    args = ap.parse_args()
    compile_package()
    with tempfile.TemporaryDirectory() as tmp:
        path = setup(tmp, args.prefixes)
        cfg = config.load(path)
        t0 = time.perf_counter()
        full = desired.build(cfg)  # parses and merges the lists, and leaves their aggregate caches
        rs = trace.from_desired(full, cfg)
        build = time.perf_counter() - t0
        entries = sum(len(s.members) for s in full.sets)
        rng = random.Random(1)
        pkts = [("192.168.50.%d" % rng.randrange(1, 255), "%d.%d.%d.%d" % tuple(rng.randrange(1, 224) for _ in range(4)))
                for _ in range(args.lookups)]
        set_ips = [int.from_bytes(bytes(map(int, d.split("."))), "big") for _, d in pkts]
        idx = rs.sets["ru"]
        walk, member = [], []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            for ip in set_ips:
                ip in idx
            member.append(len(set_ips) / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            for src, dst in pkts[:5000]:
                trace.trace(rs, src, dst)
            walk.append(5000 / (time.perf_counter() - t0))
        cold, first = [], []
        env = dict(os.environ, PYTHONPATH=ROOT)
        argv = [sys.executable, "-m", "vpn_director", "-c", path, "trace", "192.168.50.130", "8.8.8.8"]
        for _ in range(args.runs):
            for cc in COUNTRIES:  # as after `update`: the lists are parsed and merged again
                os.unlink(os.path.join(tmp, "ipsets", cc + ".agg"))
            for into in (first, cold):
                t0 = time.perf_counter()
                subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env)
                into.append(time.perf_counter() - t0)
        base = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            base.append(time.perf_counter() - t0)
    row = "| %s | %s | %s | %s |"

    def stats(xs, f):
        return [f % statistics.median(xs), f % min(xs), f % max(xs)]
    lines = [
        "sets: %d country sets, %d prefixes after aggregation" % (len(COUNTRIES), entries), "",
        "| measure | median | min | max |", "|---|---|---|---|",
        row % tuple(["set membership lookups/s (one set)"] + stats(member, "%.0f")),
        row % tuple(["full trace walks/s (all chains + ip rules)"] + stats(walk, "%.0f")),
        row % tuple(["cold `vpn-director trace` (s)"] + stats(cold, "%.3f")),
        row % tuple(["first `trace` after the lists changed (s)"] + stats(first, "%.3f")),
        row % tuple(["bare `python3 -c pass` (s)"] + stats(base, "%.3f")),
        row % ("in-process load of config + lists, parsing them (s), one run", "%.3f" % build, "", ""),
        "", "Machine: %s" % machine()]
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if args.write:
        write_block(args.write, "bench/trace.py", text)


if __name__ == "__main__":
    main()
