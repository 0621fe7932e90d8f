"""Configs that are valid but do not do what the owner probably thinks: warnings and errors for `check`."""

import fcntl
import ipaddress
import os
import re
import socket
import struct
from bisect import bisect_left, bisect_right

from . import config as cfgmod
from . import owned
from . import tools
from .xray import store as xray_store
from .desired import FIXED_RETURNS, XRAY_ROUTE_SHOWN
from .ipv6 import report as v6report

WARN, ERROR = "warning", "error"
PRIVATE = [ipaddress.IPv4Network(n) for n in FIXED_RETURNS]
MERLIN_PREFS = (10000, 12220)  # Merlin's own VPN Director rules, evaluated before ours
MERLIN_MARKS = (0x1000, 0xF000)
MERLIN_KILL_SWITCH_PREFS = (12210, MERLIN_PREFS[1])  # its kill switch: `from <src> prohibit`, `iif <lan> prohibit`
PROC = "/proc"
LOOKUP_RE = re.compile(r"lookup (\d+)")


def lint(cfg):
    """Findings from the config alone: [(level, message)]."""
    out = []
    xclients, tunnels = cfgmod.effective(cfg)
    _duplicates(cfg, out)
    _shadowed(tunnels, out)
    xindex = NetIndex(xclients)
    for tun, clients in tunnels:
        if not clients:
            why = "all its clients are paused" if tun.clients else "it has no clients"
            out.append((WARN, "tunnel %s routes nothing: %s" % (tun.name, why)))
        for net in clients:
            hits = [xclients[i] for i in xindex.overlapping(net)]
            if hits:
                out.append((WARN, "tunnel %s client %s is also an Xray client (%s): Xray wins, the tunnel "
                                  "never sees %s" % (tun.name, net, ", ".join(map(str, hits)),
                                                     "it" if any(net.subnet_of(h) for h in hits) else "that part")))
    listed = NetIndex(list(cfg.xray.clients) + [n for t in cfg.tunnels for n in t.clients])
    for p in cfg.paused_clients:
        if not listed.overlapping(p):
            out.append((WARN, "paused client %s is in no list: pausing it changes nothing" % p))
    if xclients:
        for what, nets in (("xray.exclude_ips", cfg.xray.exclude_ips),
                           ("xray.servers", [ipaddress.IPv4Network(s) for s in cfg.xray.servers if _is_net(s)])):
            for n in nets:
                inside = [p for p in PRIVATE if n.subnet_of(p)]
                if inside:
                    out.append((WARN, "%s entry %s can never matter: %s is always bypassed already"
                                % (what, n, inside[0])))
        if not cfg.xray.servers and not xray_store.addresses(cfg.data_dir):  # stored servers are bypassed too
            out.append((WARN, "Xray clients but no xray.servers: if the router itself is an Xray client, "
                              "the proxy's own traffic can loop"))
    return out


def _is_net(text):
    try:
        ipaddress.IPv4Network(text)
        return True
    except ValueError:
        return False


def _duplicates(cfg, out):
    lists = [("xray.clients", cfg.xray.clients)] + [
        ("tunnel %s" % t.name, t.clients) for t in cfg.tunnels]
    for where, nets in lists:
        seen = set()
        for n in nets:
            if n in seen:
                out.append((WARN, "%s lists %s twice" % (where, n)))
            seen.add(n)


def _shadowed(tunnels, out):
    """TUN_DIR is first-match-wins: a client covered by an earlier one never reaches its own rules."""
    listed = [(tun, net) for tun, clients in tunnels for net in clients]
    index = NetIndex(net for _, net in listed)
    for i, (tun, net) in enumerate(listed):
        # The first earlier client that covers this one; a duplicate in the same tunnel is reported on its own.
        covers = [j for j in index.containing(net) if j < i and not (listed[j][0] is tun and listed[j][1] == net)]
        first = covers[0] if covers else i
        for j in index.inside(net):  # earlier clients inside this one, up to the first that covers it
            etun, enet = listed[j]
            if j < first and etun is not tun:
                out.append((WARN, "tunnel %s client %s overlaps %s of tunnel %s listed before it: "
                                  "%s goes to %s" % (tun.name, net, enet, etun.name, enet, etun.name)))
        if covers:
            etun, enet = listed[first]
            if etun is tun and set(etun.exclude) == set(tun.exclude):
                out.append((WARN, "tunnel %s client %s is already covered by %s in the same tunnel"
                            % (tun.name, net, enet)))
            else:
                out.append((WARN, "tunnel %s client %s is shadowed by %s of tunnel %s listed before it: "
                                  "its tunnel and exclusions never apply" % (tun.name, net, enet, etun.name)))


