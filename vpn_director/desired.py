"""Compile a validated config into the desired state, exactly as the packet-flow document lays it out."""

import ipaddress

from . import config as cfgmod
from . import killswitch, sets
from .dns import rules as dnsrules
from .dns import servers as dnsservers
from .errors import DataError
from .model import (SHARED, TUNNEL, XRAY, ChainSpec, DesiredState, JumpSpec, Ownership, RouteSpec,
                    RuleSpec, SetSpec)

# `ip -N route show` prints type and scope as numbers: local = 2, host = 254.
XRAY_ROUTE_SHOWN = "2 default dev lo scope 254"
XRAY_ROUTE_ADD = "local default dev lo"  # what `ip route replace ... table N` is given for it
# Last rule of the Xray chain with xray.other_protocols "drop": what TPROXY did not take (ICMP, GRE...).
XRAY_DROP = "-j DROP"
# xray.dns "xray": an Xray client's port 53, to any address, goes to Xray (its DNS route).
XRAY_DNS = "-p %s -m %s --dport 53 -j TPROXY --on-port %d --on-ip 0.0.0.0 --tproxy-mark %s"
# With a tunnel resolver, the kill switch's LAN returns skip the router's own addresses: DNS to
# the router is then marked, and the nat DNAT that sends it to the tunnel's resolver keeps the mark.
LAN_RETURN, LAN_RETURN_DNS = "-d %s -j RETURN", "-d %s -m addrtype ! --dst-type LOCAL -j RETURN"
# The document's fixed private/special destinations, in its order.
FIXED_RETURNS = ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                 "169.254.0.0/16", "224.0.0.0/4", "255.255.255.255/32")


def resolve_host(name):
    """IPv4 addresses of a server hostname (A records only)."""
    import socket  # only configs with server names resolve
    try:
        infos = socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise DataError("xray.servers: cannot resolve %r: %s" % (name, e))
    return sorted({info[4][0] for info in infos})


def ownership(cfg):
    return Ownership(
        lan=cfg.lan_interface, xray_chain=cfg.xray.chain, td_chain=cfg.td_chain,
        xray_pref=cfg.xray.rule_pref, xray_mask=cfg.xray.fwmark_mask,
        td_prefs=(cfg.td_pref_base, cfg.td_pref_base + max(cfg.td_max_slots, 1) - 1),
        td_mask=cfg.td_mark_mask, route_table=cfg.xray.route_table,
        xray_sets=(cfg.xray.clients_ipset, cfg.xray.servers_ipset), guard_base=cfg.guard_pref_base)


def build(cfg, resolver=resolve_host, country_loader=sets.load_country, lan_nets=(), stored_servers=(),
          tunnel_dns=None):
    """Config -> DesiredState. Reads country zone files and resolves server names; no kernel access.

    `country_loader(path)` returns a country list's aggregated members and its listed entry count.
    `lan_nets`: the subnets connected to the LAN interface (killswitch.lan_subnets), which
    guarded tunnels' clients reach without a mark. `stored_servers`: the IPv4 addresses of the
    servers in the Xray server store (xray.store.addresses), bypassed like `xray.servers`.
    `tunnel_dns`: {tunnel: dns.servers.TunnelDns}, each tunnel's resolver (engine looks "auto"
    up); by default only the resolvers the config lists.
    """
    state = DesiredState(ownership=ownership(cfg))
    if tunnel_dns is None:
        tunnel_dns = dnsservers.resolve(cfg, look_up=False)
    xclients, tunnels = cfgmod.effective(cfg)
    needed = {}  # set name -> component that first needs it
    if xclients:
        _xray(cfg, state, xclients, resolver, needed, stored_servers)
    if any(clients for _, clients in tunnels):
        _tunnels(cfg, state, tunnels, needed, lan_nets, dnsrules.dnat_active(cfg, tunnel_dns))
    state.dns = dnsrules.build(cfg, tunnel_dns)
    state.tunnel_dns = tunnel_dns
    for name, comp in needed.items():
        if cfgmod.is_country(name):
            members, listed = country_loader(sets.zone_path(cfg.data_dir, name))
            state.sets.append(SetSpec(name, members, SHARED, country=True, listed=listed))
        else:
            state.external_sets.append(name)
    return state


