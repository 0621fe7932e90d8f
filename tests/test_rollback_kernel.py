"""A failed or interrupted apply keeps the previous routing; a killed one never blocks the next.

Faults are real: the kernel tool runs the first K lines of its batch and then meets a bad one,
or the run gets SIGTERM/SIGINT/SIGKILL while a step runs. After each, real packets from every
client take the paths they took before, and the next plain apply converges.
"""

import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest

from test_lab_kernel import CHANGED, TOPOLOGY, _all_paths

pytestmark = pytest.mark.kernel


def kernel(lab):
    """Everything vpn-director may touch in the router, normalised (sizes and counters vary)."""
    ipt = lab._run(["iptables-%s-save" % lab.backend, "-t", "mangle"], ns=lab.router).stdout
    ipt = [l.split(" [")[0] if l.startswith(":") else l for l in ipt.splitlines() if not l.startswith("#")]
    sets = [" ".join(l.split()[:3]) if l.startswith("create ") else l
            for l in lab._run(["ipset", "save"], ns=lab.router).stdout.splitlines()]
    rules = lab._run(["ip", "rule", "show"], ns=lab.router).stdout
    routes = lab._run(["ip", "-4", "route", "show", "table", "all"], ns=lab.router).stdout
    return ipt, sorted(sets), rules, routes


