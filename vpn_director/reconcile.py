"""Diff desired against live state and turn the differences into ordered, reversible batches.

Order on apply (make-before-break): sets -> ip rules/routes -> chains + jumps (one commit)
-> removal of stale rules/routes -> removal of stale sets. Stop is the same plan with an empty
desired state, so jumps come out first. Every step can be undone (steps.py runs them): if one
fails or the run is interrupted, the finished ones and the finished part of the failing one are
undone and the previous routing stays.

Ownership is by exact selector (owned.py): a live object is removed only if the record says we
created it, and only if it still looks like something we create.
"""

from __future__ import annotations

from .record import Record, factory, replace
from . import owned, render
from .errors import DataError
from .model import SHARED, TUNNEL, XRAY, DesiredState, components, set_refs
from .patterns import compiled

# The firmware's own per-interface mark rules (Merlin: -i tun11 -j MARK --set-xmark 0x1/0x1).
FIRMWARE_MARK_RE = compiled(r"^-i (wgc|wgs|tun|ovpnc|ovpns)\S* .*-j MARK ")
# The only targets our chains use: a recorded chain with any other rule is not ours to delete.
OUR_TARGET_RE = compiled(r" -j (RETURN|DROP|MARK --set-xmark \S+"
                           r"|TPROXY --on-port \d+ --on-ip \S+ --tproxy-mark \S+)$")
SETXMARK_RE = compiled(r"--set-xmark (0x[0-9a-f]+)/")
FWMARK_RE = compiled(r"fwmark (0x[0-9a-f]+)/(0x[0-9a-f]+) lookup (\S+)")


class Step(Record):
    name: str
    tool: str  # "ipset", "ip", "iptables" (mangle), "iptables-nat", "iptables-filter" or "ip6tables"
    batch: str
    undo: str | None = None  # the batch that reverses the whole step
    changes: list[str] = factory(list)
    before: dict | None = None  # set steps: {set name: LiveSet or None} to restore a partial run


class Plan(Record):
    steps: list[Step]
    record: dict  # what we own after the plan: sets, chains, rules, routes
    intent: dict = factory(dict)  # the record plus all this plan may create (saved first)
    warnings: list[str] = factory(list)

    @property
    def changes(self):
        return [c for s in self.steps for c in s.changes]


def check_external(d, live):
    """Sets the config names but does not own must exist before anything changes."""
    missing = [n for n in d.external_sets if n not in live.sets]
    if missing:
        raise DataError("external set(s) %s do not exist; create them first (ipset create NAME hash:net)"
                        % ", ".join(sorted(missing)))


