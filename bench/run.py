#!/usr/bin/env python3
"""Apply, re-apply, update and stop at router scale, against the kernel-tool floor and a
one-command-per-rule baseline, in network namespaces this script creates and removes (root).

    python3 bench/run.py [--runs 5] [--scenarios S,M,L] [--backends legacy,nft] [--write docs/benchmarks.md]

Scenarios
  S  1 tunnel, 1 client; Xray with 1 client and 1 exclusion set
  Mo the original shell tool's own benchmark scenario M: as M, with three 300-500-prefix lists
  M  3 tunnels x 4 clients x 2 exclusion sets; 5 Xray clients, 3 Xray exclusion sets
  L  8 tunnels x 16 clients; 32 Xray clients; 6 country sets totalling ~100,000 prefixes; servers, exclude_ips

Measures, each over --runs runs (median and min-max): cold apply on an empty namespace, no-op
apply, one-client change, country-set refresh (`update` from file:// sources holding a list
with 1% of its prefixes replaced), stop. Floor: the `render --out` batches fed straight to
ipset restore / ip -batch / iptables-restore. Baseline: the same objects one process per element,
as shell tools do (for L the per-entry set loading is timed on a sample and scaled).
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import compile_package, ROOT, machine, summary, timed, vpd_argv, write_block, write_zones, zone_text  # noqa: E402
import startup  # noqa: E402

COUNTRIES = ["ru", "ua", "by", "kz", "cn", "ir"]


def scenario(name):
    """(config dict, {cc: prefix count}) for S, M or L."""
    def clients(base, n):
        return ["192.168.%d.%d" % (base + i // 200, 10 + i % 200) for i in range(n)]
    if name == "S":
        return ({"xray": {"clients": ["192.168.50.10"], "servers": ["203.0.113.10"], "exclude_sets": ["ru"]},
                 "tunnel_director": {"tunnels": {"wgc1": {"clients": ["192.168.51.10"], "exclude": ["ru"]}}}},
                {"ru": 2000})
    if name in ("M", "Mo"):
        tun = {t: {"clients": clients(60 + i, 4), "exclude": ["ru", "ua"]} for i, t in
               enumerate(["wgc1", "wgc2", "ovpnc1"])}
        sizes = {"ru": 2000, "ua": 2000, "by": 2000} if name == "M" else {"ru": 500, "ua": 400, "by": 300}
        return ({"xray": {"clients": clients(50, 5), "servers": ["203.0.113.10"], "exclude_sets": ["ru", "ua", "by"]},
                 "tunnel_director": {"tunnels": tun}}, sizes)
    names = ["wgc%d" % i for i in range(1, 6)] + ["ovpnc%d" % i for i in range(1, 4)]
    tun = {t: {"clients": clients(60 + i, 16), "exclude": COUNTRIES[i % 3: i % 3 + 3]} for i, t in enumerate(names)}
    sizes = dict(zip(COUNTRIES, [40000, 20000, 8000, 12000, 15000, 5000]))
    return ({"xray": {"clients": clients(50, 32), "servers": ["203.0.113.10", "203.0.113.11", "198.51.100.0/28"],
                      "exclude_ips": ["198.51.100.64/26", "100.64.0.0/10"], "exclude_sets": COUNTRIES[:4]},
             "tunnel_director": {"tunnels": tun}}, sizes)


class Namespace:
    def __init__(self, name):
        self.name = name
        subprocess.run(["ip", "netns", "add", name], check=True)
        self.run(["ip", "link", "set", "lo", "up"])
        self.run(["ip", "link", "add", "br0", "type", "bridge"])

    def run(self, argv, input=None):
        return subprocess.run(["ip", "netns", "exec", self.name] + argv, input=input, check=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)

    def wrap(self, argv):
        return ["ip", "netns", "exec", self.name] + argv

    def delete(self):
        subprocess.run(["ip", "netns", "del", self.name], stderr=subprocess.DEVNULL)


class Bench:
    def __init__(self, name, backend, runs, workdir, imports=False):
        self.name, self.backend, self.runs, self.imports = name, backend, runs, imports
        self.dir = os.path.join(workdir, "%s-%s" % (name, backend))
        os.makedirs(self.dir)
        raw, self.sizes = scenario(name)
        write_zones(os.path.join(self.dir, "data", "ipsets"), self.sizes)
        write_zones(os.path.join(self.dir, "src"), self.sizes)
        with open(os.path.join(self.dir, "rt_tables"), "w") as fh:
            fh.write("".join("%d %s\n" % (120 + i, t) for i, t in enumerate(raw["tunnel_director"]["tunnels"])))
        raw["data_dir"] = os.path.join(self.dir, "data")
        raw["ipsets"] = {"sources": ["file://" + os.path.join(self.dir, "src", "{cc}.zone")]}
        raw["advanced"] = {"rt_tables": os.path.join(self.dir, "rt_tables"), "boot": {"min_time": 0},
                           "state_dir": os.path.join(self.dir, "state")}
        self.raw = raw
        self.config = self._write("vpn-director.json", raw)
        changed = json.loads(json.dumps(raw))
        first = next(iter(changed["tunnel_director"]["tunnels"].values()))
        first["clients"].append("192.168.99.99")
        self.changed = self._write("changed.json", changed)
        self.env = dict(os.environ, PYTHONPATH=ROOT, VPD_IPTABLES=backend)
        self.ns_count = 0

    def _write(self, name, raw):
        path = os.path.join(self.dir, name)
        with open(path, "w") as fh:
            json.dump(raw, fh)
        return path

    def fresh(self):
        self.ns_count += 1
        shutil.rmtree(os.path.join(self.dir, "state"), ignore_errors=True)
        return Namespace("vpdb%d_%s%s%d" % (os.getpid() % 10000, self.name, self.backend[0], self.ns_count))

    def vpd(self, ns, *args, config=None):
        stats = os.path.join(self.dir, "stats.json")
        env = dict(self.env, VPD_STATS=stats)
        elapsed, rss, _ = timed(ns.wrap(vpd_argv(config or self.config, *args)), env=env)
        with open(stats) as fh:
            return elapsed, rss, json.load(fh)

    def measure(self):
        res = {k: [] for k in ("cold", "noop", "change", "refresh", "stop", "floor", "baseline")}
        info = {"startup": {k: [] for k in ("watch_s", "watch_first", "watch_reads", "noop_s", "noop_first",
                                            "noop_reads", "bare")}}
        for i in range(self.runs):
            ns = self.fresh()
            try:
                res["cold"].append(self.vpd(ns, "apply"))
                res["noop"].append(self.vpd(ns, "apply"))
                startup.measure(self, ns, info["startup"])
                if i == 0 and self.imports:
                    info["imports"] = startup.imports(self, ns)
                res["change"].append(self.vpd(ns, "apply", config=self.changed))
                self.vpd(ns, "apply")
                self._mutate_sources()
                res["refresh"].append(self.vpd(ns, "update"))
                res["stop"].append(self.vpd(ns, "stop"))
            finally:
                ns.delete()
        out = os.path.join(self.dir, "batches")
        subprocess.run(vpd_argv(self.config, "render", "--out", out), check=True, env=self.env,
                       stdout=subprocess.DEVNULL)
        for _ in range(self.runs):
            ns = self.fresh()
            try:
                res["floor"].append(self._floor(ns, out))
            finally:
                ns.delete()
        for _ in range(max(1, min(self.runs, 3))):
            ns = self.fresh()
            try:
                res["baseline"].append(self._baseline(ns, out, info))
            finally:
                ns.delete()
        return res, info

    def _mutate_sources(self):
        """Replace 1% of every source list's prefixes, as a daily refresh typically does."""
        rng = random.Random(len(os.listdir(os.path.join(self.dir, "src"))) + time.time_ns())
        for cc in self.sizes:
            path = os.path.join(self.dir, "src", cc + ".zone")
            lines = open(path).read().split()
            keep = lines[: len(lines) - max(1, len(lines) // 100)]
            extra = zone_text(rng, len(lines) - len(keep)).split()
            with open(path, "w") as fh:
                fh.write("\n".join(keep + extra) + "\n")

    def _floor(self, ns, out):
        total = 0.0
        for argv, fname in ((["ipset", "restore"], "ipset.restore"), (["ip", "-batch", "-"], "ip.batch"),
                            (["iptables-%s-restore" % self.backend, "--noflush"], "iptables.mangle")):
            with open(os.path.join(out, fname)) as fh:
                elapsed, _, _ = timed(ns.wrap(argv), input=fh.read())
            total += elapsed
        return total, 0.0, {"calls": 3}

    def _baseline(self, ns, out, info):
        """One process per element: the shell-tool way. Returns (seconds, 0, {"calls": n})."""
        cmds, adds = [], []
        for line in open(os.path.join(out, "ipset.restore")).read().splitlines():
            parts = line.split()
            (adds if parts[0] == "add" else cmds).append(["ipset"] + parts)
        ipt = "iptables-%s" % self.backend
        for line in open(os.path.join(out, "iptables.mangle")).read().splitlines():
            if line.startswith(":"):
                cmds.append([ipt, "-t", "mangle", "-N", line[1:].split()[0]])
            elif line.startswith("-"):
                cmds.append([ipt, "-t", "mangle"] + line.split())
        ip_cmds = [["ip"] + line.split() for line in open(os.path.join(out, "ip.batch")).read().splitlines()]
        sample = adds if len(adds) <= 10000 else random.Random(1).sample(adds, 2000)
        t0 = time.perf_counter()
        for argv in cmds[: sum(1 for c in cmds if c[0] == "ipset")]:  # sets first
            ns.run(argv)
        t_sets = time.perf_counter()
        for argv in sample:
            ns.run(argv)
        t_adds = time.perf_counter() - t_sets
        t1 = time.perf_counter()
        for argv in ip_cmds + [c for c in cmds if c[0] != "ipset"]:
            ns.run(argv)
        rest = time.perf_counter() - t1
        scale = len(adds) / float(len(sample)) if sample else 1.0
        info["baseline_scaled"] = scale > 1.0
        elapsed = (t_sets - t0) + t_adds * scale + rest
        return elapsed, 0.0, {"calls": len(cmds) + len(adds) + len(ip_cmds)}


def table(results, machine_line):
    lines = ["Machine: %s" % machine_line, ""]
    lines.append("| scenario | backend | cold apply s | no-op apply s | one-client change s | country refresh s | "
                 "stop s | floor s | baseline s | apply/floor | baseline/apply | peak RSS MB | "
                 "processes (cold / no-op / change) |")
    lines.append("|" + "---|" * 13)
    for (name, backend), (res, info) in results.items():
        med = lambda k: sorted(x[0] for x in res[k])[len(res[k]) // 2]
        rss = max(x[1] for k in ("cold", "noop", "change", "refresh", "stop") for x in res[k])
        calls = lambda k: "%d" % res[k][0][2]["calls"]
        base = summary([x[0] for x in res["baseline"]], "%.2f") + (" (scaled)" if info.get("baseline_scaled") else "")
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %.2f | %.1f | %.1f | %s / %s / %s |" % (
            name, backend, summary([x[0] for x in res["cold"]]), summary([x[0] for x in res["noop"]]),
            summary([x[0] for x in res["change"]]), summary([x[0] for x in res["refresh"]]),
            summary([x[0] for x in res["stop"]]), summary([x[0] for x in res["floor"]]), base,
            med("cold") / med("floor"), med("baseline") / med("cold"), rss,
            calls("cold"), calls("noop"), calls("change")))
    lines.append("")
    for (name, backend), (res, _) in results.items():
        writes = res["change"][0][2].get("steps", [])
        noop = res["noop"][0][2]
        lines.append("- %s/%s: no-op apply spawned %d processes, %d writes; the one-client change ran %s" % (
            name, backend, noop["calls"], noop["writes"], ", ".join(os.path.basename(w) for w in writes) or "nothing"))
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--scenarios", default="S,Mo,M,L")
    ap.add_argument("--backends", default="legacy,nft")
    ap.add_argument("--write", metavar="FILE", help="also replace the results block in FILE")
    args = ap.parse_args()
    compile_package()
    if os.geteuid() != 0:
        sys.exit("bench/run.py needs root (network namespaces)")
    workdir = tempfile.mkdtemp(prefix="vpd-bench-")
    results = {}
    try:
        for i, backend in enumerate(args.backends.split(",")):
            for name in args.scenarios.split(","):
                print("running %s/%s ..." % (name, backend), file=sys.stderr)
                results[(name, backend)] = Bench(name, backend, args.runs, workdir, imports=i == 0).measure()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    text = table(results, machine())
    text += "\nStart-up and no-op runs against their floors (median of %d):\n\n" % args.runs
    text += startup.table({k: info["startup"] for k, (_, info) in results.items()})
    text += "\nImports of each command, ms (`-X importtime` self times of the modules a bare interpreter does not load):\n\n"
    text += startup.imports_table({k[0]: info["imports"] for k, (_, info) in results.items() if "imports" in info})
    print(text)
    if args.write:
        write_block(args.write, "bench/run.py", text)


if __name__ == "__main__":
    main()
