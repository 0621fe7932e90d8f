"""Client edits (add, move, pause, resume, remove) and the client list.

Each edit is a function of the raw config (see txn): it works on the entries as written, finds
a client by its address whatever the spelling ("192.168.50.10" and "192.168.50.10/32" are one
client), and leaves every other entry where it is. A "list" is `xray.clients` or one tunnel's
`clients`; a client in no list goes direct.
"""

from .. import config
from . import OpsError, names, route
from .txn import Unchanged

XRAY, DIRECT = "xray", "direct"


def entry_net(entry):
    """The network a config entry names, or None if it names none."""
    try:
        return config.parse_net(entry)
    except (ValueError, TypeError):
        return None


def tunnels(raw):
    """The raw `tunnel_director.tunnels` object (in file order), or {}."""
    td = raw.get("tunnel_director")
    tuns = td.get("tunnels") if isinstance(td, dict) else None
    return tuns if isinstance(tuns, dict) else {}


def lists(raw):
    """[(list name, entries)] in file order: xray, then each tunnel."""
    out = []
    xr = raw.get("xray")
    if isinstance(xr, dict) and isinstance(xr.get("clients"), list):
        out.append((XRAY, xr["clients"]))
    for name, body in tunnels(raw).items():
        if isinstance(body, dict) and isinstance(body.get("clients"), list):
            out.append((name, body["clients"]))
    return out


def where(raw, net):
    """Names of the lists that hold `net` itself."""
    return [name for name, entries in lists(raw) if any(entry_net(e) == net for e in entries)]


def check_via(raw, via, direct_ok=False):
    if via == XRAY or (via == DIRECT and direct_ok):
        return
    if via == DIRECT:
        raise OpsError("direct is not a list: a client in no list goes direct (`client move ADDR --via direct`)")
    check_tunnel(raw, via)


def check_tunnel(raw, name):
    tuns = list(tunnels(raw))
    if name not in tuns:
        raise OpsError("unknown tunnel %r: %s (add one with `vpn-director tunnel add %s`)"
                       % (name, "the tunnels are " + ", ".join(tuns) if tuns else "there are no tunnels", name))


def _target(raw, via):
    """The entry list of `via`, created in the file if it is missing."""
    if via == XRAY:
        section = raw.get("xray")
        if not isinstance(section, dict):
            section = raw["xray"] = {}
    else:
        section = tunnels(raw)[via]
    if not isinstance(section.get("clients"), list):
        section["clients"] = []
    return section["clients"]


def _drop(entries, net):
    entries[:] = [e for e in entries if entry_net(e) != net]


def _paused(raw):
    if not isinstance(raw.get("paused_clients"), list):
        raw["paused_clients"] = []
    return raw["paused_clients"]


def _resolve(token, cfg, out):
    net, note = names.resolve(token, cfg)
    if note:
        out.notes.append(note)
    out.subject = net
    return net, names.load(cfg).label(names.text(net))


def add(token, via, name=None):
    def change(raw, cfg, out):
        net, label = _resolve(token, cfg, out)
        return _add(raw, out, net, label, via, name)
    return change


def _add(raw, out, net, label, via, name=None):
    check_via(raw, via)
    found = where(raw, net)
    if via in found:
        raise Unchanged("%s is already routed via %s" % (label, via))
    if found:
        raise OpsError("%s is already listed in %s; to change its route: vpn-director client move %s --via %s"
                       % (label, " and ".join(found), names.text(net), via))
    _target(raw, via).append(names.text(net))
    if name is not None:
        if not isinstance(raw.get("names"), dict):
            raw["names"] = {}
        raw["names"][names.text(net)] = name
        label = "%s (%s)" % (names.text(net), name)
    if any(entry_net(p) == net for p in _paused(raw)):
        out.notes.append("%s is paused: `vpn-director client resume %s` routes it" % (label, names.text(net)))
    return "client %s: added to %s" % (label, via)


def move(token, via):
    def change(raw, cfg, out):
        net, label = _resolve(token, cfg, out)
        return _move(raw, net, label, via)
    return change


def _move(raw, net, label, via):
    check_via(raw, via, direct_ok=True)
    found = where(raw, net)
    if found == [via] or (via == DIRECT and not found):
        raise Unchanged("%s already goes %s" % (label, DIRECT if via == DIRECT else "via " + via))
    for list_name, entries in lists(raw):
        if list_name != via:
            _drop(entries, net)
    if via != DIRECT and via not in found:
        _target(raw, via).append(names.text(net))
    return "client %s: %s → %s" % (label, "+".join(found) or DIRECT, via)


