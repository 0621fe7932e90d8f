"""The desired state as plain data: what the kernel should hold, independent of how it gets there."""

from __future__ import annotations

from .record import Record, factory, replace

XRAY = "xray"
TUNNEL = "tunnel"
SHARED = "shared"  # country sets either component may use
SCOPES = ("all", XRAY, TUNNEL)


def components(scope):
    """The components a scope covers, Xray first."""
    return (XRAY, TUNNEL) if scope == "all" else (scope,)


class SetSpec(Record, frozen=True):
    name: str
    members: frozenset[str]  # entries exactly as `ipset save` prints them ("1.2.3.4", "10.0.0.0/8 nomatch")
    component: str
    country: bool = False
    listed: int | None = None  # country lists: entries before aggregation (not compared)
    __nocompare__ = ("listed",)


class ChainSpec(Record, frozen=True):
    name: str
    rules: tuple[str, ...]  # rule specs as iptables-save prints them, without "-A NAME"
    component: str


class JumpSpec(Record, frozen=True):
    target: str
    spec: str  # the PREROUTING rule as iptables-save prints it, without "-A PREROUTING"
    first: bool  # position 1; otherwise after the firmware's mark rules and after first-jumps
    component: str


class TableDesired(Record):
    """Our chains and jumps in one iptables table besides mangle (DNS nat/filter, the IPv6 block):
    what tablestep plans."""

    table: str  # "nat" or "filter"
    parents: tuple[str, ...]  # the built-in chains our jumps sit at the top of
    names: dict[str, str]  # component -> the fixed name of its chain in this table
    ours: object  # a compiled pattern: every rule our chains in this table hold matches it (reconcile.looks_like_ours)
    chains: list[ChainSpec] = factory(list)
    jumps: dict[str, list[JumpSpec]] = factory(dict)  # parent -> jumps into ours
    kernel_tool: str = ""  # steps.py's tool; "" = iptables for this table
    title: str = ""  # the step's name; "" = "update <table> chains and jumps"
    change_word: str = ""  # what change lines call the table; "" = its name
    warn_word: str = ""  # what warnings call the table; "" = its name
    # an apply also refreshes the live chains of components outside its scope (the IPv6 MACs: a
    # device seen since they were applied is blocked now); their jumps and existence are not touched
    refresh_outside: bool = False

    @property
    def tool(self):
        return self.kernel_tool or "iptables-" + self.table  # steps.py runs it with iptables-restore

    @property
    def step_name(self):
        return self.title or "update %s chains and jumps" % self.table


# Rule actions other than a lookup, and the numbers `ip -N rule show` prints for them (RTN_*).
RULE_ACTIONS = {"blackhole": 6, "unreachable": 7, "prohibit": 8}
ACTION_NAMES = {str(n): a for a, n in RULE_ACTIONS.items()}


class RuleSpec(Record, frozen=True):
    pref: int
    mark: int
    mask: int
    table: int  # 0 for an action rule
    component: str
    action: str | None = None  # a kill-switch guard: unreachable | prohibit | blackhole

    @property
    def text(self):
        # Exactly what `ip -N rule show` prints after "PREF:\t".
        if self.action:
            return "from all fwmark %#x/%#x %d" % (self.mark, self.mask, RULE_ACTIONS[self.action])
        return "from all fwmark %#x/%#x lookup %d" % (self.mark, self.mask, self.table)


def rule_words(text):
    """A rule text as `ip rule add` takes it and people read it: a numeric action by its name."""
    head, _, last = text.rpartition(" ")
    return "%s %s" % (head, ACTION_NAMES[last]) if last in ACTION_NAMES else text


def rule_numeric(text):
    """A rule text as `ip -N rule show` prints it here: older iproute2 prints action names."""
    head, _, last = text.rpartition(" ")
    return "%s %d" % (head, RULE_ACTIONS[last]) if last in RULE_ACTIONS else text


class RouteSpec(Record, frozen=True):
    table: int
    add: str  # argument of `ip route replace ... table N`
    shown: str  # the line `ip -N route show table N` prints for it (numeric type and scope)
    component: str


class Ownership(Record, frozen=True):
    """Which kernel objects belong to vpn-director under this config (live ones may be stale)."""

    lan: str
    xray_chain: str
    td_chain: str
    xray_pref: int
    xray_mask: int
    td_prefs: tuple[int, int]  # inclusive range
    td_mask: int
    route_table: int
    xray_sets: tuple[str, str]
    guard_base: int = 16640  # kill-switch guards: guard_base + slot - 1

    def rule_component(self, pref, text):
        if pref == self.xray_pref and ("/%#x " % self.xray_mask) in text + " ":
            return XRAY
        if self.td_prefs[0] <= pref <= self.td_prefs[1] and ("/%#x " % self.td_mask) in text + " ":
            return TUNNEL
        return None


class DesiredState(Record):
    ownership: Ownership
    sets: list[SetSpec] = factory(list)
    external_sets: list[str] = factory(list)
    chains: list[ChainSpec] = factory(list)
    jumps: list[JumpSpec] = factory(list)
    rules: list[RuleSpec] = factory(list)
    routes: list[RouteSpec] = factory(list)
    ipv6: object | None = None  # ipv6.block.V6Desired when advanced.ipv6.mode is block
    dns: tuple | None = None  # (nat, filter) TableDesired
    tunnel_dns: dict | None = None  # {tunnel: dns.servers.TunnelDns} the DNS objects were built from

    def scoped(self, scope):
        """The part of the state one component owns (country sets follow whoever uses them)."""
        if scope == "all":
            return self
        keep = {scope, SHARED}
        chains = [c for c in self.chains if c.component == scope]
        used = {n for c in chains for r in c.rules for n in set_refs(r)}
        return replace(
            self,
            sets=[s for s in self.sets if s.component == scope or (s.component == SHARED and s.name in used)],
            external_sets=[n for n in self.external_sets if n in used],
            chains=chains,
            jumps=[j for j in self.jumps if j.component in keep],
            rules=[r for r in self.rules if r.component in keep],
            routes=[r for r in self.routes if r.component in keep],
        )


def set_refs(rule):
    """Names of the sets a rule spec matches against."""
    parts = rule.split()
    return [parts[i + 1] for i, p in enumerate(parts) if p == "--match-set" and i + 1 < len(parts)]