def plan(full, live, scope, record, stop=False):
    """Build the plan that makes `live` equal `full` for `scope` (an empty state when stopping)."""
    own = full.ownership
    comps = set(components(scope))
    d = DesiredState(ownership=own) if stop else full.scoped(scope)
    keep_sets = set() if stop else {s.name for s in full.sets}
    warnings = []

    # Owned chain names in scope: the config's and the ones an earlier config left behind
    # (those only while they still hold nothing but rules of the kinds we write).
    names = {XRAY: own.xray_chain, TUNNEL: own.td_chain}
    owned_chains = {names[c]: c for c in comps}
    for n, c in record.get("chains", {}).items():
        if c in comps and n not in owned_chains:
            if n in live.chains and not looks_like_ours(live.chains[n]):
                warnings.append("chain %s is in the record but holds rules vpn-director does not write; "
                                "left alone" % n)
                continue
            owned_chains[n] = c
    desired_chains = {c.name: c for c in d.chains}
    stale_chains = sorted(n for n in owned_chains if n not in desired_chains and n in live.chains)
    rebuild = [c for c in d.chains if live.chains.get(c.name) != list(c.rules)]

    steps = []
    sets_step, tmp_sets = _sets_step(d, live)
    if sets_step:
        steps.append(sets_step)

    ours = owned.rules(full, live, record)
    rules_add, rules_del, conflicts = _rules_diff(d, live, comps, own, ours)
    tmp_rules, tmp_marks = _staging(full, d, live, conflicts, own)
    our_routes = owned.routes(full, live, record)
    routes_add, routes_del = routes_diff(d, live, comps, our_routes)
    # Guards go in with the first adds, remapped marks included: they only ever refuse.
    adds = [render.rule_line("add", r.pref, r.text) for r in rules_add if r.action or r.mark not in conflicts]
    adds += [render.rule_line("add", r.pref, r.text) for r in tmp_rules]
    adds += [render.route_line("replace", r.add, r.table) for r in routes_add]
    if adds:
        steps.append(_ip_step("add ip rules and routes", adds))

    # Chains and jumps switch in one commit; with a mark remap, chains first use temporary marks.
    staged = [_with_marks(c, tmp_marks) for c in rebuild]
    jops, undo_jumps = jump_ops(d, live, owned_chains, own)
    if staged or jops or stale_chains:
        before = {c.name: live.chains.get(c.name) for c in staged}
        before.update({n: live.chains[n] for n in stale_chains})
        step = Step("update mangle chains and jumps", "iptables",
                    render.chain_doc([(c.name, c.rules) for c in staged], jops, stale_chains),
                    chain_undo(before, undo_jumps))
        step.changes += ["chain %s: %s (%d rules)" % (c.name, "rebuilt" if c.name in live.chains else "created",
                                                       len(c.rules)) for c in staged]
        step.changes += ["jump: %s" % op for op in jops]
        step.changes += ["chain %s: removed" % n for n in stale_chains]
        steps.append(step)

    if conflicts:
        steps += _remap_steps(rebuild, rules_add, rules_del, conflicts, tmp_marks)
        rules_del = [(p, t) for p, t in rules_del if _mark_of(t) not in conflicts]

    cleanup = [render.rule_line("del", p, t) for p, t in rules_del]
    cleanup += [render.rule_line("del", r.pref, r.text) for r in tmp_rules]
    cleanup += [render.route_line("del", spec, table) for table, spec in routes_del]
    if cleanup:
        steps.append(_ip_step("remove stale ip rules and routes", cleanup))

    stale_sets = _stale_sets(d, live, comps, record, owned_chains, keep_sets, warnings)
    destroy = ["destroy %s" % n for n in tmp_sets + stale_sets]
    if destroy:
        steps.append(Step("remove stale sets", "ipset", "\n".join(destroy) + "\n", None,
                          ["set %s: removed" % n for n in stale_sets],
                          before=dict({n: live.sets[n] for n in stale_sets}, **{t: None for t in tmp_sets})))
    new = _next_record(d, live, comps, record, stale_sets, ours, our_routes)
    intent = _union(record, new, tmp_rules)
    return Plan(steps, new, intent, warnings)


def looks_like_ours(rules, pattern=OUR_TARGET_RE):
    """A chain whose every rule ends in one of the targets vpn-director writes."""
    return all(pattern.search(" " + r) for r in rules)


def _union(record, new, tmp_rules):
    """The record to save before executing: everything owned now or possibly created by the plan,
    so a run killed half-way leaves nothing a later run cannot recognise as its own."""
    out = {"sets": dict(record.get("sets", {})), "chains": dict(record.get("chains", {}))}
    out["sets"].update(new["sets"])
    out["chains"].update(new["chains"])
    rules = [list(r) for r in record.get("rules", [])]
    rules += [r for r in new["rules"] + [[r.pref, r.text, r.component] for r in tmp_rules] if r not in rules]
    routes = [list(r) for r in record.get("routes", [])]
    routes += [r for r in new["routes"] if r not in routes]
    out.update(rules=rules, routes=routes)
    return out


def _remap_steps(rebuild, rules_add, rules_del, conflicts, tmp_marks):
    """After the chains moved to temporary marks: repoint the remapped marks' ip rules, then
    switch the chains to the final marks (the temporary rules go with the cleanup)."""
    old = [(p, t) for p, t in rules_del if _mark_of(t) in conflicts]
    batch = [render.rule_line("del", p, t) for p, t in old]
    batch += [render.rule_line("add", r.pref, r.text) for r in rules_add if not r.action and r.mark in conflicts]
    finals = [c for c in rebuild if c.rules != _with_marks(c, tmp_marks).rules]
    return [_ip_step("switch remapped ip rules", batch),
            Step("switch chains to final marks", "iptables",
                 render.chain_doc([(c.name, c.rules) for c in finals], [], []),
                 render.chain_doc([(c.name, _with_marks(c, tmp_marks).rules) for c in finals], [], []),
                 ["marks remapped: %s" % ", ".join("%#x" % m for m in sorted(conflicts))])]