class NetIndex:
    """A list of networks indexed for overlap questions, so that thousands of clients are not
    compared pair by pair: the networks that contain a given one are found by its at most 32
    wider networks, the ones inside it by address range. Answers are positions in the list,
    ascending."""

    def __init__(self, nets):
        self.nets = list(nets)
        self._at = {}  # net_key -> positions
        for i, n in enumerate(self.nets):
            self._at.setdefault(cfgmod.net_key(n), []).append(i)
        self._by_start = sorted((int(n.network_address), i) for i, n in enumerate(self.nets))
        self._starts = [a for a, _ in self._by_start]

    def containing(self, net):
        """Positions of the networks equal to `net` or wider."""
        keys = cfgmod.wider_keys(net) + [cfgmod.net_key(net)]
        return sorted(i for k in keys for i in self._at.get(k, ()))

    def inside(self, net):
        """Positions of the networks strictly inside `net` (narrower, within its range)."""
        lo = bisect_left(self._starts, int(net.network_address))
        hi = bisect_right(self._starts, int(net.broadcast_address))
        return sorted(i for _, i in self._by_start[lo:hi] if self.nets[i].prefixlen > net.prefixlen)

    def overlapping(self, net):
        """Positions of the networks that share an address with `net` (IPv4Network.overlaps)."""
        return sorted(self.containing(net) + self.inside(net))


def lint_live(cfg, current, full, record, proc=PROC, lan_address=None):
    """Collisions with firmware and other add-ons that only the live kernel state shows, and
    whether anything listens on the TPROXY port (read from `proc`/net; `lan_address(ifname)`
    gives the LAN interface's address, read from the kernel when not given)."""
    out = []
    td_marks = {cfg.td_mark(t.slot): t.name for t in cfg.tunnels}
    ours = owned.rules(full, current, record)
    for pref, text in current.rules:
        if (pref, text) in ours:
            continue
        if MERLIN_PREFS[0] <= pref <= MERLIN_PREFS[1] and not KILL_SWITCH_RE.match(text):
            # (the firmware's kill-switch rules are reported below, when they cover our clients)
            out.append((WARN, "ip rule %d (%s) belongs to the firmware's VPN Director and is evaluated "
                              "before ours" % (pref, text)))
        marks = owned.marks_of(text)
        if not marks:
            if text.endswith("lookup %d" % cfg.xray.route_table):
                out.append((WARN, "ip rule %d also uses table %d (%s)" % (pref, cfg.xray.route_table, text)))
            continue
        (mark, mask), m = marks, LOOKUP_RE.search(text)  # other selectors may sit between the two
        table = int(m.group(1)) if m else None
        if mark in td_marks and mask & cfg.td_mark_mask and pref < cfg.td_pref_base:
            out.append((ERROR, "ip rule %d (%s) matches mark %#x before ours: tunnel %s's traffic would go "
                               "to table %s" % (pref, text, mark, td_marks[mark], table)))
        elif mask & (cfg.td_mark_mask | cfg.xray.fwmark_mask):
            out.append((WARN, "ip rule %d (%s) uses mark bits vpn-director uses" % (pref, text)))
        elif MERLIN_MARKS[0] <= mark <= MERLIN_MARKS[1]:
            out.append((WARN, "ip rule %d (%s): the firmware's VPN marks are in use" % (pref, text)))
        if table == cfg.xray.route_table:
            out.append((WARN, "ip rule %d (%s) also uses table %d, the Xray table" % (pref, text, table)))
    others = [r for r in current.routes.get(cfg.xray.route_table, []) if r != XRAY_ROUTE_SHOWN]
    if others:
        out.append((WARN, "table %d holds routes that are not vpn-director's: %s"
                    % (cfg.xray.route_table, "; ".join(others[:3]))))
    out += merlin_kill_switch(cfg, current.rules)
    out += tproxy_listener(cfg, proc, lan_address)
    out += v6report.findings(full, current)
    return out


def other_backend(chains, backend):
    """Our chains found in the iptables backend not in use: apply and stop refuse to run."""
    if not chains:
        return []
    other = tools.other_backend(backend)
    return [(ERROR, "chain(s) %s are live in the %s iptables backend while this run uses %s: apply and stop "
                    "refuse until `VPD_IPTABLES=%s vpn-director stop` removes them" % (", ".join(chains), other,
                                                                                       backend, other))]


# `ip -N rule show` prints the action as a number: blackhole 6, unreachable 7, prohibit 8.
KILL_SWITCH_RE = re.compile(r"^(?:from (\S+))?\s*(?:iif (\S+))?\s*(?:prohibit|unreachable|blackhole|6|7|8)$")


def merlin_kill_switch(cfg, rules):
    """Asuswrt-Merlin's kill switch (`from <src> prohibit` or `iif <lan> prohibit` at 12210-12220)
    is evaluated before our rules: a client it covers cannot be routed by vpn-director."""
    out = []
    xclients, tunnels = cfgmod.effective(cfg)
    listed = [(n, "Xray") for n in xclients] + [(n, "tunnel %s" % t.name) for t, nets in tunnels for n in nets]
    if not listed:
        return out
    index = NetIndex(n for n, _ in listed)
    for pref, text in rules:
        m = KILL_SWITCH_RE.match(text)
        if not m or not MERLIN_KILL_SWITCH_PREFS[0] <= pref <= MERLIN_KILL_SWITCH_PREFS[1]:
            continue
        src, iif = m.groups()
        if iif is not None and iif != cfg.lan_interface:
            continue
        try:
            net = None if src in (None, "all") else ipaddress.IPv4Network(src, strict=False)
        except ValueError:
            continue
        hits = [listed[i] for i in (range(len(listed)) if net is None else index.overlapping(net))]
        if not hits:
            continue
        shown = ", ".join("%s client %s" % (what, n) for n, what in hits[:5])
        if len(hits) > 5:
            shown += " and %d more" % (len(hits) - 5)
        out.append((WARN, "ip rule %d (%s) is Asuswrt-Merlin's kill switch for one of its VPN clients and "
                          "covers %s: evaluated before vpn-director's rules, it blocks these clients' traffic "
                          "(their tunnel's, and an Xray client's direct traffic) whenever that Merlin VPN "
                          "client is enabled with its kill switch on; turn that kill switch off or take these "
                          "clients out of the firmware's VPN Director" % (pref, text, shown)))
    return out


def proc_listeners(port, proc=PROC):
    """Sockets on `port` that can take TPROXY'd packets, from proc/net/{tcp,tcp6,udp,udp6}: TCP in
    LISTEN, UDP not connected. {"tcp": [address], "udp": [address]}; None if nothing was readable.
    An IPv4-mapped IPv6 address counts as its IPv4 address."""
    found, readable = {"tcp": [], "udp": []}, False
    for proto in ("tcp", "udp"):
        for name in (proto, proto + "6"):
            try:
                with open(os.path.join(proc, "net", name)) as fh:
                    lines = fh.read().splitlines()[1:]
            except OSError:
                continue
            readable = True
            for line in lines:
                addr = _proc_socket(line, proto, port)
                if addr is not None and addr not in found[proto]:
                    found[proto].append(addr)
    return found if readable else None


def _proc_socket(line, proto, port):
    """The local address of one /proc/net line if it is a listener on `port`, else None."""
    fields = line.split()
    if len(fields) < 4 or ":" not in fields[1]:
        return None
    local, remote, st = fields[1], fields[2], fields[3]
    try:
        hexaddr, hexport = local.split(":")
        if int(hexport, 16) != port:
            return None
        if proto == "tcp" and st != "0A":  # TCP_LISTEN
            return None
        if proto == "udp" and int(remote.split(":")[1], 16) != 0:  # connected: not a listener
            return None
        # Printed as 32-bit words in the host's byte order: packing them natively gives network order.
        raw = b"".join(struct.pack("=I", int(hexaddr[i:i + 8], 16)) for i in range(0, len(hexaddr), 8))
        addr = ipaddress.ip_address(raw)
    except (ValueError, IndexError, struct.error):
        return None
    if addr.version == 6 and addr.ipv4_mapped:
        return addr.ipv4_mapped
    return addr


SIOCGIFADDR = 0x8915


def interface_address(ifname):
    """The interface's first IPv4 address (the one TPROXY without --on-ip looks for), or None."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            req = struct.pack("256s", ifname.encode()[:15])
            return socket.inet_ntoa(fcntl.ioctl(s.fileno(), SIOCGIFADDR, req)[20:24])
    except (OSError, ValueError):
        return None


def tproxy_listener(cfg, proc=PROC, lan_address=None):
    """Is Xray there to take what TPROXY sends it? Our rules carry --on-ip 0.0.0.0, so the kernel
    looks for a transparent listener on the TPROXY port at the LAN interface's address: a socket
    bound to 0.0.0.0 or :: (or that address) is found, one bound to 127.0.0.1 never is."""
    xclients, _ = cfgmod.effective(cfg)
    if not xclients:
        return []
    port = cfg.xray.tproxy_port
    found = proc_listeners(port, proc)
    if found is None:
        return [(WARN, "cannot read %s: whether Xray listens on port %d was not checked"
                 % (os.path.join(proc, "net", "tcp"), port))]
    lan = (lan_address or interface_address)(cfg.lan_interface)
    usable = {ipaddress.ip_address("0.0.0.0"), ipaddress.ip_address("::")}
    if lan:
        usable.add(ipaddress.ip_address(lan))
    out = []
    missing = [p.upper() for p in ("tcp", "udp") if not found[p]]
    if missing:
        out.append((WARN, "nothing listens on %s port %d (advanced.xray.tproxy_port): Xray clients' %s %s "
                          "dropped, not leaked, until Xray listens there (connections hang until they time out)"
                    % (" or ".join(missing), port, " and ".join(missing), "is" if len(missing) == 1 else "are")))
    wrong = [(p.upper(), found[p]) for p in ("tcp", "udp") if found[p] and not usable.intersection(found[p])]
    if wrong:
        where = "%s's address %s or " % (cfg.lan_interface, lan) if lan else ""
        out.append((ERROR, "Xray listens on port %d only at %s, but the TPROXY rules (--on-ip 0.0.0.0) look for "
                           "the listener at %s0.0.0.0: every %s packet from Xray clients is dropped; make Xray's "
                           "TPROXY inbound listen on 0.0.0.0 (its default) or ::"
                    % (port, "; ".join("%s %s" % (p, ", ".join(map(str, a))) for p, a in wrong), where,
                       " and ".join(p for p, _ in wrong))))
    return out
