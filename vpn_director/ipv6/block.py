"""The ip6tables filter objects that keep routed clients' IPv6 off the WAN, and their plan.

Per component one chain (VPD6_XRAY, VPD6_TUN) with one rule per MAC:
    -m mac --mac-source M -j REJECT --reject-with icmp6-adm-prohibited
The client is told "administratively prohibited" (EACCES: UDP at once, a TCP connect when its
SYN is retransmitted) rather than left to time out, so it falls back to IPv4. Each chain is
jumped at the top of
  * FORWARD, for packets from the LAN that leave by another interface (`-i LAN ! -o LAN`):
    traffic between LAN devices stays, even where br_netfilter hands bridged frames to ip6tables;
  * INPUT, for DNS to the router (udp and tcp 53): the router's resolver would otherwise send
    the client's queries out by the WAN.
Neighbour discovery, router advertisements and the router's other services are not touched.

One `-m mac` rule per MAC, not an ipset `hash:mac` set: that set type is missing from some
kernels ("set type not supported"), and the list is one rule per routed device.

The plan is one `ip6tables-restore --noflush` commit with an exact undo document, built like the
mangle step: chains declared and refilled, jumps at the top, stale chains deleted.
"""

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from .. import config as cfgmod
from .. import reconcile, render
from ..model import ChainSpec, JumpSpec, components
from . import CHAINS
from .macs import Protection, valid

TABLE = "filter"
PARENTS = ("FORWARD", "INPUT")
REJECT = "-j REJECT --reject-with icmp6-adm-prohibited"
# The only rule our chains hold: a recorded chain with anything else is not ours to delete.
OUR_RULE_RE = re.compile(r"^ -m mac --mac-source [0-9a-f]{2}(:[0-9a-f]{2}){5} %s$" % re.escape(REJECT))
STEP = "update ip6tables filter chains and jumps"


@dataclass
class V6Desired:
    chains: List[ChainSpec] = field(default_factory=list)
    jumps: Dict[str, List[JumpSpec]] = field(default_factory=dict)  # parent chain -> jumps into ours
    protection: Protection = field(default_factory=Protection)


def reject(mac):
    """The rule for one MAC, exactly as ip6tables-save prints it (both backends)."""
    if not valid(mac):
        raise ValueError("not a unicast MAC: %r" % (mac,))
    return "-m mac --mac-source %s %s" % (mac, REJECT)


def desired(cfg, protection):
    """A chain and its jumps per component that routes clients (empty while no MAC is known)."""
    lan = cfg.lan_interface
    if not cfgmod.IFNAME_RE.match(lan):
        raise ValueError("not an interface name: %r" % (lan,))
    out = V6Desired(jumps={p: [] for p in PARENTS}, protection=protection)
    for comp in protection.components:
        name = CHAINS[comp]
        out.chains.append(ChainSpec(name, tuple(reject(m) for m in protection.macs.get(comp, {})), comp))
        out.jumps["FORWARD"].append(JumpSpec(name, "-i %s ! -o %s -j %s" % (lan, lan, name), True, comp))
        for proto in ("udp", "tcp"):
            out.jumps["INPUT"].append(JumpSpec(
                name, "-i %s -p %s -m %s --dport 53 -j %s" % (lan, proto, proto, name), True, comp))
    return out


def owned_chains(live, scope, record6, warnings):
    """{chain: component} of ours in scope: the fixed names, and the recorded ones while they
    hold nothing but rules we write."""
    comps = set(components(scope))
    owned = {CHAINS[c]: c for c in comps}
    for n, c in (record6.get("chains") or {}).items():
        if c in comps and n not in owned:
            if n in live.chains and not reconcile.looks_like_ours(live.chains[n], OUR_RULE_RE):
                warnings.append("ip6tables chain %s is in the record but holds rules vpn-director does not "
                                "write; left alone" % n)
                continue
            owned[n] = c
    return owned


def jump_ops(d6, live, scope, owned, record6, stop=False):
    """(ops, undo) for FORWARD and INPUT: our jumps in scope at the top, unwanted ones out."""
    comps = set(components(scope))
    top = set(CHAINS.values()) | set(record6.get("chains") or {})
    ops, undo = [], []
    for parent in PARENTS:
        jumps = [] if stop else [j for j in d6.jumps.get(parent, []) if j.component in comps]
        o, u = reconcile.place_jumps(parent, live.chains.get(parent, []), jumps, owned, top=top)
        ops += o
        undo = u + undo  # undone in reverse: INPUT first, then FORWARD
    return ops, undo


def plan(d6, live, scope, record6, stop=False):
    """(step or None, {chain: component} owned afterwards, warnings) for the filter table `live`.

    An apply also refreshes the MACs in the live chains of the components outside its scope: a
    device seen since they were applied is blocked now, not at their next apply. Their jumps and
    their existence are left to their own apply and stop.
    """
    comps = set(components(scope))
    warnings = []
    owned = owned_chains(live, scope, record6, warnings)
    wanted = [] if stop else [c for c in d6.chains if c.component in comps]
    names = {c.name for c in wanted}
    stale = sorted(n for n in owned if n not in names and n in live.chains)
    refresh = [] if stop else [c for c in d6.chains if c.component not in comps and c.name in live.chains
                               and reconcile.looks_like_ours(live.chains[c.name], OUR_RULE_RE)]
    rebuild = [c for c in wanted + refresh if live.chains.get(c.name) != list(c.rules)]
    ops, undo = jump_ops(d6, live, scope, owned, record6, stop)

    after = {n: c for n, c in (record6.get("chains") or {}).items() if c not in comps and n in live.chains}
    after.update({c.name: c.component for c in wanted})
    step = None
    if rebuild or ops or stale:
        before = {c.name: live.chains.get(c.name) for c in rebuild}
        before.update({n: live.chains[n] for n in stale})
        step = reconcile.Step(STEP, "ip6tables",
                              render.chain_doc([(c.name, c.rules) for c in rebuild], ops, stale, TABLE),
                              reconcile.chain_undo(before, undo, TABLE))
        step.changes += ["ip6 chain %s: %s (%d rules)" % (c.name, "rebuilt" if c.name in live.chains else "created",
                                                           len(c.rules)) for c in rebuild]
        step.changes += ["ip6 jump: %s" % op for op in ops]
        step.changes += ["ip6 chain %s: removed" % n for n in stale]
    return step, after, warnings


def empty() -> V6Desired:
    return V6Desired(jumps={p: [] for p in PARENTS})


def memory_of(d6: Optional[V6Desired], record6):
    """What to remember: this run's learnt MACs, or the record's when nothing was looked up."""
    return dict(d6.protection.memory) if d6 is not None else dict(record6.get("macs") or {})
