"""Start-up and no-op cost against their floors (used by run.py, in the same namespaces and run).

* time to the first kernel call: from the spawn of the program to its first tool process
  (VPD_STATS records the wall time of that call);
* no-op watchdog (`apply --if-changed`) and no-op explicit `apply`, each against a bare
  interpreter start (`python3 -I -S -c pass`, started the same way) plus the read-only tool calls
  that very run made, replayed on their own inside the namespace by one process;
* import time of each command: the `-X importtime` self times of every module a bare
  interpreter does not load, summed.
"""

import json
import os
import statistics
import subprocess
import sys

from common import interpreter, measured, program

# Runs inside the namespace: each argv of the JSON list on stdin, output discarded; prints the
# seconds they took together.
REPLAY = ("import json, subprocess, sys, time\n"
          "calls = json.load(sys.stdin)\n"
          "t = time.perf_counter()\n"
          "for argv in calls:\n"
          "    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
          "print(time.perf_counter() - t)\n")
COMMANDS = [("apply --if-changed", ["apply", "--if-changed"]), ("apply", ["apply"]), ("status", ["status"]),
            ("check", ["check"]), ("trace", ["trace", "192.168.50.10", "1.1.1.1"])]


def bare(ns):
    return measured(ns.wrap(interpreter() + ["-c", "pass"]))["elapsed"]


def read_floor(ns, reads):
    p = subprocess.run(ns.wrap(interpreter() + ["-c", REPLAY]), input=json.dumps(reads), check=True,
                       stdout=subprocess.PIPE, universal_newlines=True)
    return float(p.stdout)


def run(bench, ns, *args):
    """(seconds, seconds to the first kernel call or None, the run's VPD_STATS)."""
    stats = os.path.join(bench.dir, "stats.json")
    r = measured(ns.wrap(interpreter() + [program(), "-c", bench.config] + list(args)),
                 env=dict(bench.env, VPD_STATS=stats))
    with open(stats) as fh:
        s = json.load(fh)
    first = s["first_call"] - r["started"] if s.get("first_call") else None
    return r["elapsed"], first, s


def measure(bench, ns, res):
    """One round on an applied namespace: appends to res[...] lists."""
    for key, args in (("watch", ("apply", "--if-changed")), ("noop", ("apply",))):
        elapsed, first, s = run(bench, ns, *args)
        res[key + "_s"].append(elapsed)
        res[key + "_first"].append(first)
        res[key + "_reads"].append(read_floor(ns, s["reads"]))
        res[key + "_calls"] = [" ".join(a[:3]) for a in s["reads"]]
    res["bare"].append(bare(ns))


def imports(bench, ns):
    """{command: milliseconds of imports}, median of 3."""
    base = _modules(subprocess.run(interpreter() + ["-X", "importtime", "-c", "pass"], stderr=subprocess.PIPE,
                                   universal_newlines=True).stderr)
    out = {}
    for name, args in COMMANDS:
        sums = []
        for _ in range(3):
            p = subprocess.run(ns.wrap(interpreter() + ["-X", "importtime", program(), "-c", bench.config] + args),
                               env=bench.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               universal_newlines=True)
            sums.append(sum(us for mod, us in _modules(p.stderr).items() if mod not in base) / 1000.0)
        out[name] = statistics.median(sums)
    return out


def _modules(text):
    """{module: self microseconds} from -X importtime output."""
    mods = {}
    for line in text.splitlines():
        if line.startswith("import time:") and "self [us]" not in line:
            self_us, _, name = line[len("import time:"):].split("|")
            mods[name.strip()] = int(self_us)
    return mods


def table(results):
    med = statistics.median
    lines = ["| scenario | backend | watchdog no-op s | first kernel call ms | bare interpreter s | its reads s "
             "| watchdog / (bare + reads) | no-op apply s | its reads s | no-op apply / (bare + reads) |",
             "|" + "---|" * 10]
    for (name, backend), res in results.items():
        b = med(res["bare"])
        w, wr, n, nr = (med(res[k]) for k in ("watch_s", "watch_reads", "noop_s", "noop_reads"))
        lines.append("| %s | %s | %.3f | %.1f | %.3f | %.3f | %.2f | %.3f | %.3f | %.2f |" % (
            name, backend, w, 1000 * med(res["watch_first"]), b, wr, w / (b + wr), n, nr, n / (b + nr)))
    lines.append("")
    for (name, backend), res in results.items():
        lines.append("- %s/%s: the watchdog read with %s; the explicit apply with %s" % (
            name, backend, ", ".join(res["watch_calls"]), ", ".join(res["noop_calls"])))
    return "\n".join(lines) + "\n"


def imports_table(per_scenario):
    names = [n for n, _ in COMMANDS]
    lines = ["| scenario | " + " | ".join("`%s` ms" % n for n in names) + " |", "|" + "---|" * (len(names) + 1)]
    for scenario, ms in per_scenario.items():
        lines.append("| %s | " % scenario + " | ".join("%.1f" % ms[n] for n in names) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit("used by bench/run.py")