def wrap(tmp_path, tool, body):
    """`tool` earlier on PATH running `body` (fixed test text; $REAL is the real tool).
    Reads and version probes pass straight through."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    real = shutil.which(tool)
    path = bindir / tool
    path.write_text("#!/bin/sh\nREAL=%s\nD=%s\n"
                    "case \"$*\" in *--version*|*-save*|save|*-N*|netns*) exec \"$REAL\" \"$@\";; esac\n%s\n"
                    % (real, bindir, body))
    path.chmod(0o755)
    return bindir


def run_apply(lab, bindir=None, **kw):
    env = lab.env()
    if bindir:
        env["PATH"] = "%s:%s" % (bindir, os.environ["PATH"])
    argv = ["ip", "netns", "exec", lab.router, sys.executable, "-m", "vpn_director", "-c", lab.config_path, "apply"]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, **kw)


def set_batch_lines(lab):
    """Lines of the `load sets` batch the changed config needs (from --dry-run)."""
    out = lab.vpd("apply", "--dry-run").stdout.splitlines()
    i = out.index("== load sets (ipset)")
    lines = []
    for line in out[i + 1:]:
        if line.startswith("== "):
            break
        if not line.startswith("  # "):
            lines.append(line)
    return lines


@pytest.fixture
def applied(lab):
    lab.up(TOPOLOGY)
    assert lab.apply().returncode == 0
    return lab, kernel(lab), _all_paths(lab)


def converges(lab, good_paths):
    p = lab.apply()
    assert p.returncode == 0, p.stderr
    assert lab.vpd("status").returncode == 0
    assert _all_paths(lab) != good_paths
    sets = lab._run(["ipset", "list", "-n"], ns=lab.router).stdout.split()
    assert not [s for s in sets if s.startswith("vpd-tmp-")]


def test_set_batch_cut_at_every_line_keeps_previous_state(applied, tmp_path):
    lab, good, good_paths = applied
    lab.write_config(CHANGED)
    lines = set_batch_lines(lab)
    assert len(lines) >= 6 and any(l.startswith("swap ") for l in lines), lines
    for k in range(len(lines)):
        marker = tmp_path / ("cut%d" % k)
        # the first restore runs k lines and then a bad one; the repair that follows runs whole
        bindir = wrap(tmp_path, "ipset", '[ "$1" = restore ] && [ ! -e %s ] && { touch %s; '
                                         '{ head -n %d; echo "bogus-line"; } | "$REAL" restore; exit 1; }\n'
                                         'exec "$REAL" "$@"' % (marker, marker, k))
        p = run_apply(lab, bindir)
        _, err = p.communicate(timeout=60)
        assert p.returncode == 1, (k, err)
        assert "load sets" in err, err
        assert kernel(lab) == good, "cut after line %d: %s" % (k, lines[k - 1] if k else "-")
        if k % 3 == 0 or k == len(lines) - 1:
            assert _all_paths(lab) == good_paths, k
    converges(lab, good_paths)


@pytest.mark.parametrize("tool", ["ipset", "ip", "iptables-{b}-restore"])
@pytest.mark.parametrize("sig", ["TERM", "INT"])
def test_signal_during_a_step_rolls_back(applied, tmp_path, tool, sig, backend):
    lab, good, good_paths = applied
    tool = tool.format(b=backend)
    sent = tmp_path / "sent"
    bindir = wrap(tmp_path, tool, '[ -e %s ] || { touch %s; kill -%s $PPID; }\nexec "$REAL" "$@"'
                  % (sent, sent, sig))
    lab.write_config(CHANGED)
    p = run_apply(lab, bindir)
    _, err = p.communicate(timeout=60)
    assert sent.exists()
    assert p.returncode == 1, err
    step = {"ipset": "load sets", "ip": "add ip rules and routes"}.get(tool, "update mangle chains and jumps")
    assert "interrupted by SIG%s during '%s'" % (sig, step) in err, err
    assert kernel(lab) == good
    assert _all_paths(lab) == good_paths
    converges(lab, good_paths)


def big_zone(n, seed=7):
    rnd = random.Random(seed)
    nets = {"%d.%d.%d.0/24" % (rnd.randrange(1, 60), rnd.randrange(256), rnd.randrange(256)) for _ in range(n)}
    return "\n".join(sorted(nets)) + "\n"


def test_signal_at_any_moment_of_a_large_apply(applied, tmp_path):
    """SIGTERM/SIGINT at several moments of an apply that loads a 40,000-entry list: the run either
    finished (new state) or left the previous state exactly."""
    lab, good, good_paths = applied
    with open(os.path.join(lab.workdir, "data", "ipsets", "de.zone"), "w") as fh:
        fh.write(big_zone(40000))
    big = {**CHANGED, "xray": {**CHANGED["xray"], "exclude_sets": ["ua", "de"]}}
    outcomes = []
    for i, delay in enumerate([0.05, 0.15, 0.25, 0.35, 0.5, 0.7]):
        lab.write_config(big)
        p = run_apply(lab)
        time.sleep(delay)
        p.send_signal(signal.SIGTERM if i % 2 == 0 else signal.SIGINT)
        _, err = p.communicate(timeout=60)
        if p.returncode == 0 or (p.returncode < 0 and kernel(lab) != good):
            # finished; a signal that comes after the held window (every step done and the record
            # saved) kills the process in its last lines: then too the new state, whole
            outcomes.append("finished" if p.returncode == 0 else "finished, then killed")
            assert lab.vpd("status").returncode == 0
        else:
            outcomes.append("rolled back" if "interrupted" in err else "stopped early")
            assert kernel(lab) == good, (delay, err)
        # back to the previous config for the next try
        lab.write_config(TOPOLOGY)
        assert lab.apply().returncode == 0
        assert kernel(lab) == good
    print("\nsignal outcomes:", outcomes)
    assert _all_paths(lab) == good_paths


def test_killed_during_set_load_then_next_apply_converges(applied, tmp_path):
    """SIGKILL half-way through the set batch leaves temporary and new sets behind; the next run
    removes them first, whatever names it is about to use."""
    lab, good, good_paths = applied
    lab.write_config(CHANGED)
    started = tmp_path / "started"
    bindir = wrap(tmp_path, "ipset", '[ "$1" = restore ] && { head -n 2 | "$REAL" restore; touch %s; sleep 30; }\n'
                                     'exec "$REAL" "$@"' % started)
    p = run_apply(lab, bindir, start_new_session=True)
    deadline = time.time() + 20
    while not started.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert started.exists()
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    left = lab._run(["ipset", "list", "-n"], ns=lab.router).stdout.split()
    assert "vpd-tmp-0" in left  # the state a killed run leaves
    assert _all_paths(lab) == good_paths  # nothing referenced the half-loaded sets yet
    converges(lab, good_paths)


def test_leftover_temp_sets_with_this_runs_names_do_not_block(applied):
    lab, good, good_paths = applied
    for name in ("vpd-tmp-0", "vpd-tmp-1"):
        lab._run(["ipset", "create", name, "hash:net"], ns=lab.router)
    lab.write_config(CHANGED)
    converges(lab, good_paths)


def test_set_of_another_family_with_other_changes_changes_nothing(applied):
    """The issue's repro: a pre-existing inet6 `de` and a change of the Xray clients."""
    lab, good, good_paths = applied
    lab._run(["ipset", "create", "de", "hash:net", "family", "inet6"], ns=lab.router)
    with open(os.path.join(lab.workdir, "data", "ipsets", "de.zone"), "w") as fh:
        fh.write("81.0.0.0/8\n")
    good = kernel(lab)
    lab.write_config({**CHANGED, "xray": {**CHANGED["xray"], "exclude_sets": ["ua", "de"]}})
    p = lab.apply()
    assert p.returncode == 1 and "set de exists as hash:net family inet6" in p.stderr, p.stderr
    assert kernel(lab) == good
    assert _all_paths(lab) == good_paths
    lab._run(["ipset", "destroy", "de"], ns=lab.router)
    converges(lab, good_paths)
