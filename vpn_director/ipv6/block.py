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

The plan is one `ip6tables-restore --noflush` commit with an exact undo document, made by the
table step every extra table shares (tablestep): chains declared and refilled, jumps at the top,
stale chains deleted.
"""

from __future__ import annotations

import re

from ..record import Record, factory
from .. import config as cfgmod
from .. import tablestep
from ..model import ChainSpec, JumpSpec, TableDesired
from . import CHAINS
from .macs import Protection, valid
from ..patterns import compiled

TABLE = "filter"
PARENTS = ("FORWARD", "INPUT")
REJECT = "-j REJECT --reject-with icmp6-adm-prohibited"
# The only rule our chains hold: a recorded chain with anything else is not ours to delete.
OUR_RULE_RE = compiled(r"^ -m mac --mac-source [0-9a-f]{2}(:[0-9a-f]{2}){5} %s$" % re.escape(REJECT))
STEP = "update ip6tables filter chains and jumps"


class V6Desired(Record):
    chains: list[ChainSpec] = factory(list)
    jumps: dict[str, list[JumpSpec]] = factory(dict)  # parent chain -> jumps into ours
    protection: Protection = factory(Protection)


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


def table(d6):
    """The IPv6 filter objects as a table step (tablestep): ip6tables, the MACs of components
    outside an apply's scope refreshed too."""
    return TableDesired(TABLE, PARENTS, dict(CHAINS), OUR_RULE_RE, d6.chains, d6.jumps, kernel_tool="ip6tables",
                        title=STEP, change_word="ip6", warn_word="ip6tables", refresh_outside=True)


def plan(d6, live, scope, record6, stop=False):
    """(step or None, {chain: component} owned afterwards, warnings) for the filter table `live`.

    An apply also refreshes the MACs in the live chains of the components outside its scope: a
    device seen since they were applied is blocked now, not at their next apply. Their jumps and
    their existence are left to their own apply and stop.
    """
    return tablestep.plan(table(d6), live, scope, record6.get("chains") or {}, stop)


def empty() -> V6Desired:
    return V6Desired(jumps={p: [] for p in PARENTS})


def memory_of(d6: V6Desired | None, record6):
    """What to remember: this run's learnt MACs, or the record's when nothing was looked up."""
    return dict(d6.protection.memory) if d6 is not None else dict(record6.get("macs") or {})
