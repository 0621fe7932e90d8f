"""Read the kernel's current state back: iptables-save, ipset save, ip rule / ip route output."""

from __future__ import annotations

from array import array

from .record import Record, factory
from . import sets
from .model import rule_numeric
from .patterns import compiled

RULE_RE = compiled(r"^(\d+):\s+(.*?)\s*$")
COUNTED_RE = compiled(r"^\[(\d+):(\d+)\]\s+(.*)$")


class LiveSet(Record):
    name: str
    type: str
    header: str
    members: frozenset


class LiveState(Record):
    chains: dict[str, list[str]] = factory(dict)  # mangle chain -> rule specs in order
    counters: dict[str, list[tuple[int, int]]] = factory(dict)
    sets: dict[str, LiveSet] = factory(dict)
    rules: list[tuple[int, str]] = factory(list)  # (pref, text after "PREF:\t")
    routes: dict[int, list[str]] = factory(dict)
    ipv6: object | None = None  # ipv6.live.V6Live when the IPv6 part was read
    dns: object | None = None  # dns.live.DnsLive when the nat/filter tables were read
    sets_trusted: bool = False  # sets from their headers, the desired members standing in (setcheck)

    @property
    def prerouting(self):
        return self.chains.get("PREROUTING", [])


def parse_iptables_save(text, state, table="mangle"):
    """Fill chains (and counters when -c was used) from `iptables-save -t mangle` (or another
    table's section, e.g. `ip6tables-save -t filter`)."""
    in_table = False
    for line in text.splitlines():
        if line.startswith("*"):
            in_table = line == "*" + table
        elif not in_table or line.startswith("#") or not line:
            continue
        elif line.startswith(":"):
            state.chains.setdefault(line[1:].split()[0], [])
            state.counters.setdefault(line[1:].split()[0], [])
        else:
            pkts = byts = 0
            m = COUNTED_RE.match(line)
            if m:
                pkts, byts, line = int(m.group(1)), int(m.group(2)), m.group(3)
            if line.startswith("-A "):
                chain, _, spec = line[3:].partition(" ")
                state.chains.setdefault(chain, []).append(spec.strip())
                state.counters.setdefault(chain, []).append((pkts, byts))


def parse_ipset_save(text, state):
    """Sets with their members: plain CIDR members packed (sets.Cidrs), others as a frozenset.

    Country sets make this 100k+ lines: each member is packed as it is read (8 bytes, not a
    string object), and the per-line work is kept to a partition and an append.
    """
    packed, texts = {}, {}
    pack = sets.pack_kernel
    for line in text.split("\n"):
        if line.startswith("add "):
            name, _, item = line[4:].partition(" ")
            keys = packed.get(name)
            if keys is None:
                continue
            item = item.strip()
            if keys is not False:
                if " " not in item:
                    keys.append(pack(item))
                    continue
                texts[name] = list(sets.Cidrs(keys))  # an entry with flags (e.g. nomatch): this set stays text
                packed[name] = False
            texts[name].append(item)
        elif line.startswith("create "):
            parts = line.split(None, 2)
            if len(parts) == 3:
                typ, _, header = parts[2].partition(" ")
                state.sets[parts[1]] = LiveSet(parts[1], typ, header.strip(), frozenset())
                packed[parts[1]] = array("Q")
    for name, keys in packed.items():
        state.sets[name].members = sets.Cidrs(keys) if keys is not False else frozenset(texts[name])


def parse_ip_read(text, state, table):
    """Output of `ip -N -batch` running `rule show` then `route show table TABLE`.

    Rule lines start with "PREF:"; route lines never do, so one read serves both.
    """
    routes = []
    for line in text.splitlines():
        m = RULE_RE.match(line)
        if m:
            state.rules.append((int(m.group(1)), rule_numeric(m.group(2))))
        elif line.strip():
            routes.append(line.strip())
    state.routes[table] = routes


def read_sets(tools, state):
    """state.sets from `ipset save`, every member (replacing sets taken from their headers)."""
    state.sets, state.sets_trusted = {}, False
    parse_ipset_save(tools.ipset_save(), state)


def read(tools, route_table, counters=False, extra_tables=(), sets=None):
    """The live state as three read-only processes (one more per table an earlier config used).
    `sets(tools)`: another way to the sets (the watchdog's headers); None from it: `ipset save`."""
    state = LiveState()
    parse_iptables_save(tools.iptables_save(counters=counters), state)
    found = sets(tools) if sets else None
    if found is None:
        read_sets(tools, state)
    else:
        state.sets, state.sets_trusted = found, True
    parse_ip_read(tools.ip_read(route_table), state, route_table)
    for table in extra_tables:
        state.routes[table] = [l.strip() for l in tools.route_read(table).splitlines() if l.strip()]
    return state