def _xray(cfg, state, clients, resolver, needed, stored_servers):
    x = cfg.xray
    paused = cfgmod.paused_inside(cfg, clients)
    state.sets.append(SetSpec(
        x.clients_ipset,
        frozenset([sets.member(n) for n in clients] + [sets.member(n, nomatch=True) for n in paused]),
        XRAY))
    servers = set()
    for s in x.servers:
        try:
            servers.add(sets.member(ipaddress.IPv4Network(s)))
        except ValueError:
            servers.update(resolver(s))
    servers.update(sets.member(n) for n in x.exclude_ips)
    servers.update(sets.member(ipaddress.IPv4Network(a)) for a in stored_servers)
    state.sets.append(SetSpec(x.servers_ipset, frozenset(servers), XRAY))

    mark = "%#x/%#x" % (x.fwmark, x.fwmark_mask)
    rules = ["-m set ! --match-set %s src -j RETURN" % x.clients_ipset]
    if x.dns == "xray":  # DNS to Xray's DNS path, before the private RETURNs would send it to the router
        rules += [XRAY_DNS % (proto, proto, x.tproxy_port, mark) for proto in ("udp", "tcp")]
    rules.append("-m set --match-set %s dst -j RETURN" % x.servers_ipset)
    rules += ["-d %s -j RETURN" % d for d in FIXED_RETURNS]
    for name in x.exclude_sets:
        rules.append("-m set --match-set %s dst -j RETURN" % name)
        needed.setdefault(name, XRAY)
    for proto in ("tcp", "udp"):
        rules.append("-p %s -j TPROXY --on-port %d --on-ip 0.0.0.0 --tproxy-mark %s"
                     % (proto, x.tproxy_port, mark))
    if x.other_protocols == "drop":  # TPROXY takes TCP and UDP only: the rest would go direct
        rules.append(XRAY_DROP)
    state.chains.append(ChainSpec(x.chain, tuple(rules), XRAY))
    state.jumps.append(JumpSpec(x.chain, "-i %s -j %s" % (cfg.lan_interface, x.chain), True, XRAY))
    state.rules.append(RuleSpec(x.rule_pref, x.fwmark, x.fwmark_mask, x.route_table, XRAY))
    state.routes.append(RouteSpec(x.route_table, XRAY_ROUTE_ADD, XRAY_ROUTE_SHOWN, XRAY))


def _tunnels(cfg, state, tunnels, needed, lan_nets, dns_marks=False):
    mask = cfg.td_mark_mask
    guard = "-m mark --mark 0x0/%#x" % mask
    rules = []
    all_clients = [n for _, clients in tunnels for n in clients]
    # A paused address inside a tunnel's CIDR gets a hole first, so it goes direct.
    for p in cfgmod.paused_inside(cfg, all_clients):
        rules.append("-s %s -j RETURN" % p)
    # With a kill switch, a marked packet whose tunnel is down is refused: the router's own
    # LAN subnets are left unmarked, so clients keep reaching them meanwhile.
    if any(killswitch.guard(cfg, tun) for tun, clients in tunnels if clients):
        rules += [(LAN_RETURN_DNS if dns_marks else LAN_RETURN) % n for n in lan_nets]
    for tun, clients in tunnels:
        if not clients:
            continue
        mark = cfg.td_mark(tun.slot)
        for client in clients:
            for name in tun.exclude:
                rules.append("-s %s -m set --match-set %s dst -j RETURN" % (client, name))
                needed.setdefault(name, TUNNEL)
            rules.append("-s %s %s -j MARK --set-xmark %#x/%#x" % (client, guard, mark, mask))
        state.rules.append(RuleSpec(cfg.td_pref_base + tun.slot - 1, mark, mask, tun.table, TUNNEL))
        g = killswitch.guard(cfg, tun)
        if g:
            state.rules.append(g)
    state.chains.append(ChainSpec(cfg.td_chain, tuple(rules), TUNNEL))
    state.jumps.append(JumpSpec(cfg.td_chain, "-i %s %s -j %s" % (cfg.lan_interface, guard, cfg.td_chain),
                                False, TUNNEL))
