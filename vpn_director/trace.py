"""Walk a packet through the document's flow: mangle PREROUTING rule by rule, then nat PREROUTING
(our DNS chain: a tunnel client's DNS to the router DNAT'd to its tunnel's resolver), then the
ip rule lookup.

The walk runs over rule specs in iptables-save form, so the same code evaluates the desired
state (offline) and the parsed live kernel state (`--live`). Steps are worded like the
document's traffic-flow examples.
"""

import bisect
import functools
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from . import aggregate, sets
from .desired import FIXED_RETURNS
from .model import ACTION_NAMES, RULE_ACTIONS

MAIN, DEFAULT, LOCAL = 254, 253, 255
DROPPED = "DROP"  # what a chain walk returns when a -j DROP rule took the packet
TPROXY_PROTOS = ("tcp", "udp")  # the only protocols the TPROXY target takes
PRIVATE = set(FIXED_RETURNS)
RULE_WORDS = re.compile(r"(not )?(?:from (\S+))?\s*(?:iif (\S+))?\s*(?:fwmark (0x[0-9a-f]+)(?:/(0x[0-9a-f]+))?)?"
                        r"\s*(?:(?:lookup|table) (\S+)|(%s)$)" % "|".join(str(n) for n in RULE_ACTIONS.values()))


