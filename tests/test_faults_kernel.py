"""Failures: a step that fails keeps the previous routing; missing tools and features are named; runs queue."""

import fcntl
import os
import shutil
import stat
import subprocess
import sys
import time

import pytest

from netns import ROOT
from test_apply_kernel import FULL

pytestmark = pytest.mark.kernel

# Config B differs from FULL in every kind of object: sets, ip rules, chains.
CHANGED = {
    "xray": {**FULL["xray"], "clients": ["192.168.50.11"], "exclude_sets": ["ua"]},
    "tunnel_director": {"tunnels": {
        "wgc2": {"clients": ["192.168.60.0/24"], "exclude": ["ru"]},
        **FULL["tunnel_director"]["tunnels"],
    }},
}


def wrapper(bindir, name, script):
    """A fake `name` earlier on PATH. `script` is fixed test text; REAL is the real binary."""
    real = shutil.which(name)
    path = bindir / name
    path.write_text("#!/bin/sh\nREAL=%s\n%s\n" % (real, script))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return {"PATH": "%s:%s" % (bindir, os.environ["PATH"])}


FAIL_WRITES = 'case "$*" in *--version*) exec "$REAL" "$@";; esac\ncat >/dev/null\n' \
              'echo "%s" >&2\nexit 1'


@pytest.fixture
def applied(router):
    cfg = router.config(FULL, "a.json")
    router.vpd("apply", config=cfg, check=0)
    return router, router.snapshot(), router.config(CHANGED, "b.json")


def test_failing_chain_commit_rolls_back_sets_and_rules(applied, tmp_path):
    router, good, changed = applied
    env = wrapper(tmp_path, "iptables-%s-restore" % router.backend,
                  FAIL_WRITES % "iptables-restore: simulated failure\\n\\nError occurred at line: 3")
    err = router.vpd("apply", config=changed, check=1, env=env).stderr
    assert "update mangle chains and jumps" in err
    assert "offending line: 3: " in err
    assert len(err.strip().splitlines()) == 1
    assert router.snapshot() == good  # the new sets were swapped back, the new ip rules removed
    router.vpd("apply", config=changed, check=0)  # and with a working tool it converges
    router.vpd("status", config=changed, check=0)


def test_failing_ip_batch_keeps_previous_state(applied, tmp_path):
    router, good, changed = applied
    env = wrapper(tmp_path, "ip", 'if [ "$1" = "-batch" ]; then cat >/dev/null; '
                                  'echo "RTNETLINK answers: Operation not permitted" >&2; '
                                  'echo "Command failed -:1" >&2; exit 1; fi\nexec "$REAL" "$@"')
    err = router.vpd("apply", config=changed, check=1, env=env).stderr
    assert "add ip rules and routes" in err and "offending line: 1: rule add pref" in err
    assert router.snapshot() == good


def test_failing_set_load_changes_nothing(applied, tmp_path):
    router, good, changed = applied
    env = wrapper(tmp_path, "ipset", 'if [ "$1" = "restore" ]; then cat >/dev/null; '
                                     'echo "ipset v7.17: Error in line 2: Kernel error received: Out of memory" >&2;'
                                     ' exit 1; fi\nexec "$REAL" "$@"')
    err = router.vpd("apply", config=changed, check=1, env=env).stderr
    assert "load sets" in err and "offending line: 2: add " in err
    assert router.snapshot() == good


def test_missing_tproxy_is_named(router, tmp_path):
    env = wrapper(tmp_path, "iptables-%s-restore" % router.backend,
                  FAIL_WRITES % "iptables-restore v1.8.9: Couldn't load target \\`TPROXY':No such file or directory")
    before = router.snapshot()
    err = router.vpd("apply", config=router.config(FULL), check=1, env=env).stderr
    assert "kernel feature missing: TPROXY target" in err
    assert router.snapshot() == before


def test_missing_tool_is_named(router, tmp_path):
    for tool in ("ip", "iptables-legacy-restore", "iptables-legacy-save", "iptables-nft-restore",
                 "iptables-nft-save", "iptables-restore", "iptables-save"):
        os.symlink(shutil.which(tool), str(tmp_path / tool))
    before = router.snapshot()
    proc = router.vpd("apply", config=router.config(FULL), check=1, env={"PATH": str(tmp_path)})
    assert proc.stderr.strip() == "vpn-director: error: preflight: required tool 'ipset' not found in PATH"
    assert router.snapshot() == before


@pytest.mark.parametrize("create", ["ipset create ru hash:ip", "ipset create ru hash:net family inet6"])
def test_set_of_another_type_is_refused_before_any_change(router, create):
    router.ns.sh(create)
    before = router.snapshot()
    err = router.vpd("apply", config=router.config(FULL), check=1).stderr
    assert "set ru exists as %s, not hash:net family inet" % (
        "hash:ip family inet" if "hash:ip" in create else "hash:net family inet6") in err
    assert router.snapshot() == before


def test_lock_wait_is_bounded(router):
    cfg = router.config({**FULL, "advanced": {"lock_timeout": 1}})
    router.state_dir.mkdir(exist_ok=True)
    fd = os.open(str(router.state_dir / "lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        started = time.monotonic()
        err = router.vpd("apply", config=cfg, check=1).stderr
        assert "another vpn-director run held" in err
        assert time.monotonic() - started >= 1
    finally:
        os.close(fd)
    router.vpd("apply", config=cfg, check=0)


def test_concurrent_runs_queue_and_all_finish(router):
    cfgs = [router.config(FULL if i % 2 else CHANGED, "c%d.json" % i) for i in range(8)]
    procs = [subprocess.Popen(["ip", "netns", "exec", router.ns.name, sys.executable, "-m", "vpn_director",
                               "-c", c, "apply"], env=router.env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True) for c in cfgs]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert [r for r, _ in results] == [0] * 8, results
    # whichever ran last, the kernel now matches one of the two configs exactly
    ok = [router.vpd("status", config=c).returncode for c in cfgs[:2]]
    assert sorted(ok) == [0, 3]


def test_boot_wait_follows_config(monkeypatch):
    sys.path.insert(0, ROOT)
    from vpn_director import state
    slept = []
    monkeypatch.setattr(state, "uptime", lambda: 30.0)
    state.boot_wait(120, 60, lambda msg: None, sleep=slept.append)
    assert slept == [60]
    monkeypatch.setattr(state, "uptime", lambda: 500.0)
    state.boot_wait(120, 60, lambda msg: None, sleep=slept.append)
    assert slept == [60]