def _stale_sets(d, live, comps, record, owned_chains, keep, warnings):
    """Sets of ours that nothing will reference once the plan has run."""
    final_refs = {n for c in d.chains for r in c.rules for n in set_refs(r)}
    for name, rules in live.chains.items():
        if name not in owned_chains:
            final_refs.update(n for r in rules for n in set_refs(r))
    candidates = {n for n, c in record.get("sets", {}).items() if c in comps or c == SHARED}
    if XRAY in comps:  # the config's Xray set names are ours whatever the config enables now
        candidates.update(d.ownership.xray_sets)
    for n in owned_chains:  # country sets our own live chains use are ours even without a record
        candidates.update(s for r in live.chains.get(n, []) for s in set_refs(r) if len(s) == 2 and s.islower())
    stale = sorted((candidates & set(live.sets)) - keep - final_refs - {s.name for s in d.sets})
    foreign = [n for n in stale if not _our_set_type(live.sets[n])]
    for n in foreign:
        warnings.append("set %s is in the record but is a %s %s set, not one vpn-director creates; left alone"
                        % (n, live.sets[n].type, _family(live.sets[n].header)))
    return [n for n in stale if n not in foreign]


def _family(header):
    words = header.split()
    return words[words.index("family") + 1] if "family" in words[:-1] else "?"


def _our_set_type(live_set):
    return live_set.type == "hash:net" and _family(live_set.header) == "inet"


def _next_record(d, live, comps, record, stale_sets, ours, our_routes):
    """What we own once the plan has run: this scope's objects, plus the other scopes' as they were."""
    new = {"sets": {}, "chains": {}}
    for kind, live_names in (("sets", live.sets), ("chains", live.chains)):
        for n, c in record.get(kind, {}).items():
            if n in live_names and c not in comps and c != SHARED:
                new[kind][n] = c
    new["sets"].update({s.name: s.component for s in d.sets})
    for n, c in record.get("sets", {}).items():
        if n in live.sets and n not in stale_sets and n not in new["sets"]:
            new["sets"][n] = c
    new["chains"].update({c.name: c.component for c in d.chains})
    # ip rules and routes: this scope's desired ones, the other scopes' live ones we own
    new["rules"] = [[p, t, c] for (p, t), c in sorted(ours.items()) if c not in comps]
    new["rules"] += [[r.pref, r.text, r.component] for r in d.rules if [r.pref, r.text, r.component]
                     not in new["rules"]]
    new["routes"] = [list(r) for r in our_routes if r[3] not in comps]
    new["routes"] += [[r.table, r.add, r.shown, r.component] for r in d.routes
                      if [r.table, r.add, r.shown, r.component] not in new["routes"]]
    return new


# Per entry, a delta (adds, then dels) costs the kernel about 2.5 times a full load
# (bench/ipsets.py): they break even near 40 % changed, so a delta only up to a third.
DELTA_MAX_FRACTION = 1 / 3
MAXELEM_RE = compiled(r"(?:^| )maxelem (\d+)")


def use_delta(spec, cur, adds, dels):
    """Delta or full swap for a live set whose members differ (documented in docs/countries.md)."""
    if not spec.country:
        return False  # small sets, and `nomatch` flags cannot be patched by add/del
    m = MAXELEM_RE.search(cur.header)
    if not m or not cur.header.startswith("family inet ") or _extensions(cur.header):
        return False  # only a plain set of ours can be patched in place
    if len(cur.members) + len(adds) > int(m.group(1)):
        return False  # adds go in before dels: the set must hold both for a moment
    return len(adds) + len(dels) <= len(spec.members) * DELTA_MAX_FRACTION


def _extensions(header):
    words = set(header.split())
    return bool(words & {"timeout", "counters", "comment", "skbinfo", "forceadd"})


