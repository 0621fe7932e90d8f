"""Network namespaces for kernel tests: created by the test, always removed (cleanup registered first)."""

import itertools
import re
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_counter = itertools.count()


def can_use_netns():
    if os.geteuid() != 0:
        return False
    name = "vpdprobe%d" % os.getpid()
    ok = subprocess.run(["ip", "netns", "add", name], stderr=subprocess.DEVNULL).returncode == 0
    subprocess.run(["ip", "netns", "del", name], stderr=subprocess.DEVNULL)
    return ok


class Netns:
    """One namespace. `cleanup` is a callable registry (pytest's request.addfinalizer)."""

    def __init__(self, cleanup, prefix="vpd"):
        self.name = "%s%d_%d" % (prefix, os.getpid(), next(_counter))
        cleanup(self.delete)  # registered before the namespace exists
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.sh("ip link set lo up")

    def delete(self):
        subprocess.run(["ip", "netns", "del", self.name], stderr=subprocess.DEVNULL)

    def run(self, argv, input=None, check=True, env=None):
        proc = subprocess.run(["ip", "netns", "exec", self.name] + list(argv), input=input,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                              env=env)
        if check and proc.returncode != 0:
            raise AssertionError("%s failed (%d): %s%s" % (argv, proc.returncode, proc.stdout, proc.stderr))
        return proc

    def sh(self, script, check=True):
        """Test fixtures only: fixed strings written by the tests, never config values."""
        return self.run(["sh", "-c", script], check=check)


class Router:
    """A namespace playing the router, with a LAN bridge br0, and the tool run inside it."""

    def __init__(self, cleanup, backend, tmp_path):
        self.ns = Netns(cleanup)
        self.backend = backend
        self.tmp = tmp_path
        self.ns.sh("ip link add br0 type bridge && ip link set br0 up")
        self.data = tmp_path / "data"
        (self.data / "ipsets").mkdir(parents=True)
        self.rt_tables = tmp_path / "rt_tables"
        self.rt_tables.write_text("111 wgc1\n112 wgc2\n113 ovpnc1\n114 ovpnc3\n")
        self.state_dir = tmp_path / "state"
        self.zone("ru", "77.88.0.0/16\n5.255.255.0/24\n# comment\n")
        self.zone("ua", "91.198.0.0/16\n")

    def zone(self, cc, text):
        (self.data / "ipsets" / ("%s.zone" % cc)).write_text(text)

    def config(self, cfg, name="cfg.json"):
        """Write `cfg` with the test's data/state/rt_tables paths filled in; return its path."""
        cfg = json.loads(json.dumps(cfg))
        cfg.setdefault("data_dir", str(self.data))
        adv = cfg.setdefault("advanced", {})
        adv.setdefault("state_dir", str(self.state_dir))
        adv.setdefault("rt_tables", str(self.rt_tables))
        adv.setdefault("boot", {"min_time": 0, "wait_delay": 0})
        adv.setdefault("lock_timeout", 60)
        path = self.tmp / name
        path.write_text(json.dumps(cfg, indent=1))
        return str(path)

    def env(self, extra=None):
        env = dict(os.environ, VPD_IPTABLES=self.backend, PYTHONPATH=ROOT)
        env.update(extra or {})
        return env

    def vpd(self, *args, config=None, check=None, env=None):
        """Run `python -m vpn_director` inside the namespace; check=N asserts the exit code."""
        argv = [sys.executable, "-m", "vpn_director"]
        if config:
            argv += ["-c", config]
        proc = self.ns.run(argv + list(args), check=False, env=self.env(env))
        if check is not None:
            assert proc.returncode == check, "exit %d (wanted %d)\nstdout:\n%s\nstderr:\n%s" % (
                proc.returncode, check, proc.stdout, proc.stderr)
        return proc

    # --- kernel state, normalised for comparison -------------------------------------------
    def iptables_save(self):
        out = self.ns.run(["iptables-%s-save" % self.backend, "-t", "mangle"]).stdout
        out = re.sub(r"(?m)^(:\S+ \S+) \[\d+:\d+\]$", r"\1 [0:0]", out)  # policy counters move
        return "\n".join(l for l in out.splitlines() if not l.startswith("#")) + "\n"

    def ipset_save(self):
        out = self.ns.run(["ipset", "save"]).stdout
        lines = []
        for line in out.splitlines():
            if line.startswith("create "):
                line = " ".join(line.split()[:3])  # sizing and initval vary; name and type matter
            lines.append(line)
        return "\n".join(sorted(lines)) + "\n"

    def ip_rules(self):
        return self.ns.run(["ip", "rule", "show"]).stdout

    def routes(self, table=100):
        return self.ns.run(["ip", "route", "show", "table", str(table)], check=False).stdout

    def snapshot(self):
        return {"mangle": self.iptables_save(), "ipset": self.ipset_save(), "rules": self.ip_rules(),
                "routes": self.routes()}

    def chain(self, name):
        return [l[len("-A %s " % name):] for l in self.iptables_save().splitlines()
                if l.startswith("-A %s " % name)]
