"""The operations behind the CLI: apply, stop, render, each over one desired state."""

import os
import time

from . import desired, live, reconcile, state
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
    full = full or desired.build(cfg)
    if dry_run:
        current = live.read(tools, cfg.xray.route_table)
        reconcile.check_external(full.scoped(scope), current)
        return reconcile.plan(full, current, scope, state.load_record(cfg.state_dir))
    state.boot_wait(cfg.boot_min_time, cfg.boot_wait_delay, log)
    with state.locked(cfg.state_dir, cfg.lock_timeout):
        return _run(cfg, tools, full, scope, stop=False)


def stop(cfg, tools, scope="all"):
    full = desired.build(cfg, resolver=lambda name: [], zone_reader=lambda path: [])
    with state.locked(cfg.state_dir, cfg.lock_timeout):
        return _run(cfg, tools, full, scope, stop=True)


def _run(cfg, tools, full, scope, stop):
    started = time.monotonic()
    current = live.read(tools, cfg.xray.route_table)
    record = state.load_record(cfg.state_dir)
    if not stop:
        reconcile.check_external(full.scoped(scope), current)
    p = reconcile.plan(full, current, scope, record, stop=stop)
    reconcile.execute(p, tools)
    batches = render_batches(full) if not stop else {}
    state.save_record(cfg.state_dir, p.record, state.digest(*[batches.get(k, "") for k in sorted(batches)]))
    p.elapsed = time.monotonic() - started
    return p


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

