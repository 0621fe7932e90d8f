"""Walk a packet through the document's flow: mangle PREROUTING rule by rule, then the ip rule lookup.

The walk runs over rule specs in iptables-save form, so the same code evaluates the desired
state (offline) and a parsed live kernel state.
"""

import bisect
import ipaddress
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

MAIN = 254


class SetIndex:
    """hash:net membership: the most specific matching entry decides (a `nomatch` entry excludes).

    Sets without nomatch entries become sorted disjoint intervals searched with bisect.
    """

    def __init__(self, members):
        self.nomatch = any(m.endswith(" nomatch") for m in members)
        nets = [(ipaddress.IPv4Network(m.split()[0]), m.endswith(" nomatch")) for m in members]
        if self.nomatch:
            self.by_len = {}
            for net, nm in nets:
                self.by_len.setdefault(net.prefixlen, {})[int(net.network_address)] = not nm
            self.lengths = sorted(self.by_len, reverse=True)
        else:
            spans = sorted((int(n.network_address), int(n.broadcast_address)) for n, _ in nets)
            merged = []
            for lo, hi in spans:
                if merged and lo <= merged[-1][1] + 1:
                    merged[-1][1] = max(merged[-1][1], hi)
                else:
                    merged.append([lo, hi])
            self.starts = [lo for lo, _ in merged]
            self.ends = [hi for _, hi in merged]

    def __contains__(self, ip):
        ip = int(ip)
        if self.nomatch:
            for length in self.lengths:
                hit = self.by_len[length].get(ip >> (32 - length) << (32 - length))
                if hit is not None:
                    return hit
            return False
        i = bisect.bisect_right(self.starts, ip) - 1
        return i >= 0 and ip <= self.ends[i]


@dataclass
class Ruleset:
    """What the walk needs: mangle chains, sets, ip rules (pref, mark, mask, table)."""

    chains: Dict[str, List[str]]
    sets: Dict[str, SetIndex]
    ip_rules: List[Tuple[int, int, int, int]]
    table_names: Dict[int, str] = field(default_factory=dict)
    unknown_sets: Tuple[str, ...] = ()
    xray_table: int = 100


@dataclass
class Verdict:
    route: str  # "xray", "tunnel" or "direct"
    table: str
    mark: int
    steps: List[str]
    rules: List[Optional[str]]  # the rule spec each step evaluated (None for ip-rule steps)
    tunnel: Optional[str] = None

    def as_dict(self):
        return {"route": self.route, "table": self.table, "mark": "%#x" % self.mark,
                "tunnel": self.tunnel, "steps": self.steps,
                "matched": [{"step": s, "rule": r} for s, r in zip(self.steps, self.rules)]}


def from_desired(full, cfg):
    """Ruleset of the desired state; PREROUTING holds our jumps in their order."""
    chains = {c.name: list(c.rules) for c in full.chains}
    chains["PREROUTING"] = [j.spec for j in sorted(full.jumps, key=lambda j: not j.first)]
    names = {t.table: t.name for t in cfg.tunnels}
    names.setdefault(MAIN, "main")
    rules = [(r.pref, r.mark, r.mask, r.table) for r in full.rules]
    return Ruleset(chains, {s.name: SetIndex(s.members) for s in full.sets}, rules, names,
                   tuple(full.external_sets), cfg.xray.route_table)


class _Packet:
    def __init__(self, src, dst, proto, dport, iif):
        self.src, self.dst = ipaddress.IPv4Address(src), ipaddress.IPv4Address(dst)
        self.proto, self.dport, self.iif = proto, dport, iif
        self.mark = 0


def trace(rs, src, dst, proto="tcp", dport=None, iif="br0"):
    pkt = _Packet(src, dst, proto, dport, iif)
    steps, specs = [], []

    def say(text, spec=None):
        steps.append(text)
        specs.append(spec)

    tproxied = _walk(rs, "PREROUTING", pkt, say, depth=0)
    if tproxied:
        say("TPROXY to Xray port %s, mark %#x: packet delivered to Xray" % tproxied, None)
        return Verdict("xray", str(rs.xray_table), pkt.mark, steps, specs)
    for pref, mark, mask, table in sorted(rs.ip_rules):
        if pkt.mark & mask == mark:
            name = rs.table_names.get(table, str(table))
            say("ip rule pref %d: fwmark %#x/%#x -> table %s" % (pref, mark, mask, name))
            if table == MAIN:
                say("goes to main table -> WAN (direct)")
                return Verdict("direct", "main", pkt.mark, steps, specs)
            say("goes through tunnel %s (table %s)" % (name, table))
            return Verdict("tunnel", name, pkt.mark, steps, specs, tunnel=name)
    say("no fwmark rule matches: main table -> WAN (direct)")
    return Verdict("direct", "main", pkt.mark, steps, specs)