def _sets_step(d, live):
    lines, undo, changes, tmp = [], [], [], []
    for spec in d.sets:  # checked before anything is written: a failed swap would leave half a step
        cur = live.sets.get(spec.name)
        if cur is not None and not _our_set_type(cur):
            raise DataError("set %s exists as %s family %s, not hash:net family inet; destroy or rename it"
                            % (spec.name, cur.type, _family(cur.header)))
    for spec in d.sets:
        cur = live.sets.get(spec.name)
        if cur is None:
            lines.append(render.set_text(spec.name, spec.members))
            undo.append(["destroy %s" % spec.name])
            changes.append("set %s: created (%d entries)" % (spec.name, len(spec.members)))
        elif cur.members != spec.members:
            adds, dels = spec.members - cur.members, cur.members - spec.members
            if use_delta(spec, cur, adds, dels):
                # adds first: an address whose covering prefix changes is never uncovered
                lines.append("\n".join(_delta(spec.name, adds, dels)))
                undo.append(_delta(spec.name, dels, adds))
                how = "delta"
            else:
                t = "%s%d" % (render.TMP_PREFIX, len(tmp))
                tmp.append(t)
                lines.append(render.set_text(t, spec.members))
                lines.append("swap %s %s" % (t, spec.name))
                undo.append(["swap %s %s" % (t, spec.name)])  # the temp set now holds the old members
                how = "swapped"
            changes.append("set %s: +%d -%d entries (%s)" % (spec.name, len(adds), len(dels), how))
    # Temporary sets are never referenced; any left by a killed run go first, whatever their name.
    leftovers = sorted(n for n in live.sets if n.startswith(render.TMP_PREFIX))
    lines = ["destroy %s" % n for n in leftovers] + lines
    if not lines:
        return None, tmp
    undo = [line for block in reversed(undo) for line in block] + ["destroy %s" % t for t in tmp]
    before = {spec.name: live.sets.get(spec.name) for spec in d.sets}
    before.update({t: None for t in tmp})
    return Step("load sets", "ipset", "\n".join(lines) + "\n", "\n".join(undo) + "\n", changes,
                before), tmp


def _delta(name, adds, dels):
    return (["add %s %s" % (name, m) for m in render.sort_members(adds)]
            + ["del %s %s" % (name, m) for m in render.sort_members(dels)])


def _rules_diff(d, live, comps, own, ours):
    live_owned = [(p, t) for p, t in live.rules if ours.get((p, t)) in comps]
    remaining = list(live_owned)
    adds = []
    for r in d.rules:
        if (r.pref, r.text) in remaining:
            remaining.remove((r.pref, r.text))
        else:
            adds.append(r)
    # A mark whose live rule points at another table than the desired one, while the live chain
    # still produces it: switching either first would misroute, so it is staged.
    live_table = {}
    for p, t in live_owned:
        m = FWMARK_RE.search(t)
        if m and ours.get((p, t)) == TUNNEL:
            live_table.setdefault(int(m.group(1), 16), set()).add(m.group(3))
    produced = {int(m, 16) for r in live.chains.get(own.td_chain, []) for m in SETXMARK_RE.findall(r)}
    conflicts = {r.mark for r in d.rules if r.component == TUNNEL and not r.action and r.mark in produced
                 and live_table.get(r.mark, {str(r.table)}) != {str(r.table)}}
    return adds, remaining, conflicts


def _staging(full, d, live, conflicts, own):
    """Temporary marks (free slots from the top of the field) for remapped tunnels."""
    if not conflicts:
        return [], {}
    shift = (own.td_mask & -own.td_mask).bit_length() - 1
    used = {r.mark for r in d.rules} | {int(m.group(1), 16) for _, t in live.rules
                                         for m in [FWMARK_RE.search(t)] if m}
    used_prefs = {p for p, _ in live.rules} | {r.pref for r in d.rules}
    free = [s << shift for s in range(own.td_mask >> shift, 0, -1)
            if (s << shift) not in used and own.td_prefs[0] + s - 1 not in used_prefs
            and own.guard_base + s - 1 not in used_prefs]
    if len(free) < len(conflicts):
        raise DataError("not enough free tunnel marks to remap %d tunnels safely" % len(conflicts))
    tmp_marks, tmp_rules = {}, []
    by_mark = {r.mark: r for r in d.rules if not r.action}
    guards = {r.mark: r for r in d.rules if r.action}
    for mark in sorted(conflicts):
        t = free.pop(0)
        tmp_marks[mark] = t
        r = by_mark[mark]
        tmp_rules.append(replace(r, pref=own.td_prefs[0] + (t >> shift) - 1, mark=t))
        if mark in guards:  # the temporary mark is guarded like the final one
            tmp_rules.append(replace(guards[mark], pref=own.guard_base + (t >> shift) - 1, mark=t))
    return tmp_rules, tmp_marks


