"""The watchdog's cheap look at the sets: kernel headers against the record of what was loaded.

Reading the members of every set (`ipset save`) is most of a no-op watchdog run once country
lists are large: 91k lines to print, read and pack, every minute, for sets that almost never
change. The kernel keeps an entry count per set, which `ipset list -t` prints without the
members. After every run that leaves a set equal to the desired one, the record keeps its entry
count and a digest of its members (`loaded`). A later watchdog run trusts a set without reading
its members only when all of these hold:

* the desired members now have the recorded digest (the config and lists did not change);
* the kernel has the set, of our type (hash:net, family inet);
* its entry count is the recorded one.

Anything else (a set destroyed, flushed, with an entry added or deleted, a changed list, no
record, an ipset without entry counts) sends the run to the exact full read. What it cannot see:
a change that keeps the count, e.g. one entry deleted and another added by hand. An explicit
`apply` and `status` always read every member.
"""

import zlib

from .live import LiveSet
from .sets import Cidrs


def fingerprint(members):
    """[entries, digest] of a set's members, packed (sets.Cidrs) or texts. The digest tells a
    changed list from the loaded one (two 32-bit checksums beside the count; a cryptographic hash
    would load OpenSSL at every start, and nobody forges a country list to fool the watchdog)."""
    data = b"packed\0" + members.packed() if isinstance(members, Cidrs) else "\n".join(sorted(members)).encode()
    return [len(members), "%08x%08x" % (zlib.crc32(data), zlib.adler32(data))]


def loaded(full, scope_sets, previous):
    """The record's `loaded` after a run that made `scope_sets` equal to the desired ones; the
    entries of desired sets outside the scope are kept from the previous record."""
    names = {s.name for s in full.sets}
    out = {n: v for n, v in (previous or {}).items() if n in names}
    out.update((s.name, fingerprint(s.members)) for s in scope_sets)
    return out


def parse_headers(text):
    """`ipset list -t` -> {name: (type, header, entries or None)}."""
    out = {}
    for block in text.split("\n\n"):
        fields = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        name = fields.get("Name")
        if name:
            count = fields.get("Number of entries", "")
            out[name] = (fields.get("Type", ""), fields.get("Header", ""), int(count) if count.isdigit() else None)
    return out


def trusted_sets(full, record, headers):
    """The live sets as LiveSets when every desired set passes the checks above (the desired
    members stand in for the kernel's); None when any does not: read them in full. Sets that are
    not desired get empty members; a plan that touches them is made again from the full read."""
    was = record.get("loaded")
    if not isinstance(was, dict):
        return None
    out = {}
    for s in full.sets:
        head, vouched = headers.get(s.name), was.get(s.name)
        if head is None or not (isinstance(vouched, list) and len(vouched) == 2):
            return None
        typ, header, entries = head
        if typ != "hash:net" or not header.startswith("family inet ") or entries != vouched[0]:
            return None
        if fingerprint(s.members) != vouched:
            return None
        out[s.name] = LiveSet(s.name, typ, header, s.members)
    for name, (typ, header, _) in headers.items():
        out.setdefault(name, LiveSet(name, typ, header, frozenset()))
    return out
