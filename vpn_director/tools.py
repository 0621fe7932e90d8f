"""The kernel tools: locate them, probe their capabilities once, run batches, name failures precisely."""

import json
import os
import re
import subprocess
import time

from . import state
from .errors import ToolError, VpdError
from .patterns import compiled

# stderr fragments that mean a kernel feature is missing, not a bad batch
FEATURES = [
    (compiled(r"Couldn't load target `?TPROXY", re.I), "kernel feature missing: TPROXY target (xt_TPROXY)"),
    (compiled(r"Couldn't load match `?set", re.I), "kernel feature missing: ipset match (xt_set)"),
    (compiled(r"Couldn't load match `?mark", re.I), "kernel feature missing: mark match (xt_mark)"),
    (compiled(r"Couldn't load target `?MARK", re.I), "kernel feature missing: MARK target (xt_mark)"),
    (compiled(r"set type not supported|Kernel support protocol versions", re.I),
     "kernel feature missing: ipset hash:net (ip_set_hash_net)"),
    (compiled(r"Protocol not supported|Address family not supported", re.I),
     "kernel feature missing: netlink family for this request"),
]
LINE_PATTERNS = [
    compiled(r"Error occurred at line: (\d+)"),
    compiled(r"line (\d+) failed"),
    compiled(r"Error in line (\d+)"),
    compiled(r"Command failed -:(\d+)"),
]


def which(name, path=None):
    """The executable `name` in PATH (shutil.which, whose module loads archive libraries at every start)."""
    if os.sep in name:
        return name if os.path.isfile(name) and os.access(name, os.X_OK) else None
    for d in (os.environ.get("PATH") or os.defpath if path is None else path).split(os.pathsep):
        full = os.path.join(d or ".", name)
        if os.path.isfile(full) and os.access(full, os.X_OK):
            return full
    return None


def other_backend(backend):
    """The iptables backend not in use."""
    return "legacy" if backend == "nft" else "nft"