def _with_marks(chain, tmp_marks):
    if not tmp_marks:
        return chain
    def swap(rule):
        m = SETXMARK_RE.search(rule)
        if m and int(m.group(1), 16) in tmp_marks:
            return rule.replace(m.group(0), "--set-xmark %#x/" % tmp_marks[int(m.group(1), 16)])
        return rule
    return type(chain)(chain.name, tuple(swap(r) for r in chain.rules), chain.component)


def _mark_of(text):
    m = FWMARK_RE.search(text)
    return int(m.group(1), 16) if m else None


def routes_diff(d, live, comps, our_routes):
    """(routes to add, [(table, spec)] of ours to delete) for the components in scope."""
    adds = [r for r in d.routes if r.shown not in live.routes.get(r.table, [])]
    wanted = {(r.table, r.shown) for r in d.routes}
    dels = [(table, add) for table, add, shown, comp in our_routes
            if comp in comps and (table, shown) not in wanted]
    return adds, dels


def _ip_step(name, lines):
    """An `ip -batch` step whose undo reverses every line (added ones deleted, deleted ones re-added)."""
    undo = []
    for line in reversed(lines):
        verb = line.split()[1]
        inverse = "del" if verb in ("add", "replace") else "add"
        undo.append(line.replace(" %s " % verb, " %s " % inverse, 1))
    return Step(name, "ip", "\n".join(lines) + "\n", "\n".join(undo) + "\n", ["ip %s" % line for line in lines])


def jump_ops(d, live, owned_chains, own):
    """PREROUTING edits: the Xray jump at position 1, the others after the firmware's mark rules."""
    return place_jumps("PREROUTING", live.prerouting, d.jumps, owned_chains,
                       base=lambda pr: _base_position(pr, own), top={own.xray_chain})


def place_jumps(parent, current, jumps, owned, base=lambda rules: 0, top=()):
    """Edits of a built-in chain that put `jumps` in place: (ops, undo ops), simulated on a copy
    so every -I position is exact at its moment.

    A jump marked first belongs at the top, where only jumps into `top` chains may precede it
    (several first jumps share the top in any order); the others go at base(rules). Jumps into
    `owned` chains that are not wanted are deleted.
    """
    pr = list(current)
    ops, undo = [], []
    top = set(top) | {j.target for j in jumps if j.first}

    def delete(spec):
        i = pr.index(spec)
        pr.pop(i)
        ops.append("-D %s %s" % (parent, spec))
        undo.insert(0, "-I %s %d %s" % (parent, i + 1, spec))

    def insert(pos, spec):
        pr.insert(pos, spec)
        ops.append("-I %s %d %s" % (parent, pos + 1, spec))
        undo.insert(0, "-D %s %s" % (parent, spec))

    def head():
        """Index after the leading jumps into `top` chains."""
        i = 0
        while i < len(pr) and target(pr[i]) in top:
            i += 1
        return i

    wanted = {j.spec for j in jumps}
    for spec in list(pr):
        if target(spec) in owned and spec not in wanted:
            delete(spec)
    for j in sorted(jumps, key=lambda j: not j.first):
        copies = [i for i, s in enumerate(pr) if s == j.spec]
        if j.first:
            in_place = len(copies) == 1 and copies[0] < head()
        else:
            in_place = len(copies) == 1 and copies[0] >= base(pr)
        if in_place:
            continue
        for _ in copies:
            delete(j.spec)
        insert(head() if j.first else base(pr), j.spec)
    return ops, undo


def _base_position(pr, own):
    """Index after the firmware's per-interface mark rules and after the Xray jump."""
    base = 0
    for i, spec in enumerate(pr):
        if FIRMWARE_MARK_RE.match(spec) or target(spec) == own.xray_chain:
            base = i + 1
    return base


def target(spec):
    parts = spec.split()
    return parts[parts.index("-j") + 1] if "-j" in parts[:-1] else None


def chain_undo(before, undo_jumps, table="mangle"):
    """Document that puts the touched chains and jumps back as they were."""
    rebuilt = [(n, rules) for n, rules in before.items() if rules is not None]
    created = [n for n, rules in before.items() if rules is None]
    doc = render.chain_doc(rebuilt, undo_jumps, [], table)
    if created:  # chains this step created are emptied and removed after the jumps are gone
        doc = doc.replace("COMMIT\n", "".join(":%s - [0:0]\n-X %s\n" % (n, n) for n in created) + "COMMIT\n")
    return doc
