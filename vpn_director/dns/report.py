"""What `status` and `check` say about DNS.

`status` lists our nat and filter chains and jumps as OK / MISSING / MISMATCH like the mangle
ones (with "table": "nat" or "filter"), and one line per routed group of clients saying where
their DNS goes. `check` warns about tunnel clients whose DNS still goes to the router's resolver
because no resolver is known for their tunnel.
"""

from .. import config as cfgmod
from ..model import components
from .. import tablestep
from ..objects import MISMATCH, chain_objects, jump_objects, obj
from . import RECORD_KEY, rules, servers

WARNING = "warning"  # lint.WARN


def objects(full, current, scope, record):
    """status objects for scope (all, xray or tunnel)."""
    seen = getattr(current, "dns", None)
    rec = record.get(RECORD_KEY) or {}
    comps = set(components(scope))
    out = []
    if seen is not None and seen.problem:
        return [obj("dns", "tables", MISMATCH, note=seen.problem)]
    if seen is None:
        return out
    for td in getattr(full, "dns", None) or rules.empty():
        live = seen.tables.get(td.table)
        if live is None:
            continue
        recorded = rec.get(td.table) or {}
        chains = [c for c in td.chains if c.component in comps]
        out += chain_objects(chains, live, table=td.table)
        owned = tablestep.owned_chains(td, live, scope, recorded, [])
        ops, _ = tablestep.jump_ops(td, live, scope, owned, recorded)
        for parent in td.parents:
            jumps = [j for j in td.jumps.get(parent, []) if j.component in comps]
            out += jump_objects(parent, jumps, live, ops, owned, lambda j, p=parent: "top of %s" % p,
                                       table=td.table)
        names = {c.name for c in chains}
        out += [obj("chain", n, MISMATCH, table=td.table, note="left by an earlier config")
                for n in sorted(owned) if n in live.chains and n not in names]
    return out


def paths(cfg, tunnel_dns, scope="all"):
    """Where each routed group's DNS goes: [{"who", "dns", "note"}], for status and check."""
    xclients, tunnels = cfgmod.effective(cfg)
    comps = set(components(scope))
    out = []
    if xclients and "xray" in comps:
        if cfg.xray.dns == "xray":
            out.append({"who": "Xray clients", "dns": "Xray (xray.dns: xray)",
                        "note": "port 53 TPROXY'd to Xray; Xray asks %s through the proxy"
                                % ", ".join(cfg.xray.dns_servers)})
        else:
            out.append({"who": "Xray clients", "dns": "the router's resolver (xray.dns: router)",
                        "note": "the router re-sends their queries from its WAN address"})
    if "tunnel" in comps:
        hits = rules.targets(cfg, tunnel_dns)
        for t, clients in tunnels:
            if not clients or t.table == cfgmod.MAIN_TABLE:
                continue
            d = (tunnel_dns or {}).get(t.name)
            if t.name in hits:
                src = "the config" if d.source == servers.CONFIG else d.source
                out.append({"who": "tunnel %s clients" % t.name, "dns": "%s through %s" % (hits[t.name], t.name),
                            "note": "DNS to the router DNAT'd; resolver from %s" % src})
            else:
                why = "dns: router" if d is None or d.source == servers.ROUTER else (d.problem or "none known")
                out.append({"who": "tunnel %s clients" % t.name, "dns": "the router's resolver",
                            "note": "no tunnel resolver (%s): the router re-sends their queries by the WAN" % why})
    if cfg.block_dot:
        out.append({"who": "routed clients", "dns": "DNS over TLS (TCP/853) rejected", "note": "advanced.dns.block_dot"})
    return out


def format_paths(items):
    return ["DNS      %s → %s  [%s]" % (i["who"], i["dns"], i["note"]) for i in items]


def findings(cfg, tunnel_dns):
    """check: [(level, message)] for tunnel clients whose DNS leaves by the router's resolver."""
    out = []
    hits = rules.targets(cfg, tunnel_dns)
    for t, clients in cfgmod.effective(cfg)[1]:
        if not clients or t.table == cfgmod.MAIN_TABLE or t.name in hits:
            continue
        d = (tunnel_dns or {}).get(t.name)
        if d is not None and d.source == servers.ROUTER:
            continue  # asked for in so many words
        out.append((WARNING, "tunnel %s: no DNS server known for its clients (%s): they ask the router's resolver, "
                             "which sends their lookups out by the WAN; set tunnel_director.tunnels.%s.dns to "
                             "the tunnel's resolver, e.g. [\"10.64.0.1\"] (or \"router\" to keep it)"
                    % (t.name, d.problem if d is not None and d.problem else "dns: auto", t.name)))
    return out
