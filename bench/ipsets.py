#!/usr/bin/env python3
"""Country-set refresh without downloads: `vpn-director update` from file:// sources for 6 sets
totalling ~100,000 prefixes (mostly /16../24), in a network namespace this script creates (root).

    python3 bench/ipsets.py [--runs 5] [--prefixes 100000] [--write docs/countries.md]

Measures, over --runs runs each (median, min-max): the whole `update` (read, validate,
aggregate, cache, plan, load) and its `ipset restore` step alone, peak RSS of the vpn-director
process (VmHWM) and of its process tree (including `ipset`), for: a first load; a refresh with
no change; refreshes with 1%, 10%, 30% and 60% of each list replaced, once as chosen by the
delta rule and once forced the other way (full swap vs delta). Prints a markdown table.
"""

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import compile_package, ROOT, machine, summary, timed, write_block, zone_text  # noqa: E402

SIZES = {"ru": 40000, "cn": 25000, "ir": 15000, "by": 10000, "kz": 6000, "ua": 4000}
CHANGES = [0.01, 0.05, 0.10, 0.20, 0.30]  # of the lines; about twice that of the members


def worker(mode, config):
    """Run `update -v` in this process: mode is auto, swap or delta (the rule forced one way), or
    imports (start-up only, for the baseline)."""
    sys.path.insert(0, ROOT)
    from vpn_director import cli, reconcile
    from vpn_director.tools import Tools
    if mode != "auto":
        reconcile.DELTA_MAX_FRACTION = 0.0 if mode == "swap" else float("inf")
    spent = []
    restore = Tools.ipset_restore

    def timed_restore(self, step, script):
        t0 = time.perf_counter()
        try:
            return restore(self, step, script)
        finally:
            spent.append(time.perf_counter() - t0)
    Tools.ipset_restore = timed_restore
    rc = cli.main(["-c", config, "-v", "update"]) if mode != "imports" else 0
    hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    print(json.dumps({"rc": rc, "hwm_kb": hwm, "ipset_s": sum(spent)}))
    return rc


def variant(text, fraction, seed):
    """`text` with `fraction` of its lines replaced by new prefixes of the same length mix."""
    lines = text.splitlines()
    rng = random.Random(seed)
    k = int(len(lines) * fraction)
    fresh = zone_text(rng, k).splitlines() if k else []
    keep = lines[:]
    for i, j in enumerate(sorted(rng.sample(range(len(lines)), k))):
        keep[j] = fresh[i]
    return "\n".join(keep) + "\n"


class Bench:
    def __init__(self, tmp, total):
        self.tmp = tmp
        self.ns = "vpdbench%d" % os.getpid()
        scale = total / sum(SIZES.values())
        rng = random.Random(11)
        self.base = {cc: zone_text(rng, int(n * scale)) for cc, n in SIZES.items()}
        with open(os.path.join(tmp, "rt_tables"), "w") as fh:
            fh.write("111 wgc1\n")

    def version(self, name, texts):
        d = os.path.join(self.tmp, "src", name)
        os.makedirs(d, exist_ok=True)
        for cc, text in texts.items():
            with open(os.path.join(d, cc + ".zone"), "w") as fh:
                fh.write(text)
        raw = {"data_dir": os.path.join(self.tmp, "data"),
               "xray": {"clients": ["192.168.50.10"], "exclude_sets": list(SIZES)},
               "tunnel_director": {"tunnels": {"wgc1": {"clients": ["192.168.50.20"], "exclude": list(SIZES)[:3]}}},
               "advanced": {"rt_tables": os.path.join(self.tmp, "rt_tables"), "state_dir": os.path.join(self.tmp, "st"),
                            "boot": {"min_time": 0, "wait_delay": 0}},
               "ipsets": {"sources": ["file://%s/{cc}.zone" % d]}}
        path = os.path.join(self.tmp, name + ".json")
        with open(path, "w") as fh:
            json.dump(raw, fh)
        return path

    def __enter__(self):
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        subprocess.run(["ip", "netns", "exec", self.ns, "ip", "link", "add", "br0", "type", "bridge"], check=True)
        return self

    def __exit__(self, *exc):
        subprocess.run(["ip", "netns", "del", self.ns])

    def update(self, config, mode="auto"):
        """(seconds, tree peak MB, own peak MB, ipset seconds, change lines) of one update."""
        argv = ["ip", "netns", "exec", self.ns, sys.executable, os.path.abspath(__file__), "--worker", mode, config]
        secs, tree_mb, out = timed(argv)
        res = json.loads([l for l in out.splitlines() if l.startswith("{")][-1])
        if res["rc"] != 0:
            raise RuntimeError("update failed: %s" % out)
        return secs, tree_mb, res["hwm_kb"] / 1024.0, res["ipset_s"], re.findall(r"set \w\w: .*", out)

    def stop(self, config):
        subprocess.run(["ip", "netns", "exec", self.ns, sys.executable, "-m", "vpn_director", "-c", config, "-q",
                        "stop"], check=True, env=dict(os.environ, PYTHONPATH=ROOT))