class Tools:
    """Runs iptables-restore/-save, ipset and ip. `backend` is auto, legacy or nft."""

    def __init__(self, backend="auto", env=None, cache_dir=None):
        self.env = os.environ if env is None else env
        self.cache_dir = cache_dir  # where the probe result is kept between runs
        self.backend_wanted = self.env.get("VPD_IPTABLES") or backend
        self.calls = 0  # external processes spawned (benchmarks read it)
        self.log = []  # (argv, input) of every write, for tests and --verbose
        self.reads = []  # argv of every read-only call (the benchmark replays them as its read floor)
        self.first_call = None  # wall time of the first process (the benchmark's time to first kernel call)
        self._probe = None
        self._probe6 = None

    # --- locating and probing -------------------------------------------------------------
    def _which(self, name):
        path = which(name, self.env.get("PATH"))
        if not path:
            raise ToolError("preflight", "required tool %r not found in PATH" % name)
        return path

    def probe(self):
        """(backend, restore, save, wait_args), computed once per process."""
        if self._probe is None:
            self._probe = self._do_probe()
        return self._probe

    def _do_probe(self):
        want = self.backend_wanted
        candidates = {"legacy": ["iptables-legacy-restore", "iptables-restore"],
                      "nft": ["iptables-nft-restore", "iptables-restore"],
                      "auto": ["iptables-restore"]}.get(want)
        if candidates is None:
            raise ToolError("preflight", "unknown iptables backend %r (auto, legacy or nft)" % want)
        restore = None
        for name in candidates:
            if which(name, self.env.get("PATH")):
                restore = name
                break
        if restore is None:
            self._which(candidates[0])
        version = self._version(restore)
        backend = "nft" if "nf_tables" in version else "legacy"
        if want != "auto" and backend != want:
            raise ToolError("preflight", "%s is the %s backend, not %s" % (restore, backend, want))
        m = re.search(r"v(\d+)\.(\d+)\.(\d+)", version)
        ver = tuple(int(x) for x in m.groups()) if m else (0, 0, 0)
        wait = ["-w", "10"] if ver >= (1, 6, 2) else []
        save = restore.replace("-restore", "-save")
        self._which(save)
        return backend, restore, save, wait

    def probe6(self):
        """(restore, save) of ip6tables in the backend the iptables probe chose, computed once.
        ToolError when it is not installed (or only in another backend)."""
        if self._probe6 is None:
            backend, restore, _, _ = self.probe()
            names = [restore.replace("iptables", "ip6tables", 1)]
            if names[0] == "ip6tables-restore":  # auto: prefer the name that says the backend
                names.insert(0, "ip6tables-%s-restore" % backend)
            found = next((n for n in names if which(n, self.env.get("PATH"))), None)
            if found is None:
                raise ToolError("preflight", "ip6tables not found (%s)" % " or ".join(names))
            if found == "ip6tables-restore" and ("nf_tables" in self._version(found, "probe6.json")) != (
                    backend == "nft"):
                raise ToolError("preflight", "ip6tables-restore is not the %s backend iptables uses" % backend)
            save = found.replace("-restore", "-save")
            self._which(save)
            self._probe6 = (found, save)
        return self._probe6

    def _version(self, restore, cache="probe.json"):
        """`restore --version`, remembered in cache_dir for as long as the binary stays the same:
        a no-op apply then costs only its reads."""
        real = os.path.realpath(self._which(restore))
        try:
            st = os.stat(real)
            key = "%s:%d:%d" % (real, st.st_mtime_ns, st.st_size)
        except OSError:
            key = None
        path = os.path.join(self.cache_dir, cache) if self.cache_dir and key else None
        if path:
            try:
                with open(path) as fh:
                    cached = json.load(fh)
                if cached.get("key") == key:
                    return cached["version"]
            except (OSError, ValueError, AttributeError, KeyError):
                pass
        version = self.run("probe " + restore.split("-")[0], [restore, "--version"]).strip()
        if path:
            try:
                state.ensure_dir(self.cache_dir)
                state.write_atomic(path, json.dumps({"key": key, "version": version}))
            except (OSError, VpdError):
                pass  # only an optimisation
        return version

    # --- running ---------------------------------------------------------------------------
    def run(self, step, argv, input=None, write=False, ok_errors=()):
        exe = self._which(argv[0])
        self.calls += 1
        if self.first_call is None:
            self.first_call = time.time()
        if write:
            self.log.append((list(argv), input))
        else:
            self.reads.append(list(argv))
        try:
            # A writer runs in its own session: a Ctrl-C at the terminal reaches only us, so a
            # batch is never cut in half; the engine rolls back after the step instead.
            proc = subprocess.run([exe] + list(argv[1:]), input=input, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, universal_newlines=True, env=self.env,
                                  start_new_session=write)
        except OSError as e:
            raise ToolError(step, "cannot run %s: %s" % (argv[0], e))
        if proc.returncode != 0 and not _only(proc.stderr, ok_errors):
            raise _failure(step, argv, proc.stderr or proc.stdout, input)
        return proc.stdout

    # --- readers ---------------------------------------------------------------------------
    def iptables_save(self, counters=False, table="mangle"):
        _, _, save, _ = self.probe()
        if table not in ("mangle", "nat", "filter"):
            raise ValueError("not a table we read: %r" % (table,))
        step = "read iptables" if table == "mangle" else "read iptables %s" % table
        return self.run(step, [save, "-t", table] + (["-c"] if counters else []))

    def other_backend_save(self):
        """`iptables-save -t mangle` of the backend we are not using, or None if it is not installed."""
        backend, _, _, _ = self.probe()
        other = "iptables-%s-save" % other_backend(backend)
        if not which(other, self.env.get("PATH")):
            return None
        try:
            return self.run("read other iptables backend", [other, "-t", "mangle"])
        except ToolError:
            return None  # e.g. nf_tables not in this kernel: nothing of ours can be there

    def ip6tables_save(self, counters=False):
        """`ip6tables-save -t filter` of the backend in use."""
        _, save = self.probe6()
        return self.run("read ip6tables", [save, "-t", "filter"] + (["-c"] if counters else []))

    def ipset_save(self):
        return self.run("read ipset", ["ipset", "save"])

    def ipset_headers(self):
        """Every set's type, header and entry count, without members (the watchdog's look)."""
        return self.run("read ipset headers", ["ipset", "list", "-t"])

    def ip_read(self, table):
        """`ip rule show` and `ip route show table N`, in one process."""
        cmds = "rule show\nroute show table %d\n" % table
        return self._ip_reads(cmds, 2)

    def route_read(self, table):
        """`ip route show table N` alone (a table an earlier config used)."""
        return self._ip_reads("route show table %d\n" % table, 1)

    def _ip_reads(self, cmds, route_line):
        # A table with no routes does not exist yet; that is an empty table, not an error.
        return self.run("read ip", ["ip", "-N", "-force", "-batch", "-"], input=cmds,
                        ok_errors=("FIB table does not exist", "Dump terminated", "Command failed -:%d" % route_line))

    # --- writers ---------------------------------------------------------------------------
    def iptables_restore(self, step, doc):
        _, restore, _, wait = self.probe()
        return self.run(step, [restore, "--noflush"] + wait, input=doc, write=True)

    def ip6tables_restore(self, step, doc):
        _, _, _, wait = self.probe()
        restore, _ = self.probe6()
        return self.run(step, [restore, "--noflush"] + wait, input=doc, write=True)

    def ipset_restore(self, step, script):
        return self.run(step, ["ipset", "restore"], input=script, write=True)

    def ip_batch(self, step, batch, force=False):
        return self.run(step, ["ip"] + (["-force"] if force else []) + ["-batch", "-"], input=batch, write=True)


def _only(stderr, allowed):
    """True if every stderr line is one of the allowed, harmless messages."""
    lines = [l for l in stderr.splitlines() if l.strip()]
    return bool(allowed) and bool(lines) and all(any(a in l for a in allowed) for l in lines)


def _failure(step, argv, stderr, input):
    text = " ".join(line.strip() for line in stderr.strip().splitlines() if line.strip()
                    and not line.startswith("Try `"))
    for pattern, message in FEATURES:
        if pattern.search(text):
            return ToolError(step, message + " [%s]" % text[:200])
    line = None
    if input:
        for pattern in LINE_PATTERNS:
            m = pattern.search(text)
            if m:
                lines = input.splitlines()
                n = int(m.group(1))
                if 0 < n <= len(lines):
                    line = "%d: %s" % (n, lines[n - 1])
                break
    return ToolError(step, "%s failed: %s" % (os.path.basename(argv[0]), text[:300] or "exit status non-zero"),
                     line)