def _walk(rs, chain, pkt, say, depth):
    """Evaluate one chain; returns (port, mark) if a TPROXY target took the packet."""
    if depth > 8:
        return None
    for spec in rs.chains.get(chain, []):
        r = _parse(spec)
        ok, words = _matches(rs, r, pkt)
        target = r.get("-j")
        if target in rs.chains:
            if not ok:
                if chain == "PREROUTING" and words:
                    say("%s: %s -> skip %s" % (chain, words, target), spec)
                continue
            hit = _walk(rs, target, pkt, say, depth + 1)
            if hit:
                return hit
            continue
        if not ok:
            if words and _relevant(r, pkt):
                say("%s: %s" % (chain, words), spec)
            continue
        if target == "RETURN":
            say("%s: %s -> RETURN" % (chain, words or "always"), spec)
            return None
        if target == "MARK":
            value, mask = (int(x, 16) for x in r["--set-xmark"].split("/"))
            pkt.mark = (pkt.mark & ~mask) ^ value
            say("%s: %s -> MARK %#x" % (chain, words, value), spec)
        elif target == "TPROXY":
            value, mask = (int(x, 16) for x in r["--tproxy-mark"].split("/"))
            pkt.mark = (pkt.mark & ~mask) ^ value
            say("%s: %s" % (chain, words), spec)
            return r["--on-port"], value
    return None


def _relevant(r, pkt):
    """A non-matching rule is worth a step when it concerns this source (as the document lists them)."""
    src = r.get("-s")
    return src is None or pkt.src in ipaddress.IPv4Network(src)


def _parse(spec):
    toks = spec.split()
    r, i, neg = {"sets": []}, 0, False
    while i < len(toks):
        t = toks[i]
        if t == "!":
            neg = True
        elif t == "--match-set":
            r["sets"].append((toks[i + 1], toks[i + 2], neg))
            neg = False
            i += 2
        elif t == "-m":
            i += 1
        elif t.startswith("-") and i + 1 < len(toks):
            r[t] = (toks[i + 1], neg) if t in ("-s", "-d", "-i", "-p") else toks[i + 1]
            neg = False
            i += 1
        i += 1
    for k in ("-s", "-d", "-i", "-p"):
        if k in r:
            r[k + "!"], r[k] = r[k][1], r[k][0]
    return r


def _matches(rs, r, pkt):
    """(matched, words): the rule's conditions in the document's wording, answered for this packet."""
    words = []
    for key, value in (("-i", pkt.iif), ("-p", pkt.proto)):
        if key in r:
            hit = (value == r[key]) != r[key + "!"]
            if not hit:
                return False, ""
    if "-p" in r:
        words.append("proto %s" % pkt.proto)
    if "-s" in r:
        hit = (pkt.src in ipaddress.IPv4Network(r["-s"])) != r["-s!"]
        words.append("src=%s" % r["-s"].replace("/32", ""))
        if not hit:
            return False, ""
    if "-d" in r:
        hit = (pkt.dst in ipaddress.IPv4Network(r["-d"])) != r["-d!"]
        words.append("dst in %s? %s" % (r["-d"], "Yes" if hit else "No"))
        if not hit:
            return False, " + ".join(words)
    for name, direction, neg in r["sets"]:
        addr = pkt.src if direction == "src" else pkt.dst
        member = name in rs.sets and addr in rs.sets[name]
        unknown = " (external set, contents not known offline)" if name in rs.unknown_sets else ""
        words.append("%s in %s%s? %s" % (direction, name, unknown, "Yes" if member else "No"))
        if member == neg:
            return False, " + ".join(words)
    if "--mark" in r:
        value, mask = (int(x, 16) for x in r["--mark"].split("/"))
        if pkt.mark & mask != value:
            words.append("already marked %#x" % (pkt.mark & mask))
            return False, " + ".join(words)
    if r.get("-j") == "MARK" and words and words[-1].startswith("src="):
        words[-1] += "? Yes"
    return True, " + ".join(words)
