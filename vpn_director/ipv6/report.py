"""What `status` and `check --live` say about the IPv6 block.

`status` lists our ip6tables chains and jumps as OK / MISSING / MISMATCH like the mangle ones
(with "family": "ipv6"), and every routed client whose IPv6 cannot be blocked because no MAC is
known for it as UNPROTECTED. An unprotected client, like IPv6 being unavailable (SKIPPED), is
no difference between the kernel and the config, so it does not change the exit code; the text
ends with a line saying how many there are.
"""

from .. import tablestep
from ..objects import MISMATCH, chain_objects, jump_objects, obj
from ..model import components
from . import RECORD_KEY, block

UNPROTECTED, SKIPPED = "UNPROTECTED", "SKIPPED"
NOT_DRIFT = (UNPROTECTED, SKIPPED)
WARNING = "warning"  # lint.WARN
LISTED = 10  # check --live names this many unprotected clients, then counts the rest
HOW = "pin its MAC in advanced.ipv6.macs, or let it talk to the router so the neighbour table has it"


def objects(full, current, scope, record):
    """status objects for scope (all, xray or tunnel)."""
    d6 = getattr(full, "ipv6", None) or block.empty()
    seen = getattr(current, "ipv6", None)
    rec6 = record.get(RECORD_KEY) or {}
    comps = set(components(scope))
    out = []
    if seen is not None and seen.state is None:
        out.append(obj("ipv6", "block", SKIPPED, note=seen.problem))
    elif seen is not None:
        live = seen.state
        chains = [c for c in d6.chains if c.component in comps]
        objs = chain_objects(chains, live, family="ipv6", table=block.TABLE)
        _name_rules(objs, d6)
        out += objs
        td, recorded = block.table(d6), rec6.get("chains") or {}
        owned = tablestep.owned_chains(td, live, scope, recorded, [])
        ops, _ = tablestep.jump_ops(td, live, scope, owned, recorded)
        for parent in block.PARENTS:
            jumps = [j for j in d6.jumps.get(parent, []) if j.component in comps]
            out += jump_objects(parent, jumps, live, ops, owned, lambda j: "top of %s" % parent,
                                       family="ipv6")
        names = {c.name for c in chains}
        out += [obj("chain", n, MISMATCH, family="ipv6", note="left by an earlier config")
                for n in sorted(owned) if n in live.chains and n not in names]
    for comp, net in d6.protection.unprotected:
        if comp in comps:
            out.append(obj("client", _text(net), UNPROTECTED, family="ipv6", component=comp,
                                   note="%s client with no known MAC: its IPv6 is not blocked; %s" % (comp, HOW)))
    return out


def _name_rules(objs, d6):
    """Each MAC rule lists the routed addresses seen with that MAC and where the MAC came from."""
    by_comp = {block.CHAINS[c]: macs for c, macs in d6.protection.macs.items()}
    for o in objs:
        macs = by_comp.get(o["name"], {})
        for r in o.get("rules", []):
            parts = r["rule"].split()
            mac = parts[parts.index("--mac-source") + 1] if "--mac-source" in parts[:-1] else None
            if mac in macs:
                r["clients"] = ["%s (%s)" % (a, src) for a, src in macs[mac]]


def summary(rep):
    """Extra closing lines for status' text."""
    n = sum(1 for o in rep["objects"] if o["status"] == UNPROTECTED)
    if not n:
        return []
    return ["ipv6: %d routed client(s) with no known MAC, their IPv6 is not blocked" % n]


def findings(full, current):
    """check --live: [(level, message)]."""
    out = []
    seen = getattr(current, "ipv6", None)
    if seen is not None and seen.state is None:
        out.append((WARNING, seen.problem))
    d6 = getattr(full, "ipv6", None)
    unprotected = d6.protection.unprotected if d6 else []
    for comp, net in unprotected[:LISTED]:
        out.append((WARNING, "%s client %s: no MAC known, its IPv6 is not blocked (it may leave by the WAN); %s"
                    % (comp, _text(net), HOW)))
    if len(unprotected) > LISTED:
        out.append((WARNING, "and %d more routed client(s) with no MAC known (`status` lists them all)"
                    % (len(unprotected) - LISTED)))
    return out


def _text(net):
    return str(net.network_address) if net.prefixlen == 32 else str(net)
