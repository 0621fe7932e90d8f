"""The engine's hooks: the DNS part of the desired state, of the live read and of the plan.

On apply the nat and filter steps run after the mangle step: a DNAT'd query needs the tunnel
mark TUN_DIR gives it, so the marks are in place first. On stop they run first, before TUN_DIR
goes. The record keeps, under "dns", the chains we own per table, so stop removes exactly ours.
"""

from ..live import LiveState
from .. import tablestep
from . import RECORD_KEY, rules, servers
from .live import DnsLive, needed, read as read_tables


def tunnel_dns(cfg, look_up=True):
    """{tunnel: servers.TunnelDns}; look_up False: "auto" is not looked up (offline callers)."""
    return servers.resolve(cfg, look_up=look_up)


def read(tools, full, record, counters=False):
    """DnsLive of the tables that matter, or None."""
    return read_tables(tools, needed(_desired(full), record), counters=counters)


def nothing_live():
    """The DNS part of an empty kernel's live state (render)."""
    return DnsLive({t.table: LiveState() for t in rules.empty()})


def _desired(full):
    return getattr(full, "dns", None) or rules.empty()


def extend(p, full, current, scope, record, stop=False):
    """Add the nat and filter steps to plan `p`, and their chains to its record and intent."""
    rec = record.get(RECORD_KEY) or {}
    seen = getattr(current, "dns", None)
    after = {t: dict(c) for t, c in rec.items() if isinstance(c, dict)}
    intent = {t: dict(c) for t, c in after.items()}
    new_steps = []
    if seen is not None and seen.problem:
        p.warnings.append(seen.problem)
    elif seen is not None:
        for td in _desired(full):
            if td.table not in seen.tables:
                continue
            step, owned, warnings = tablestep.plan(td, seen.tables[td.table], scope, rec.get(td.table) or {}, stop)
            p.warnings += warnings
            after[td.table] = owned
            intent.setdefault(td.table, {}).update(owned)
            if step is not None:
                new_steps.append(step)
    if new_steps:
        if stop:
            p.steps[:0] = new_steps
        else:
            at = max([i + 1 for i, s in enumerate(p.steps) if s.tool == "iptables"] or [_before_cleanup(p)])
            p.steps[at:at] = new_steps
    after = {t: c for t, c in after.items() if c}
    intent = {t: c for t, c in intent.items() if c}
    if after:
        p.record[RECORD_KEY] = after
    if intent:
        p.intent[RECORD_KEY] = intent
    return p


def _before_cleanup(p):
    """Index of the first removal step (stale rules, routes, sets), or the end."""
    for i, s in enumerate(p.steps):
        if s.name.startswith("remove stale"):
            return i
    return len(p.steps)
