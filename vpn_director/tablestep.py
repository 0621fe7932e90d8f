"""The plan for one iptables table besides mangle: our chains rebuilt, their jumps at the top of
built-in chains, stale chains deleted, in one `*-restore --noflush` commit with an exact undo
document. The DNS chains (iptables nat and filter) and the IPv6 block (ip6tables filter) both
go through it; the mangle step (reconcile.py) has the same shape over the same helpers
(reconcile.place_jumps, reconcile.chain_undo). `td` is a model.TableDesired.
"""

from . import reconcile, render
from .model import components


def owned_chains(td, live, scope, recorded, warnings):
    """{chain: component} of ours in scope: the fixed names, and the recorded ones while they
    hold nothing but rules we write."""
    comps = set(components(scope))
    owned = {td.names[c]: c for c in comps if c in td.names}
    for n, c in recorded.items():
        if c in comps and n not in owned:
            if n in live.chains and not reconcile.looks_like_ours(live.chains[n], td.ours):
                warnings.append("%s chain %s is in the record but holds rules vpn-director does not write; "
                                "left alone" % (td.warn_word or td.table, n))
                continue
            owned[n] = c
    return owned


def jump_ops(td, live, scope, owned, recorded, stop=False):
    """(ops, undo) for the parents: our jumps in scope at the top, unwanted ones out."""
    comps = set(components(scope))
    top = set(td.names.values()) | set(recorded)
    ops, undo = [], []
    for parent in td.parents:
        jumps = [] if stop else [j for j in td.jumps.get(parent, []) if j.component in comps]
        o, u = reconcile.place_jumps(parent, live.chains.get(parent, []), jumps, owned, top=top)
        ops += o
        undo = u + undo  # undone in reverse order of the parents
    return ops, undo


def plan(td, live, scope, recorded, stop=False):
    """(step or None, {chain: component} owned afterwards, warnings) for this table's `live` state;
    `recorded` is {chain: component} from the record."""
    comps = set(components(scope))
    warnings = []
    owned = owned_chains(td, live, scope, recorded, warnings)
    wanted = [] if stop else [c for c in td.chains if c.component in comps]
    names = {c.name for c in wanted}
    stale = sorted(n for n in owned if n not in names and n in live.chains)
    refresh = [] if stop or not td.refresh_outside else [
        c for c in td.chains if c.component not in comps and c.name in live.chains
        and reconcile.looks_like_ours(live.chains[c.name], td.ours)]
    rebuild = [c for c in wanted + refresh if live.chains.get(c.name) != list(c.rules)]
    ops, undo = jump_ops(td, live, scope, owned, recorded, stop)
    after = {n: c for n, c in recorded.items() if c not in comps and n in live.chains}
    after.update({c.name: c.component for c in wanted})
    step = None
    if rebuild or ops or stale:
        before = {c.name: live.chains.get(c.name) for c in rebuild}
        before.update({n: live.chains[n] for n in stale})
        step = reconcile.Step(td.step_name, td.tool,
                              render.chain_doc([(c.name, c.rules) for c in rebuild], ops, stale, td.table),
                              reconcile.chain_undo(before, undo, td.table))
        word = td.change_word or td.table
        step.changes += ["%s chain %s: %s (%d rules)" % (word, c.name, "rebuilt" if c.name in live.chains
                                                         else "created", len(c.rules)) for c in rebuild]
        step.changes += ["%s jump: %s" % (word, op) for op in ops]
        step.changes += ["%s chain %s: removed" % (word, n) for n in stale]
    return step, after, warnings
