"""Shared by the benchmark scripts: generated country lists, machine facts, timing and table helpers."""

import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Prefix-length mix of real per-country aggregated lists: mostly /16../24.
LENGTHS = [(24, 0.45), (23, 0.12), (22, 0.14), (21, 0.09), (20, 0.07), (19, 0.05), (18, 0.03), (17, 0.02),
           (16, 0.02), (15, 0.005), (14, 0.005)]


def zone_text(rng, count):
    """`count` distinct prefixes with the realistic length mix, one CIDR a line."""
    lens, weights = zip(*LENGTHS)
    out = set()
    while len(out) < count:
        plen = rng.choices(lens, weights)[0]
        base = rng.randrange(1 << 24, 224 << 24) >> (32 - plen) << (32 - plen)
        out.add("%d.%d.%d.%d/%d" % (base >> 24, base >> 16 & 255, base >> 8 & 255, base & 255, plen))
    return "\n".join(sorted(out)) + "\n"


def write_zones(directory, sizes, seed=7):
    """{cc: count} -> <directory>/<cc>.zone files."""
    rng = random.Random(seed)
    os.makedirs(directory, exist_ok=True)
    for cc, count in sizes.items():
        with open(os.path.join(directory, cc + ".zone"), "w") as fh:
            fh.write(zone_text(rng, count))


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    tools = []
    for argv in (["iptables-legacy", "--version"], ["iptables-nft", "--version"], ["ipset", "version"],
                 ["ip", "-V"]):
        try:
            tools.append(subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        universal_newlines=True).stdout.strip().splitlines()[0])
        except (OSError, IndexError):
            tools.append("%s: not found" % argv[0])
    return ("%s, %d cores, Linux %s, Python %s; %s; date %s" % (
        cpu, os.cpu_count(), platform.release(), platform.python_version(), "; ".join(tools),
        time.strftime("%Y-%m-%d")))


def timed(argv, input=None, env=None):
    """Run argv; return (seconds, peak RSS in MB of its process tree, stdout+stderr)."""
    r = measured(argv, input, env)
    return r["elapsed"], r["maxrss_kb"] / 1024.0, r["output"]


def measured(argv, input=None, env=None):
    """Run argv; {elapsed, maxrss_kb, started (wall time just before the spawn), output}.

    A fresh measuring process runs it, so RUSAGE_CHILDREN covers exactly that tree.
    """
    import json
    import tempfile
    with tempfile.NamedTemporaryFile("r", suffix=".json") as res:
        p = subprocess.run([sys.executable, os.path.abspath(__file__), res.name] + list(argv), input=input,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, env=env)
        if p.returncode != 0:
            raise RuntimeError("%s failed: %s%s" % (" ".join(argv[:8]), p.stdout, p.stderr))
        r = json.load(res)
    r["output"] = p.stdout + p.stderr
    return r


def _measure(result_path, argv):
    import json
    started = time.time()
    t0 = time.perf_counter()
    rc = subprocess.call(argv)
    elapsed = time.perf_counter() - t0
    with open(result_path, "w") as fh:
        json.dump({"elapsed": elapsed, "started": started,
                   "maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}, fh)
    return rc


def summary(values, fmt="%.3f"):
    if not values:
        return "-"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt % med
    return ("%s (%s–%s)" % (fmt % med, fmt % min(values), fmt % max(values)))


def write_block(path, script, text):
    """Replace the results block of `script` (e.g. "bench/run.py") in the markdown file `path`."""
    begin, end = "<!-- %s begin -->" % script, "<!-- %s end -->" % script
    with open(path) as fh:
        doc = fh.read()
    if begin not in doc or end not in doc:
        raise SystemExit("%s has no %s block" % (path, begin))
    head, rest = doc.split(begin, 1)
    with open(path, "w") as fh:
        fh.write(head + begin + "\n" + text.rstrip("\n") + "\n" + end + rest.split(end, 1)[1])


def compile_package():
    """Write the package's bytecode before anything is timed. A run that has to compile modules
    (a stale __pycache__ under PYTHONDONTWRITEBYTECODE) measures the compiler, not vpn-director;
    the .pyz that routers run carries its bytecode."""
    import compileall
    compileall.compile_dir(os.path.join(ROOT, "vpn_director"), quiet=1)


_PROGRAM = []


def program():
    """The single-file program routers run (`python3 -I -S vpn-director.pyz`, as the installed
    launcher starts it), built once per benchmark run from this tree, bytecode included."""
    if not _PROGRAM:
        import atexit
        import shutil
        import tempfile
        d = tempfile.mkdtemp(prefix="vpd-bench-pyz-")
        atexit.register(shutil.rmtree, d, True)
        path = os.path.join(d, "vpn-director.pyz")
        subprocess.run([sys.executable, "-m", "vpn_director.pyz", path], check=True, cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.DEVNULL)
        _PROGRAM.append(path)
    return _PROGRAM[0]


def interpreter():
    """The interpreter as the launcher runs it: isolated, no site-packages."""
    return [sys.executable, "-I", "-S"]


def vpd_argv(config, *args):
    return interpreter() + [program(), "-c", config] + list(args)


if __name__ == "__main__":
    sys.exit(_measure(sys.argv[1], sys.argv[2:]))