def row(label, samples, changes=""):
    secs, tree, own, ipset = zip(*[s[:4] for s in samples])
    return "| %s | %s | %s | %s | %s | %s |" % (label, changes, summary(secs), summary(ipset),
                                                summary(own, "%.1f"), summary(tree, "%.1f"))


def members_changed(lines):
    adds = sum(int(m) for l in lines for m in re.findall(r"\+(\d+)", l))
    dels = sum(int(m) for l in lines for m in re.findall(r" -(\d+)", l))
    how = sorted({m for l in lines for m in re.findall(r"\((delta|swapped)\)", l)})
    return "+%d −%d (%s)" % (adds, dels, "/".join(how) or "-")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--prefixes", type=int, default=100000)
    ap.add_argument("--write", metavar="FILE", help="also replace the results block in FILE")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(*args.worker)
    compile_package()
    if os.geteuid() != 0:
        sys.exit("bench/ipsets.py needs root (it creates a network namespace)")
    with tempfile.TemporaryDirectory() as tmp, Bench(tmp, args.prefixes) as b:
        base = b.version("base", b.base)
        listed = sum(len(t.splitlines()) for t in b.base.values())
        rows = [row("start-up and imports only (no work)", [b.update(base, "imports") for _ in range(args.runs)])]
        first = []
        for _ in range(args.runs):
            b.stop(base)
            first.append(b.update(base))
        members = sum(int(m) for l in first[-1][4] for m in re.findall(r"created \((\d+) entries", l))
        rows.append(row("first load (6 sets created)", first, "+%d" % members))
        rows.append(row("refresh, lists unchanged", [b.update(base) for _ in range(args.runs)], "none"))
        for frac in CHANGES:
            changed = b.version("c%d" % (frac * 100), {cc: variant(t, frac, i) for i, (cc, t) in
                                                        enumerate(sorted(b.base.items()))})
            for mode in ("swap", "delta", "auto"):
                samples = []
                for _ in range(args.runs):
                    b.update(base)  # back to the base lists, not measured
                    samples.append(b.update(changed, mode))
                how = {"swap": "full swap", "delta": "delta", "auto": "as the rule chooses"}[mode]
                rows.append(row("refresh, %d%% of each list replaced, %s" % (frac * 100, how), samples,
                                members_changed(samples[-1][4])))
    table = "\n".join([
        "%d sets, %d prefixes listed, %d set members after aggregation; %d runs each, median (min–max)."
        % (len(SIZES), listed, members, args.runs),
        "",
        "| scenario | members changed | `update` total, s | `ipset restore`, s | peak RSS vpn-director, MB "
        "| peak RSS incl. `ipset`, MB |",
        "|---|---|---|---|---|---|"] + rows + ["", "Machine: %s." % machine()])
    print(table)
    if args.write:
        write_block(args.write, "bench/ipsets.py", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
