"""The device list of the Devices page: every client of the config, every device with a DHCP
lease and every named address, each with its name, MAC and where its traffic goes now.

Configured clients come from ops.clients.rows (the `client list` rows); the others get their
route from the same trace walk (ops.route), so a device inside a routed subnet shows that route.
"""

import ipaddress

from ..ops import clients, leases, names, route


def listing(cfg):
    shown = names.load(cfg)
    rows = clients.rows(cfg, shown)
    by_addr = {r["address"]: dict(r, mac="", lease=False, client=True) for r in rows}
    found = leases.read(cfg.leases_file)
    extra = [(ipaddress.IPv4Network(l.ip), l.mac) for l in found] + [(n, "") for n in cfg.names if n.prefixlen == 32]
    routes = None
    lists = [(clients.XRAY, cfg.xray.clients)] + [(t.name, t.clients) for t in cfg.tunnels]
    for net, mac in extra:
        key = names.text(net)
        if key in by_addr:
            if mac:
                by_addr[key].update(mac=mac, lease=True)
            continue
        routes = routes or route.Routes(cfg)
        v = routes.verdict(net)
        by_addr[key] = {
            "address": key, "name": shown.get(net) or "", "route": v.route, "table": v.table,
            "via": v.tunnel if v.route == "tunnel" else v.route,
            "paused": any(net.subnet_of(p) for p in cfg.paused_clients), "listed_in": [],
            "inside": ["%s of %s" % (names.text(e), n) for n, nets in lists for e in nets if net.subnet_of(e)],
            "mac": mac, "lease": bool(mac), "client": False}
    ordered = sorted(by_addr.values(), key=lambda r: ipaddress.IPv4Network(r["address"]))
    return {"devices": ordered, "vias": [clients.XRAY] + [t.name for t in cfg.tunnels]}
