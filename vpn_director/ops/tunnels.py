"""Tunnel edits: add one (a routing table), remove one, put them in order.

Tunnel order is the order of keys in `tunnel_director.tunnels`: it gives each tunnel its slot,
mark and ip rule priority, and for overlapping clients the first tunnel wins. Apply moves the
marks of reordered tunnels through temporary ones, so no packet is routed by a stale mark.
"""

from .. import config, tables
from . import OpsError
from .clients import check_tunnel, tunnels
from .txn import Unchanged


def _section(raw):
    """`tunnel_director.tunnels` of the file, created if missing."""
    td = raw.get("tunnel_director")
    if not isinstance(td, dict):
        td = raw["tunnel_director"] = {}
    if not isinstance(td.get("tunnels"), dict):
        td["tunnels"] = {}
    return td["tunnels"]


def _countries(codes):
    out = []
    for cc in codes:
        if not config.is_country(cc):
            raise OpsError("%r is not a two-letter country code" % (cc,))
        if cc.lower() not in out:
            out.append(cc.lower())
    return out


def add(table, exclude=()):
    def change(raw, cfg, out):
        if not table or not table.isprintable() or table.strip() != table:
            raise OpsError("%r is not a routing table name" % (table,))
        wanted = _countries(exclude)
        tuns = _section(raw)
        if table in tuns:
            have = [e.lower() for e in tuns[table].get("exclude") or [] if isinstance(e, str)]
            if not wanted or set(wanted) == set(have):
                raise Unchanged("tunnel %s already exists" % table)
            raise OpsError("tunnel %s already exists; change its exclusions with "
                           "`vpn-director exclude add CC --for %s`" % (table, table))
        if tables.resolve(table, tables.read_rt_tables(cfg.rt_tables)) is None:
            raise OpsError("table %r is not in %s (nor a number, nor 'main'): the tunnel's routing table must "
                           "exist first" % (table, cfg.rt_tables))
        tuns[table] = {"clients": [], "exclude": wanted}
        return "tunnel %s: added (slot %d%s)" % (table, len(tuns), ", excludes " + ",".join(wanted) if wanted else "")
    return change


def remove(table):
    def change(raw, cfg, out):
        check_tunnel(raw, table)
        tuns = _section(raw)
        clients = [c for c in tuns[table].get("clients") or []]
        del tuns[table]
        if clients:
            out.notes.append("its client(s) %s no longer go through %s" % (", ".join(map(str, clients)), table))
        return "tunnel %s: removed" % table
    return change


def order(names):
    def change(raw, cfg, out):
        tuns = tunnels(raw)
        for name in names:
            check_tunnel(raw, name)
        if len(set(names)) != len(names):
            raise OpsError("a tunnel is named twice: %s" % " ".join(names))
        new = list(names) + [n for n in tuns if n not in names]
        if new == list(tuns):
            raise Unchanged("the tunnels are already in this order")
        _section(raw)  # the same object as tuns
        raw["tunnel_director"]["tunnels"] = {n: tuns[n] for n in new}
        return "tunnel order: %s" % " → ".join(new)
    return change
