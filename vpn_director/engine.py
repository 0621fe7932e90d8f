"""The operations behind the CLI: apply, stop, render, each over one desired state."""

import os
import time

from . import boot, config, desired, live, reconcile, sets, state, watchdog
from .live import LiveState


def render_batches(full):
    """The three batches that build `full` on an empty kernel: {tool: text}."""
    p = reconcile.plan(full, LiveState(), "all", {})
    out = {"ipset": "", "iptables": "", "ip": ""}
    for step in p.steps:
        out[step.tool] += step.batch
    return out


def apply(cfg, tools, scope="all", dry_run=False, log=lambda msg: None, full=None):
    """Make the kernel match the config for `scope`; return the executed (or dry-run) plan."""
    if dry_run:
        full = full or desired.build(cfg)
        current = live.read(tools, cfg.xray.route_table)
        reconcile.check_external(full.scoped(scope), current)
        return reconcile.plan(full, current, scope, state.load_record(cfg.state_dir))
    boot.prepare(cfg, log)
    with state.locked(cfg.state_dir, cfg.lock_timeout):
        return apply_locked(cfg if full else reread(cfg), tools, scope, full)


def reread(cfg):
    """The config as its file says once the lock is held. An edit (the operations layer) may have
    changed the file while this run waited for the lock; applying what was read before would undo
    that edit in the kernel until the next run."""
    return config.load(cfg.path) if os.path.isfile(cfg.path) else cfg


def apply_locked(cfg, tools, scope="all", full=None):
    """apply for a caller that already holds the run lock (the operations layer): a second flock
    on the same lock file from this process would wait for itself. No boot wait."""
    watchdog.mark(cfg.state_dir, scope, started=True)  # even if this run fails, the watchdog retries
    # built after the boot wait: server names resolve once the WAN is up
    return _run(cfg, tools, full or desired.build(cfg), scope, stop=False)


def watch(cfg, tools, scope="all", log=lambda msg: None):
    """apply --if-changed: (plan, None) after a check, or (None, why nothing was checked)."""
    def check(s):
        current = reread(cfg)
        return _run(current, tools, desired.build(current), s, stop=False, only_if_changed=True)
    return watchdog.run(cfg, check, log, scope, prepare=lambda: boot.prepare(cfg, log))


def stop(cfg, tools, scope="all"):
    full = desired.build(cfg, resolver=lambda name: [], country_loader=sets.no_country)
    with state.locked(cfg.state_dir, cfg.lock_timeout):
        watchdog.mark(cfg.state_dir, scope, started=False)
        return _run(cfg, tools, full, scope, stop=True)


def _run(cfg, tools, full, scope, stop, only_if_changed=False):
    started = time.monotonic()
    current = live.read(tools, cfg.xray.route_table)
    record = state.load_record(cfg.state_dir)
    if not stop:
        reconcile.check_external(full.scoped(scope), current)
    p = reconcile.plan(full, current, scope, record, stop=stop)
    if only_if_changed and not p.steps:
        p.elapsed = time.monotonic() - started
        return p
    reconcile.execute(p, tools)
    state.save_record(cfg.state_dir, p.record, "" if stop else _fingerprint(full))
    p.elapsed = time.monotonic() - started
    return p


def _fingerprint(full):
    """Hash of what apply built: rules in full, sets by name and size. Only a note for people and
    scripts (the shell tool kept one too); every run still compares against the live state."""
    parts = [c.name + "\n" + "\n".join(c.rules) for c in full.chains]
    parts += [j.spec for j in full.jumps] + ["%d %s" % (r.pref, r.text) for r in full.rules]
    parts += ["%d %s" % (r.table, r.add) for r in full.routes]
    parts += ["%s %d" % (s.name, len(s.members)) for s in full.sets] + list(full.external_sets)
    return state.digest(*parts)


def bridge_warning():
    """The kernel gotcha from SPEC: bridged packets lose their TPROXY socket when this is 1."""
    try:
        with open("/proc/sys/net/bridge/bridge-nf-call-iptables") as fh:
            if fh.read().strip() == "1":
                return ("net.bridge.bridge-nf-call-iptables=1: TPROXY'd packets routed from the bridge "
                        "may never reach Xray; set it to 0")
    except OSError:
        pass
    return None


def write_out(directory, batches):
    """render --out DIR: the three batch files, written atomically."""
    os.makedirs(directory, exist_ok=True)
    names = {"ipset": "ipset.restore", "iptables": "iptables.mangle", "ip": "ip.batch"}
    for tool, fname in names.items():
        state.write_atomic(os.path.join(directory, fname), batches[tool] or _empty(tool), mode=0o644)
    return [os.path.join(directory, n) for n in names.values()]


def _empty(tool):
    # iptables-restore needs a table section even with nothing in it; the others accept nothing.
    return "*mangle\nCOMMIT\n" if tool == "iptables" else ""