def pause(token):
    def change(raw, cfg, out):
        net, label = _resolve(token, cfg, out)
        paused = _paused(raw)
        if any(entry_net(p) == net for p in paused):
            raise Unchanged("%s is already paused" % label)
        if not any(entry_net(e) and entry_net(e).overlaps(net) for _, entries in lists(raw) for e in entries):
            raise OpsError("%s is in no client list: it goes direct already" % label)
        paused.append(names.text(net))
        return "client %s: paused" % label
    return change


def resume(token):
    def change(raw, cfg, out):
        net, label = _resolve(token, cfg, out)
        paused = _paused(raw)
        if not any(entry_net(p) == net for p in paused):
            wider = [p for p in paused if entry_net(p) and net.subnet_of(entry_net(p))]
            if wider:
                raise OpsError("%s is inside the paused %s: resume that" % (label, wider[0]))
            raise Unchanged("%s is not paused" % label)
        _drop(paused, net)
        return "client %s: resumed" % label
    return change


def remove(token):
    def change(raw, cfg, out):
        net, label = _resolve(token, cfg, out)
        found = where(raw, net)
        was_paused = any(entry_net(p) == net for p in raw.get("paused_clients") or [])
        if not found and not was_paused:
            inside = _around(raw, net)
            raise OpsError("%s is not a client%s" % (label, "; it is inside %s: `vpn-director client pause %s` "
                                                             "takes it out" % (inside[0], names.text(net))
                                                     if inside else ""))
        for _, entries in lists(raw):
            _drop(entries, net)
        if was_paused:
            _drop(_paused(raw), net)
        return "client %s: removed (was %s)" % (label, "+".join(found) or "paused")
    return change


def _around(raw, net):
    """"ENTRY of LIST" for every list entry that holds `net` without being it (a routed subnet)."""
    return ["%s of %s" % (e, n) for n, entries in lists(raw) for e in entries
            if entry_net(e) and net != entry_net(e) and net.subnet_of(entry_net(e))]


def route_device(token, via):
    """"Route this device via VIA" (xray, a tunnel or direct) as the web UI and the bot offer it:
    a client in a list moves (client move), a device in no list is added to VIA (client add), and
    direct for a device that a routed subnet takes in also pauses it (client pause), so that its
    traffic really goes direct."""
    def change(raw, cfg, out):
        net, label = _resolve(token, cfg, out)
        check_via(raw, via, direct_ok=True)
        found, around = where(raw, net), _around(raw, net)
        paused = any(entry_net(p) == net for p in raw.get("paused_clients") or [])
        if via != DIRECT:
            summary = _move(raw, net, label, via) if found else _add(raw, out, net, label, via)
            if paused and found:
                out.notes.append("%s is paused: `vpn-director client resume %s` routes it" % (label, names.text(net)))
            return summary
        if not around or paused:
            return _move(raw, net, label, via)  # "already goes direct" unless it is listed
        summary = _move(raw, net, label, via) if found else "client %s:" % label
        _paused(raw).append(names.text(net))
        return "%s paused (it is inside %s)" % (summary + "," if found else summary, around[0])
    return change


def rows(cfg, shown_names=None):
    """The client list: one row per entry of any list or of paused_clients, in file order."""
    shown_names = shown_names or names.load(cfg)
    routes = route.Routes(cfg)
    entries = list(cfg.xray.clients) + [n for t in cfg.tunnels for n in t.clients] + list(cfg.paused_clients)
    by_list = [(XRAY, cfg.xray.clients)] + [(t.name, t.clients) for t in cfg.tunnels]
    out = []
    for net in dict.fromkeys(entries):
        v = routes.verdict(net)
        listed = [n for n, nets in by_list if net in nets]
        out.append({
            "address": names.text(net), "name": shown_names.get(net) or "",
            "route": v.route, "table": v.table, "via": v.tunnel if v.route == "tunnel" else v.route,
            "paused": any(net.subnet_of(p) for p in cfg.paused_clients),
            "listed_in": listed,
            "inside": [] if listed else ["%s of %s" % (names.text(e), n) for n, nets in by_list for e in nets
                                         if e != net and net.subnet_of(e)],
        })
    return out
