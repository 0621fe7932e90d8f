"""`apply --if-changed`: the drift watchdog run from firewall hooks and cron.

It looks at the live state (the normal read and plan, a few read-only processes) and re-applies
only when something owned is missing or different. It keeps to the components an explicit
`apply` started and no `stop` ended, so a stopped or never-started vpn-director stays out of the
kernel. Re-applies are spaced by `advanced.watchdog.min_interval`; triggers that arrive while
one run is already waiting join it instead of queueing up.
"""

import errno
import fcntl
import json
import os
import time

from . import state
from .model import TUNNEL, XRAY, components

ACTIVE = "active.json"  # components started by an explicit apply
LAST = "watchdog.last"  # wall time of the last re-apply by the watchdog
PENDING = "watchdog.pending"  # held by the run that will check next


def scope_of(comps):
    if {XRAY, TUNNEL} <= set(comps):
        return "all"
    return next(iter(comps), None)


def active(state_dir):
    try:
        with open(os.path.join(state_dir, ACTIVE)) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return set()
    return {c for c in data if c in (XRAY, TUNNEL)} if isinstance(data, list) else set()


def mark(state_dir, scope, started):
    """Record an explicit apply (started) or stop of `scope`."""
    comps = active(state_dir)
    comps = comps | set(components(scope)) if started else comps - set(components(scope))
    state.ensure_dir(state_dir)
    state.write_atomic(os.path.join(state_dir, ACTIVE), json.dumps(sorted(comps)) + "\n")


def run(cfg, check, log, scope="all", prepare=lambda: None, sleep=time.sleep, now=time.time, wait=True):
    """Return (plan, None) after a check, or (None, why nothing was checked).

    `check(scope)` plans against the live state and applies a non-empty plan; it runs under the
    run lock. `prepare()` is the boot wait. wait=False (the watch daemon, which comes back every
    round) skips the check instead of waiting out the spacing after a recent re-apply.
    """
    wanted = [c for c in components(scope) if c in active(cfg.state_dir)]
    if not wanted:
        return None, "not started (run `vpn-director apply` first); nothing to watch"
    state.ensure_dir(cfg.state_dir)
    pending = _try_lock(os.path.join(cfg.state_dir, PENDING))
    if pending is None:
        return None, "another watchdog run is about to check; joined it"
    try:
        prepare()
        spacing = _spacing(cfg.state_dir, cfg.watchdog_min_interval, now())
        if spacing > 0 and not wait:
            return None, "the last re-apply was %.0fs ago; checking in a later round" % (
                cfg.watchdog_min_interval - spacing)
        if spacing > 0:
            log("watchdog: last re-apply was recent; checking in %.0fs" % spacing)
            sleep(spacing)
        with state.locked(cfg.state_dir, cfg.lock_timeout):
            # From here on a new trigger starts its own run: this check may already be past it.
            os.close(pending)
            pending = None
            wanted = [c for c in wanted if c in active(cfg.state_dir)]  # a stop may have come first
            if not wanted:
                return None, "stopped meanwhile; nothing to watch"
            p = check(scope_of(wanted))
            if p.steps:
                state.write_atomic(os.path.join(cfg.state_dir, LAST), "%f\n" % now())
            return p, None
    finally:
        if pending is not None:
            os.close(pending)


def _spacing(state_dir, interval, t):
    try:
        with open(os.path.join(state_dir, LAST)) as fh:
            last = float(fh.read().strip())
    except (OSError, ValueError):
        return 0
    return max(0.0, min(interval, last + interval - t))  # a clock step never stretches the wait


def _try_lock(path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd
