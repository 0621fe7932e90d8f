"""Configs that are valid but do not do what the owner probably thinks: warnings and errors for `check`."""

import ipaddress
import re
from bisect import bisect_left, bisect_right

from . import config as cfgmod
from . import owned
from . import tools
from .desired import FIXED_RETURNS, XRAY_ROUTE_SHOWN
from .ipv6 import report as v6report

WARN, ERROR = "warning", "error"
PRIVATE = [ipaddress.IPv4Network(n) for n in FIXED_RETURNS]
MERLIN_PREFS = (10000, 12220)  # Merlin's own VPN Director rules, evaluated before ours
MERLIN_MARKS = (0x1000, 0xF000)
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
        if not cfg.xray.servers:
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


def lint_live(cfg, current, full, record):
    """Collisions with firmware and other add-ons that only the live kernel state shows."""
    out = []
    td_marks = {cfg.td_mark(t.slot): t.name for t in cfg.tunnels}
    ours = owned.rules(full, current, record)
    for pref, text in current.rules:
        if (pref, text) in ours:
            continue
        if MERLIN_PREFS[0] <= pref <= MERLIN_PREFS[1]:
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
