"""The device list of the front ends (the web UI's Devices page, the bot's /devices): every client
of the config, every device with a DHCP lease and every named single address, each with its
name, MAC and where its traffic goes now.

Configured clients are `client list`'s rows (clients.rows); every other device gets its route
from the same trace walk (route.Routes), so a device inside a routed subnet shows that route and
one inside a paused entry shows it paused. What a "route via..." of one device does is
clients.route_device.
"""

import ipaddress

from . import clients, route
from . import leases as leasefile, names as namefile


def vias(cfg):
    """Where a device can be routed, besides direct: xray, then every tunnel in config order."""
    return [clients.XRAY] + [t.name for t in cfg.tunnels]


def rows(cfg, leases=None, names=None):
    """[{address, name, mac, route, via, table, paused, listed_in, inside, client, lease}] sorted by
    address. `leases` (the DHCP leases) and `names` (a names.Names) are read when not given."""
    leases = leasefile.read(cfg.leases_file) if leases is None else leases
    names = namefile.Names(cfg.names, leases) if names is None else names
    by_addr = {r["address"]: dict(r, mac="", lease=False, client=True) for r in clients.rows(cfg, names)}
    others = [(ipaddress.IPv4Network(lease.ip), lease.mac) for lease in leases]
    others += [(net, "") for net in cfg.names if net.prefixlen == 32]
    lists = [(clients.XRAY, cfg.xray.clients)] + [(t.name, t.clients) for t in cfg.tunnels]
    routes = None
    for net, mac in others:
        key = namefile.text(net)
        if key in by_addr:
            if mac and not by_addr[key]["mac"]:
                by_addr[key].update(mac=mac, lease=True)
            continue
        routes = routes or route.Routes(cfg)
        v = routes.verdict(net)
        by_addr[key] = {
            "address": key, "name": names.get(net) or "", "route": v.route, "table": v.table,
            "via": v.tunnel if v.route == "tunnel" else v.route,
            "paused": any(net.subnet_of(p) for p in cfg.paused_clients), "listed_in": [],
            "inside": ["%s of %s" % (namefile.text(e), n) for n, nets in lists for e in nets if net.subnet_of(e)],
            "mac": mac, "lease": bool(mac), "client": False}
    return sorted(by_addr.values(), key=lambda r: ipaddress.IPv4Network(r["address"]))
