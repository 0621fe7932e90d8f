"""The engine's hooks: the IPv6 part of the desired state, of the live read and of the plan.

The same desired state feeds apply, render, status and stop. On apply the IPv6 step runs first
and on stop last, so there is no moment when a client is routed and its IPv6 is not blocked.
The record keeps, under "ipv6", the chains we own and the MACs learnt, so stop removes exactly
ours and an idle device stays blocked.
"""

from ..live import LiveState
from ..ops import leases
from . import RECORD_KEY, block, live, macs


def build(cfg, record, arp=macs.ARP):
    """The desired IPv6 objects (block.V6Desired), or None with advanced.ipv6.mode ignore.
    Reads the neighbour table and the leases file only when some client is routed."""
    if cfg.ipv6_mode != "block":
        return None
    if not macs.any_routed(cfg):
        return block.desired(cfg, macs.Protection())
    known = macs.known(cfg.ipv6_macs, macs.read_neighbours(cfg.lan_interface, arp),
                       macs.from_leases(leases.read(cfg.leases_file)),
                       macs.remembered(record.get(RECORD_KEY) or {}))
    return block.desired(cfg, macs.protect(cfg, known))


def read(tools, cfg, record, counters=False):
    return live.read(tools, cfg, record, counters=counters)


def nothing_live():
    """The IPv6 part of an empty kernel's live state (render)."""
    return live.V6Live(LiveState())


def extend(p, full, current, scope, record, stop=False):
    """Add the IPv6 step to plan `p` and the IPv6 part to its record and intent."""
    rec6 = record.get(RECORD_KEY) or {}
    d6 = getattr(full, "ipv6", None)
    seen = getattr(current, "ipv6", None)
    chains = dict(rec6.get("chains") or {})
    intent = dict(chains)
    if seen is not None and seen.state is None:
        p.warnings.append(seen.problem)
    elif seen is not None:
        step, chains, warnings = block.plan(d6 or block.empty(), seen.state, scope, rec6, stop)
        p.warnings += warnings
        intent.update(chains)
        if step is not None:
            if stop:
                p.steps.append(step)
            else:
                p.steps.insert(0, step)
    memory = block.memory_of(d6, rec6)
    if chains or memory:
        p.record[RECORD_KEY] = {"chains": chains, "macs": memory}
    if intent or memory:
        p.intent[RECORD_KEY] = {"chains": intent, "macs": memory}
    return p

