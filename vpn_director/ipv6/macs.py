"""Which MAC each routed client has, and which routed clients have none known.

IPv6 addresses rotate (privacy addresses) and say nothing about the IPv4 client they belong
to, so a routed client is matched at layer 2, by the MAC its IPv4 address is seen with. For
each address the first source that knows it wins:
  1. pins: `advanced.ipv6.macs` (for a device that is often idle);
  2. the neighbour table: complete entries on the LAN interface in /proc/net/arp (a file read,
     no process);
  3. the DHCP leases file (`advanced.leases_file`);
  4. MACs earlier runs learnt (the record). An ARP entry expires while a device idles; dropping
     its block then would let its IPv6 out again. So a learnt MAC stays until its address is no
     longer routed or another MAC is seen for it.
A CIDR client covers every known address inside it.
"""

from __future__ import annotations

import ipaddress
from ..record import Record, factory
from .. import config as cfgmod
from ..model import TUNNEL, XRAY

ARP = "/proc/net/arp"
ATF_COM = 0x2  # /proc/net/arp flag of a complete entry
MAIN_TABLE = cfgmod.MAIN_TABLE
PIN, ARP_SOURCE, LEASE, REMEMBERED = "pin", "arp", "lease", "remembered"


def valid(mac):
    """A unicast MAC written as ip6tables-save prints it (lower case, colons); nothing else may
    reach an ip6tables document."""
    return bool(cfgmod.MAC_RE.match(mac)) and mac != "00:00:00:00:00:00" and not int(mac[:2], 16) & 1


def neighbours(text, lan):
    """{IPv4Address: MAC} of the complete entries on interface `lan` in /proc/net/arp's text."""
    out = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 6 or parts[5] != lan:
            continue
        try:
            flags = int(parts[2], 16)
            addr = ipaddress.IPv4Address(parts[0])
        except ValueError:
            continue
        mac = parts[3].lower()
        if flags & ATF_COM and valid(mac):
            out[addr] = mac
    return out


def read_neighbours(lan, path=ARP):
    try:
        with open(path) as fh:
            return neighbours(fh.read(), lan)
    except OSError:
        return {}


def from_leases(leases):
    """{IPv4Address: MAC} of current DHCP leases (ops.leases.Lease objects)."""
    out = {}
    for lease in leases:
        if valid(lease.mac):
            out[ipaddress.IPv4Address(lease.ip)] = lease.mac
    return out


def remembered(record6):
    """{IPv4Address: MAC} an earlier run learnt (invalid entries are ignored, never used)."""
    out = {}
    for addr, mac in (record6.get("macs") or {}).items():
        try:
            a = ipaddress.IPv4Address(addr)
        except ValueError:
            continue
        if isinstance(mac, str) and valid(mac):
            out[a] = mac
    return out


def known(pins, arp, leases, memory):
    """{IPv4Address: (MAC, source)}: a pin beats the neighbour table, which beats the leases,
    which beat what earlier runs learnt."""
    out = {}
    for source, table in ((REMEMBERED, memory), (LEASE, leases), (ARP_SOURCE, arp), (PIN, pins)):
        for addr, mac in table.items():
            out[addr] = (mac, source)
    return out


def _keys(addr):
    """net_key of the address as a /32 and of every network containing it."""
    net = ipaddress.IPv4Network((int(addr), 32))
    return cfgmod.wider_keys(net) + [cfgmod.net_key(net)]


class Routes:
    """One component's client entries in first-match order, with the holes paused clients make.

    `routed[i]` says whether entry i sends its addresses into the component (a tunnel whose table
    is main sends them to the WAN: they are not routed).
    """

    def __init__(self, entries, routed, holes):
        self.entries = list(entries)
        self.routed = list(routed)
        self.at = {}  # net_key -> positions, ascending
        for i, n in enumerate(self.entries):
            self.at.setdefault(cfgmod.net_key(n), []).append(i)
        self.holes = {cfgmod.net_key(h) for h in holes}

    def containing(self, addr):
        """Positions of the entries that contain `addr`, ascending; none for an address in a hole."""
        keys = _keys(addr)
        if any(k in self.holes for k in keys):
            return []
        return sorted(i for k in keys for i in self.at.get(k, ()))

    def routes(self, addr):
        """Does the component route `addr`? The first entry containing it decides."""
        hits = self.containing(addr)
        return bool(hits) and self.routed[hits[0]]


def routes(cfg):
    """{component: Routes} for the components that route at least one client (paused ones out)."""
    xc, tunnels = cfgmod.effective(cfg)
    out = {}
    if xc:
        out[XRAY] = Routes(xc, [True] * len(xc), cfgmod.paused_inside(cfg, xc))
    entries = [(n, t.table != MAIN_TABLE) for t, clients in tunnels for n in clients]
    if any(r for _, r in entries):
        nets = [n for n, _ in entries]
        out[TUNNEL] = Routes(nets, [r for _, r in entries], cfgmod.paused_inside(cfg, nets))
    return out


def any_routed(cfg):
    """Is any client routed (into Xray or a tunnel whose table is not main)?"""
    xc, tunnels = cfgmod.effective(cfg)
    return bool(xc) or any(clients and t.table != MAIN_TABLE for t, clients in tunnels)


class Protection(Record):
    """What blocking needs, per component, and what could not be covered."""

    components: list[str] = factory(list)  # those with routed clients, Xray first
    macs: dict[str, dict[str, list[tuple[str, str]]]] = factory(dict)
    # component -> MAC -> [(address, source)] of the routed addresses seen with it
    unprotected: list[tuple[str, ipaddress.IPv4Network]] = factory(list)
    # (component, client entry): a routed host with no MAC known, a CIDR with none inside it
    memory: dict[str, str] = factory(dict)  # address -> MAC, kept in the record


def protect(cfg, known_macs):
    """Protection for the config's routed clients from {IPv4Address: (MAC, source)}."""
    out = Protection()
    routed_any = set()
    for comp, r in routes(cfg).items():
        out.components.append(comp)
        macs, covered = {}, set()
        for addr in sorted(known_macs):
            hits = r.containing(addr)
            if not hits or not r.routed[hits[0]]:
                continue
            mac, source = known_macs[addr]
            macs.setdefault(mac, []).append((str(addr), source))
            covered.update(i for i in hits if r.routed[i])
            routed_any.add(addr)
        out.macs[comp] = {m: macs[m] for m in sorted(macs)}
        for i, net in enumerate(r.entries):
            if i in covered or not r.routed[i]:
                continue
            if net.prefixlen == 32 and not r.routes(net.network_address):
                continue  # shadowed by an earlier entry that does not route it
            out.unprotected.append((comp, net))
    out.memory = {str(a): known_macs[a][0] for a in sorted(routed_any) if known_macs[a][1] != PIN}
    return out
