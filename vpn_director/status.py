"""status: every owned object as OK / MISSING / MISMATCH, with per-rule packet counters."""

from . import killswitch, listcache, live, owned, reconcile
from .dns import report as dnsreport
from .ipv6 import report as v6report
from .model import XRAY, components, rule_words
from .objects import MISMATCH, MISSING, OK, chain_objects, jump_objects, obj as _obj



def report(full, current, scope, record, data_dir=None):
    """Return {"objects": [...], "ok": bool}; `current` must be read with counters.

    With `data_dir`, country sets also show where and when their cached list came from."""
    d = full.scoped("all" if scope == "ipset" else scope)
    comps = set(components("all" if scope == "ipset" else scope))
    own = full.ownership
    objs = []

    for s in d.sets:
        cur = current.sets.get(s.name)
        if cur is None:
            o = _obj("set", s.name, MISSING, entries=len(s.members))
        else:
            extra, lacking = len(cur.members - s.members), len(s.members - cur.members)
            o = _obj("set", s.name, OK if not extra and not lacking else MISMATCH,
                     entries=len(cur.members), expected=len(s.members), extra=extra, missing=lacking)
        if s.country:  # entries in the cached list, and set members after aggregation
            o.update(country=True, listed=s.listed, aggregated=len(s.members))
            if data_dir:
                o.update(listcache.describe(data_dir, s.name))
        objs.append(o)
    for n in d.external_sets:
        objs.append(_obj("set", n, OK if n in current.sets else MISSING, external=True))
    if scope == "ipset":
        return _result(objs)

    objs += chain_objects(d.chains, current)

    names = {XRAY: own.xray_chain, "tunnel": own.td_chain}
    our_chains = {names[c]: c for c in comps}
    ops, _ = reconcile.jump_ops(d, current, our_chains, own)
    objs += jump_objects("PREROUTING", d.jumps, current, ops, our_chains,
                         lambda j: "1" if j.first else "after firmware mark rules and the Xray jump")

    ours = owned.rules(full, current, record)
    live_rules = [(p, t) for p, t in current.rules if ours.get((p, t)) in comps]
    for r in d.rules:
        found = (r.pref, r.text) in live_rules
        objs.append(_obj("ip rule", str(r.pref), OK if found else MISSING, rule=r.text))
    wanted = {(r.pref, r.text) for r in d.rules}
    for p, t in live_rules:
        if (p, t) not in wanted:
            objs.append(_obj("ip rule", str(p), MISMATCH, rule=t, note="not in config"))
    # Somebody else's rule that sees our marks first decides where our clients go.
    for p, t, mark in owned.foreign_ahead(d, current, ours):
        objs.append(_obj("ip rule", str(p), MISMATCH, rule=t,
                         note="not vpn-director's, but routes mark %#x ahead of our rule" % mark))
    for r in d.routes:
        found = r.shown in current.routes.get(r.table, [])
        objs.append(_obj("route", "table %d" % r.table, OK if found else MISSING, route=r.add))
    adds, dels = reconcile.routes_diff(d, current, comps, owned.routes(full, current, record))
    for table, spec in dels:
        objs.append(_obj("route", "table %d" % table, MISMATCH, route=spec, note="not in config"))
    for n, c in record.get("chains", {}).items():
        if c in comps and n in current.chains and n not in {c_.name for c_ in d.chains}:
            objs.append(_obj("chain", n, MISMATCH, note="left by an earlier config"))
    objs += v6report.objects(full, current, scope, record)
    objs += dnsreport.objects(full, current, scope, record)
    return _result(objs)


def _result(objs):
    # an unprotected client is reported, but it is no difference between the kernel and the config
    return {"ok": all(o["status"] == OK or o["status"] in v6report.NOT_DRIFT for o in objs), "objects": objs}


def format_text(rep):
    lines = []
    for o in rep["objects"]:
        head = "%-8s %-8s %s" % (o["status"], o["kind"], o["name"])
        if o.get("table") and o.get("family") != "ipv6":  # the DNS objects' nat and filter tables
            head += "  (%s)" % o["table"]
        if o["kind"] == "set" and "entries" in o:
            head += "  (%d entries%s)" % (o["entries"], "" if o["status"] != MISMATCH else
                                          ", +%d extra, %d missing" % (o["extra"], o["missing"]))
        if o.get("country"):
            head += "  list: %s entries, %d after aggregation" % (o["listed"], o["aggregated"])
            if o.get("source"):
                head += ", from %s at %s" % (o["source"], o["fetched"])
        if o.get("position"):
            head += "  at position %d, %d packets" % (o["position"], o.get("packets", 0))
        if o.get("rule") and o["kind"] in ("ip rule", "jump"):
            head += "  " + rule_words(o["rule"])
        if o.get("route"):
            head += "  " + o["route"]
        if o.get("note"):
            head += "  [%s]" % o["note"]
        lines.append(head)
        for r in o.get("rules", []):
            lines.append("    %-8s %8s pkts  %s" % (r["status"], r.get("packets", "-"), r["rule"]))
    if not rep["objects"]:
        lines.append("nothing configured for this scope")
    lines += killswitch.format_states(rep.get("tunnels", []))
    lines += dnsreport.format_paths(rep.get("dns", []))
    lines += v6report.summary(rep)
    lines.append("status: %s" % ("all objects match the config" if rep["ok"] else "live state differs from the config"))
    return "\n".join(lines)


def read(tools, cfg):
    return live.read(tools, cfg.xray.route_table, counters=True)
