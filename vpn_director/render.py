"""Text of the batches: `ipset restore` scripts, `iptables-restore --noflush` documents, `ip -batch` lines."""

from . import sets
from .model import rule_words

TMP_PREFIX = "vpd-tmp-"


def _key(member):
    # One int per member (address, then length): cheap to hold for 100k-entry sets.
    addr, _, plen = member.split(" ", 1)[0].partition("/")
    a, b, c, d = addr.split(".")
    return (((int(a) << 24) | (int(b) << 16) | (int(c) << 8) | int(d)) << 6) | int(plen or 32)


def sort_members(members):
    if isinstance(members, sets.Cidrs):
        return list(members)  # already in address order
    return sorted(members, key=_key)


def set_lines(name, members):
    """create + add lines for one hash:net set, members in address order (stable output)."""
    hashsize, maxelem = sets.sizing(len(members))
    lines = ["create %s hash:net family inet hashsize %d maxelem %d" % (name, hashsize, maxelem)]
    lines += ["add %s %s" % (name, m) for m in sort_members(members)]
    return lines


def set_text(name, members):
    """set_lines as one string (no final newline): a batch holds one string per set, not per entry."""
    return "\n".join(set_lines(name, members))


def chain_doc(chains, jump_ops, deleted_chains, table="mangle"):
    """One transaction on a table (mangle; IPv6's filter): declare (= flush) and refill chains,
    move jumps, delete chains.

    chains: [(name, [rule specs])]; jump_ops: ["-D PREROUTING ...", "-I PREROUTING N ..."] in
    execution order; deleted_chains: names whose jumps the ops already removed.
    """
    lines = ["*" + table]
    lines += [":%s - [0:0]" % name for name, _ in chains]
    lines += [":%s - [0:0]" % name for name in deleted_chains]
    for name, rules in chains:
        lines += ["-A %s %s" % (name, r) for r in rules]
    lines += list(jump_ops)
    lines += ["-X %s" % name for name in deleted_chains]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def rule_line(verb, pref, text):
    """`ip rule` batch line from the text `ip rule show` prints ("from all fwmark M/K lookup T")."""
    return "rule %s pref %d %s" % (verb, pref, rule_words(text))


def route_line(verb, spec, table):
    return "route %s %s table %d" % (verb, spec, table)