class SetIndex:
    """hash:net membership: the most specific matching entry decides (a `nomatch` entry excludes).

    The first lookups probe the member texts directly, one candidate prefix per length, so a
    single `trace` never pays for indexing 100,000 entries. Past a few dozen lookups the set is
    indexed: without nomatch entries as sorted disjoint intervals searched with bisect.
    """

    PROBES_BEFORE_INDEX = 32

    def __init__(self, members):
        # country sets come packed (sets.Cidrs): probing and indexing then skip the texts
        self.packed = getattr(members, "_keys", None)
        if self.packed is None and not isinstance(members, frozenset):
            members = frozenset(members)
        self.members = members
        self.lookups = 0
        self.starts = self.by_len = None

    def __contains__(self, ip):
        ip = int(ip)
        self.lookups += 1
        if self.starts is None and self.by_len is None:
            if self.lookups <= self.PROBES_BEFORE_INDEX:
                return self._probe(ip)
            self._index()
        if self.by_len is not None:
            for plen in self.lengths:
                hit = self.by_len[plen].get(ip >> (32 - plen) << (32 - plen))
                if hit is not None:
                    return hit
            return False
        i = bisect.bisect_right(self.starts, ip) - 1
        return i >= 0 and ip <= self.ends[i]

    def _probe(self, ip):
        if self.packed is not None:  # sorted packed keys: one bisect per candidate length
            keys, n = self.packed, len(self.packed)
            for plen in range(32, 0, -1):
                key = (ip >> (32 - plen) << (32 - plen) << 6) | plen
                i = bisect.bisect_left(keys, key)
                if i < n and keys[i] == key:
                    return True
            return False
        members = self.members
        for plen in range(32, 0, -1):
            text = aggregate.text(ip >> (32 - plen) << (32 - plen), plen)
            if text in members:
                return True
            if text + " nomatch" in members:
                return False
        return False

    def _index(self):
        if self.packed is not None:  # aggregated: already sorted, disjoint intervals
            self.starts = [k >> 6 for k in self.packed]
            self.ends = [(k >> 6) + (1 << (32 - (k & 63))) - 1 for k in self.packed]
            return
        entries = []
        for m in self.members:
            text, _, flag = m.partition(" ")
            key = sets.pack_kernel(text)
            plen = key & 63
            start = (key >> 6) & ((0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF)
            entries.append((start, plen, flag == "nomatch"))
        if any(nm for _, _, nm in entries):
            self.by_len = {}
            for start, plen, nm in entries:
                self.by_len.setdefault(plen, {})[start] = not nm
            self.lengths = sorted(self.by_len, reverse=True)
            return
        spans = sorted((s, s + (1 << (32 - p)) - 1) for s, p, _ in entries)
        starts, ends = [], []
        for lo, hi in spans:
            if ends and lo <= ends[-1] + 1:
                ends[-1] = max(ends[-1], hi)
            else:
                starts.append(lo)
                ends.append(hi)
        self.starts, self.ends = starts, ends


@dataclass
class IpRule:
    pref: int
    table: int
    mark: Optional[int] = None
    mask: int = 0xFFFFFFFF
    src: Optional[ipaddress.IPv4Network] = None
    iif: Optional[str] = None
    invert: bool = False
    text: str = ""
    action: Optional[str] = None  # a kill-switch guard: the packet is refused here

    def matches(self, pkt):
        hit = ((self.mark is None or pkt.mark & self.mask == self.mark)
               and (self.src is None or pkt.src in self.src)
               and (self.iif is None or self.iif == pkt.iif))
        return hit != self.invert


@dataclass
class Ruleset:
    """What the walk needs: mangle chains (PREROUTING included), sets, ip rules by priority."""

    chains: Dict[str, List[str]]
    sets: Dict[str, SetIndex]
    ip_rules: List[IpRule]
    table_names: Dict[int, str] = field(default_factory=dict)
    unknown_sets: Tuple[str, ...] = ()
    xray_table: int = 100
    xray_chain: str = "XRAY_TPROXY"
    td_chain: str = "TUN_DIR"
    servers_set: str = "XRAY_SERVERS"
    down_tables: frozenset = frozenset()  # live: tunnel tables with no route (lookups fall through)
    nat: Dict[str, List[str]] = field(default_factory=dict)  # nat PREROUTING (our jumps) and our nat chains
    local: frozenset = frozenset()  # the router's own addresses known here (addrtype LOCAL)


@dataclass
class Verdict:
    route: str  # "xray", "tunnel", "direct" or "blocked" (a kill-switch guard refused it)
    table: str
    mark: int
    steps: List[str]
    rules: List[Optional[str]]  # the rule behind each step (iptables spec or ip rule text)
    tunnel: Optional[str] = None

    def as_dict(self):
        return {"route": self.route, "table": self.table, "mark": "%#x" % self.mark, "tunnel": self.tunnel,
                "steps": self.steps, "rules": self.rules}


def from_desired(full, cfg, local=()):
    """Ruleset of the desired state; PREROUTING holds our jumps in their order. `local`: the
    router's own addresses (its LAN address: what DNS to the router is sent to)."""
    chains = {c.name: list(c.rules) for c in full.chains}
    chains["PREROUTING"] = [j.spec for j in sorted(full.jumps, key=lambda j: not j.first)]
    rules = [IpRule(r.pref, r.table, r.mark, r.mask, text=r.text, action=r.action) for r in full.rules]
    rules.append(IpRule(32766, MAIN, text="from all lookup main"))
    rs = _ruleset(cfg, chains, {s.name: SetIndex(s.members) for s in full.sets}, rules,
                  tuple(full.external_sets))
    nat = [td for td in (full.dns or ()) if td.table == "nat"]
    if nat:
        rs.nat = {c.name: list(c.rules) for c in nat[0].chains}
        rs.nat["PREROUTING"] = [j.spec for j in nat[0].jumps.get("PREROUTING", [])]
    rs.local = frozenset(ipaddress.IPv4Address(a) for a in local if a)
    return rs


def from_live(current, cfg, local=()):
    """Ruleset of the kernel's state as read by live.read(); with the tunnels' tables in
    current.routes, a tunnel table without routes counts as down (its lookup falls through)."""
    rules = []
    for pref, text in current.rules:
        m = RULE_WORDS.match(text)
        if not m or not (m.group(7) or m.group(6).isdigit()):
            continue
        invert, src, iif, mark, mask, table, action = m.groups()
        rules.append(IpRule(pref, int(table or 0), int(mark, 16) if mark else None,
                            int(mask, 16) if mask else 0xFFFFFFFF,
                            None if src in (None, "all") else ipaddress.IPv4Network(src, strict=False),
                            iif, bool(invert), text, ACTION_NAMES.get(action)))
    sets = {n: SetIndex(s.members) for n, s in current.sets.items() if s.type.startswith("hash:net")
            or s.type.startswith("hash:ip")}
    rs = _ruleset(cfg, dict(current.chains), sets, rules, ())
    rs.down_tables = frozenset(t.table for t in cfg.tunnels if t.table in current.routes
                               and not current.routes[t.table])
    seen = getattr(current, "dns", None)
    if seen is not None and "nat" in seen.tables:
        rs.nat = dict(seen.tables["nat"].chains)
    rs.local = frozenset(ipaddress.IPv4Address(a) for a in local if a)
    return rs


def _ruleset(cfg, chains, sets, rules, unknown):
    names = {t.table: t.name for t in cfg.tunnels}
    names.update({MAIN: "main", DEFAULT: "default", LOCAL: "local"})
    return Ruleset(chains, sets, sorted(rules, key=lambda r: r.pref), names, unknown, cfg.xray.route_table,
                   cfg.xray.chain, cfg.td_chain, cfg.xray.servers_ipset)


class _Packet:
    def __init__(self, src, dst, proto, dport, iif):
        self.src, self.dst = ipaddress.IPv4Address(src), ipaddress.IPv4Address(dst)
        self.proto, self.dport, self.iif = proto, dport, iif
        self.mark = 0


def trace(rs, src, dst, proto="tcp", dport=None, iif="br0"):
    pkt = _Packet(src, dst, proto, dport, iif)
    w = _Walk(rs, pkt)
    tproxy = w.chain("PREROUTING", 0)
    if tproxy == DROPPED:
        return Verdict("dropped", "none", pkt.mark, w.steps, w.rules)
    if tproxy:
        if "--dport" in _parse(tproxy[2]):
            w.say("%s: DNS (dport %s) → Xray's DNS route (xray.dns: xray)" % (rs.xray_chain, pkt.dport), tproxy[2])
        w.say("TPROXY to Xray port %s, mark %#x" % tproxy[:2], tproxy[2])
        w.say("Packet delivered to Xray process")
        return Verdict("xray", str(rs.xray_table), pkt.mark, w.steps, w.rules)
    if rs.nat:
        w.nat()
    if pkt.dst in rs.local:
        w.say("dst is the router's own address → delivered to the router%s"
              % (" (its resolver)" if pkt.dport == 53 else ""))
        return Verdict("router", "local", pkt.mark, w.steps, w.rules)
    for rule in rs.ip_rules:
        if rule.table == LOCAL or not rule.matches(pkt):
            continue  # the local table only holds the router's own addresses
        name = rs.table_names.get(rule.table, str(rule.table))
        if rule.action:
            w.say("ip rule pref %d: fwmark %#x → %s (kill switch): refused, not sent to the WAN"
                  % (rule.pref, rule.mark or 0, rule.action), rule.text)
            return Verdict("blocked", rule.action, pkt.mark, w.steps, w.rules)
        if rule.table in rs.down_tables:
            w.say("ip rule pref %d: fwmark %#x → table %s, which has no route (tunnel down): falls through"
                  % (rule.pref, rule.mark or 0, name), rule.text)
            continue
        if rule.table in (MAIN, DEFAULT):
            w.say("Goes to main table → WAN (direct)", rule.text)
            return Verdict("direct", "main", pkt.mark, w.steps, w.rules)
        w.say("ip rule pref %d: fwmark %#x → table %s" % (rule.pref, rule.mark or 0, name), rule.text)
        if rule.table == rs.xray_table:
            w.say("Table %s holds the TPROXY route: delivered locally" % name)
            return Verdict("xray", name, pkt.mark, w.steps, w.rules)
        w.say("Goes through tunnel %s" % name)
        return Verdict("tunnel", name, pkt.mark, w.steps, w.rules, tunnel=name)
    w.say("Goes to main table → WAN (direct)")
    return Verdict("direct", "main", pkt.mark, w.steps, w.rules)


class _Walk:
    """One packet's way through the mangle chains; collects the document-style steps."""

    def __init__(self, rs, pkt):
        self.rs, self.pkt = rs, pkt
        self.steps, self.rules = [], []
        self.private_checked = False

    def say(self, text, rule=None):
        self.steps.append(text)
        self.rules.append(rule)

    def chain(self, name, depth):
        """Evaluate one chain; returns (port, mark, spec) if a TPROXY target took the packet,
        DROPPED if a DROP rule did."""
        if depth > 8:
            return None
        entered = len(self.steps)
        specs = self.rs.chains.get(name, [])
        passed_tproxy = False  # a TPROXY rule let the packet by: not TCP/UDP
        for i, spec in enumerate(specs):
            r = _parse(spec)
            if r.get("-d") in PRIVATE and r.get("-j") == "RETURN":
                verdict = self._private(specs, i, spec)
                if verdict == "RETURN":
                    return None
                continue
            ok = self._match(r)
            target = r.get("-j")
            if target in self.rs.chains:
                if ok:
                    hit = self.chain(target, depth + 1)
                    if hit:
                        return hit
                continue
            if target == "TPROXY" and not ok and self.pkt.proto not in TPROXY_PROTOS:
                passed_tproxy = True
                continue
            if target == "DROP" and ok:
                if passed_tproxy:
                    text = ("%s is not TCP or UDP, TPROXY does not take it → DROP (xray.other_protocols: drop)"
                            % self.pkt.proto)
                else:
                    text = (self._words(name, r, ok) or "%s: rule without conditions" % name) + " → DROP"
                self.say(text, spec)
                return DROPPED
            words = self._words(name, r, ok)
            if not ok:
                if words:
                    self.say(words, spec)
                continue
            if target == "RETURN":
                self.say(words + " → RETURN" + self._why(name, r), spec)
                return None
            if target == "MARK":
                value, mask = (int(x, 16) for x in r["--set-xmark"].split("/"))
                self.pkt.mark = (self.pkt.mark & ~mask) ^ value
                self.say("%s → MARK %#x" % (words, value), spec)
            elif target == "TPROXY":
                value, mask = (int(x, 16) for x in r["--tproxy-mark"].split("/"))
                self.pkt.mark = (self.pkt.mark & ~mask) ^ value
                return r["--on-port"], value, spec
        if passed_tproxy:
            self.say("%s is not TCP or UDP, TPROXY does not take it → end of %s (xray.other_protocols: direct)"
                     % (self.pkt.proto, name))
        if name == self.rs.td_chain and len(self.steps) == entered:
            self.say("%s: no rules for this client" % name)
        return None

    def nat(self):
        """nat PREROUTING: a jump into one of our nat chains, whose DNAT rewrites the destination."""
        for spec in self.rs.nat.get("PREROUTING", []):
            r = _parse(spec)
            target = r.get("-j")
            if target not in self.rs.nat or target == "PREROUTING" or not self._match(r):
                continue
            for rule in self.rs.nat[target]:
                rr = _parse(rule)
                if not self._match(rr):
                    continue
                who = "src=%s" % rr["-s"].replace("/32", "") if "-s" in rr else "packet"
                if rr.get("-j") == "DNAT":
                    to = rr["--to-destination"].split(":")[0]
                    self.say("nat %s: %s, DNS to the router → DNAT to %s:%s (the tunnel's resolver; the mark %#x stays)"
                             % (target, who, to, self.pkt.dport, self.pkt.mark), rule)
                    self.pkt.dst = ipaddress.IPv4Address(to)
                    return
                if rr.get("-j") == "RETURN":
                    why = " (TPROXY'd to Xray)" if "--mark" in rr and "-s" not in rr else ""
                    self.say("nat %s: %s → RETURN%s" % (target, who, why), rule)
                    break
            return

    def _private(self, specs, i, spec):
        """The document's fixed ranges read as one question: "dst private?"."""
        r = _parse(spec)
        if ipaddress.IPv4Address(self.pkt.dst) in _net(r["-d"]):
            self.say("dst private (%s)? Yes → RETURN" % r["-d"], spec)
            return "RETURN"
        nxt = _parse(specs[i + 1]) if i + 1 < len(specs) else {}
        if not (nxt.get("-d") in PRIVATE and nxt.get("-j") == "RETURN"):
            self.say("dst private? No", spec)  # one step for the whole run of fixed ranges
        return None

    def _match(self, r):
        p = self.pkt
        checks = [("-i", lambda v: v == p.iif), ("-p", lambda v: v == p.proto),
                  ("-s", lambda v: p.src in _net(v)), ("-d", lambda v: p.dst in _net(v))]
        for key, test in checks:
            if key in r and test(r[key]) == r[key + "!"]:
                return False
        for set_name, direction, neg in r["sets"]:
            addr = p.src if direction == "src" else p.dst
            if (set_name in self.rs.sets and addr in self.rs.sets[set_name]) == neg:
                return False
        if "--mark" in r:
            value, mask = (int(x, 16) for x in r["--mark"].split("/"))
            if (p.mark & mask == value) == r.get("--mark!", False):
                return False
        if "--dport" in r and (p.dport is None or int(r["--dport"]) != int(p.dport)):
            return False
        if "--dst-type" in r and (r["--dst-type"] == "LOCAL" and p.dst in self.rs.local) == r["--dst-type!"]:
            return False
        return True

    def _words(self, chain, r, ok):
        """The rule's question in the document's words; "" for rules not about this packet."""
        p = self.pkt
        if "-s" in r and p.src not in _net(r["-s"]):
            return ""  # another client's rule
        if "-i" in r and r["-i"] != p.iif:
            return ""
        lan_return = chain == self.rs.td_chain and "-s" not in r and not r["sets"] and "-d" in r
        if lan_return and not ok:
            return ""  # a LAN subnet the kill switch leaves unmarked: a step only when it is the dst
        # As in the document: the chain is named on its first step, and on every TUN_DIR step.
        first = not any(s.startswith(chain + ":") for s in self.steps)
        prefix = chain + ": " if first or chain == self.rs.td_chain else ""
        parts = []
        if "-s" in r:
            parts.append("src=%s" % r["-s"].replace("/32", ""))
        for set_name, direction, neg in r["sets"]:
            addr = p.src if direction == "src" else p.dst
            member = set_name in self.rs.sets and addr in self.rs.sets[set_name]
            shown = set_name if set_name in (self.rs.servers_set,) or direction == "src" else '"%s"' % set_name
            note = " (external set, contents unknown offline)" if set_name in self.rs.unknown_sets else ""
            parts.append("%s in %s%s? %s" % (direction, shown, note, "Yes" if member else "No"))
        if "-d" in r:
            parts.append("dst in %s? %s" % (r["-d"], "Yes" if p.dst in _net(r["-d"]) else "No"))
        if r.get("-j") == "MARK" and parts and parts[-1].startswith("src="):
            parts[-1] += "? %s" % ("Yes" if ok else "No (already marked)")
        if r.get("-j") == "TPROXY":
            return ""
        if not parts:
            return ""
        return prefix + " + ".join(parts)

    def _why(self, chain, r):
        if r["sets"] and r["sets"][0][0] == self.rs.servers_set:
            return " (avoid loop)"
        if chain == self.rs.td_chain and r["sets"]:
            return " (no mark)"
        if chain == self.rs.td_chain and "-d" in r and "-s" not in r:
            return " (the router's LAN: no mark)"
        return ""


@functools.lru_cache(maxsize=None)
def _net(text):
    return ipaddress.IPv4Network(text)


@functools.lru_cache(maxsize=None)
def _parse(spec):
    """Rule spec -> {option: value}; cached, since every walk reads the same few hundred specs."""
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
            if t in ("-s", "-d", "-i", "-p", "--mark", "--dst-type"):
                r[t], r[t + "!"] = toks[i + 1], neg
            else:
                r[t] = toks[i + 1]
            neg = False
            i += 1
        i += 1
    return r


def difference(want, seen):
    """Where the live walk leaves the desired one, in words; "" if they agree."""
    if (want.route, want.table, want.mark) == (seen.route, seen.table, seen.mark) and want.steps == seen.steps:
        return ""
    for i, (a, b) in enumerate(zip(want.steps, seen.steps), start=1):
        if a != b:
            return "differs at step %d: desired %r, live %r" % (i, a, b)
    longer, which = (want, "desired") if len(want.steps) > len(seen.steps) else (seen, "live")
    i = min(len(want.steps), len(seen.steps))
    return "differs at step %d: only the %s state has %r" % (i + 1, which, longer.steps[i])
