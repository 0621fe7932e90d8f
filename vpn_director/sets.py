"""Set contents: zone files, canonical member text, and sizing for hash:net."""

import os
import struct
import sys
import zlib
from array import array
# socket's C half: socket.py itself builds its enums at import, a millisecond at every start
from _socket import inet_aton
from bisect import bisect_left
from collections.abc import Set as AbstractSet

from . import aggregate
from .errors import DataError
from .patterns import compiled

_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
# Strict dotted quad (no leading zeros, which some parsers read as octal) and an optional length.
CIDR_RE = compiled(r"^%s\.%s\.%s\.%s(?:/(3[0-2]|[12]?[0-9]))?$" % ((_OCTET,) * 4))
# Zone files as read from data_dir: the largest real list is well under 1 MiB and its lines are
# under 20 characters (comments aside); anything far beyond is corrupt, not a list.
ZONE_MAX_BYTES = 64 << 20
ZONE_MAX_LINE = 4096


def member(net, nomatch=False):
    """A network as `ipset save` prints a hash:net entry (host routes without /32)."""
    text = str(net.network_address) if net.prefixlen == 32 else str(net)
    return text + " nomatch" if nomatch else text


def zone_path(data_dir, cc):
    return os.path.join(data_dir, "ipsets", "%s.zone" % cc)


def parse_prefixes(lines, origin):
    """Zone lines (one CIDR each, `#` comments, blank lines) -> packed prefixes (aggregate.pack).

    An array of 8-byte ints: a 150k-entry list takes 1.2 MB, not tens. Host bits are masked off,
    as ipset does. Raises DataError naming the first bad line.
    """
    out = array("Q")
    append = out.append
    match = CIDR_RE.match
    for lineno, line in enumerate(lines, start=1):
        if "#" in line:
            line = line.split("#", 1)[0]
        line = line.strip()
        if not line:
            continue
        m = match(line)
        if m is None:
            raise DataError("%s:%d: %r is not an IPv4 CIDR" % (origin, lineno, line[:60]))
        a, b, c, d, plen = m.groups()
        plen = 32 if plen is None else int(plen)
        if plen == 0:
            raise DataError("%s:%d: 0.0.0.0/0 cannot be stored in a hash:net set" % (origin, lineno))
        start = (int(a) << 24) | (int(b) << 16) | (int(c) << 8) | int(d)
        append(aggregate.pack(start & ~((1 << (32 - plen)) - 1), plen))
    return out


def read_prefixes(path):
    """The packed prefixes of a zone file, read line by line (lists can be large).

    Bounded, as downloads are: a file over ZONE_MAX_BYTES is refused before it is read and a
    line over ZONE_MAX_LINE characters as soon as it is met, so a corrupt file cannot take the
    router's memory. A file without entries is refused like an empty download: applied, it would
    empty a live country set.
    """
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > ZONE_MAX_BYTES:
                raise DataError("country list %s: %d bytes, more than the %d MiB a list may have; run "
                                "`vpn-director update` to download it again" % (path, size, ZONE_MAX_BYTES >> 20))
            prefixes = parse_prefixes(_bounded_lines(fh, path), path)
    except OSError as e:
        hint = "; run `vpn-director update` to download it" if not os.path.exists(path) else ""
        raise DataError("country list %s: %s%s" % (path, e.strerror or e, hint))
    if not prefixes:
        raise DataError("country list %s has no entries; run `vpn-director update` to download it again" % path)
    return prefixes


def _bounded_lines(fh, path):
    """The lines of `fh`, none held longer than ZONE_MAX_LINE characters (a file without
    newlines would otherwise be read whole as one line)."""
    for lineno, line in enumerate(iter(lambda: fh.readline(ZONE_MAX_LINE + 1), ""), start=1):
        if len(line) > ZONE_MAX_LINE and not line.endswith("\n"):
            raise DataError("%s:%d: line longer than %d characters; run `vpn-director update` to download "
                            "the list again" % (path, lineno, ZONE_MAX_LINE))
        yield line


AGG_MAGIC = b"vpd-agg 1"


def load_country(path):
    """(aggregated members, entries as listed) of a zone file.

    The aggregate is kept beside the list (`<cc>.agg`, keyed by the list's size and mtime), so a
    run that finds the list unchanged reads 8 bytes an entry instead of parsing and merging
    again: that is most of a cold `trace` or a no-op apply with large lists.
    """
    key = _cache_key(path)
    if key:
        try:
            with open(_cache_path(path), "rb") as fh:
                head = fh.readline().split()
                body = fh.read()
                if b" ".join(head[:5]) == key and int(head[6]) == zlib.crc32(body):
                    keys = array("Q")
                    keys.frombytes(body)
                    return Cidrs(keys, ordered=True), int(head[5])
        except (OSError, ValueError, IndexError):
            pass
    prefixes = read_prefixes(path)
    result = members(prefixes)
    store_country_cache(path, result, len(prefixes))
    return result, len(prefixes)


def store_country_cache(path, cidrs, listed):
    """Keep the aggregate of the zone file `path` as it is now (`update` calls this right after
    writing a list, so the apply that follows does not parse it again)."""
    key = _cache_key(path)
    if not key:
        return
    cache = _cache_path(path)
    try:
        tmp = "%s.%d.tmp" % (cache, os.getpid())
        with open(tmp, "wb") as fh:
            body = cidrs._keys.tobytes()
            fh.write(key + b" %d %d\n" % (listed, zlib.crc32(body)))
            fh.write(body)
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only data_dir only costs time


def _cache_path(path):
    return path[:-len(".zone")] + ".agg" if path.endswith(".zone") else path + ".agg"


def _cache_key(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return b"%s %d %d %s" % (AGG_MAGIC, st.st_size, st.st_mtime_ns, sys.byteorder.encode())


def no_country(path):
    """A loader for runs that need no set contents (stop, the download checks)."""
    return Cidrs(), 0


def members(packed):
    """Aggregated set members of packed prefixes, as `ipset save` prints them."""
    return Cidrs((aggregate.pack(s, p) for s, p in aggregate.aggregate_packed(packed)), ordered=True)


def count_members(packed):
    return sum(1 for _ in aggregate.aggregate_packed(packed))


def pack_member(text):
    """The packed prefix of a member exactly as `ipset save` prints it, else None (flags, /32...)."""
    m = CIDR_RE.match(text) if isinstance(text, str) else None
    if m is None or m.group(5) in ("0", "32"):
        return None
    a, b, c, d, plen = m.groups()
    plen = 32 if plen is None else int(plen)
    start = (int(a) << 24) | (int(b) << 16) | (int(c) << 8) | int(d)
    return None if start & ((1 << (32 - plen)) - 1) else aggregate.pack(start, plen)


_UNPACK = struct.Struct("!I").unpack


def pack_kernel(text):
    """pack_member for ipset's own output, which is always canonical: no validation needed."""
    addr, sep, plen = text.partition("/")
    return (_UNPACK(inet_aton(addr))[0] << 6) | (int(plen) if sep else 32)


class Cidrs(AbstractSet):
    """A frozenset of member texts ("77.88.0.0/16") stored as sorted packed ints: 8 bytes an
    entry instead of ~100, which keeps 100k-entry country sets within a router's memory.

    Compares, subtracts and tests membership like a frozenset of the same texts.
    """

    __slots__ = ("_keys",)

    def __init__(self, keys=(), ordered=False):
        """`ordered`: the keys are known to be sorted and unique (aggregated, or a checked cache)."""
        self._keys = keys if isinstance(keys, array) else array("Q", keys)
        if not ordered and any(self._keys[i] >= self._keys[i + 1] for i in range(len(self._keys) - 1)):
            self._keys = array("Q", sorted(set(self._keys)))

    @classmethod
    def _from_iterable(cls, items):
        return frozenset(items)  # mixed results (with foreign texts) fall back to a frozenset

    def __len__(self):
        return len(self._keys)

    def __iter__(self):  # in address order, as render wants them
        return iter(aggregate.texts(self._keys))

    def __contains__(self, text):
        key = pack_member(text)
        return key is not None and _has(self._keys, key)

    def __eq__(self, other):
        if isinstance(other, Cidrs):
            return self._keys == other._keys
        return AbstractSet.__eq__(self, other)

    def __ne__(self, other):
        return not self == other

    __hash__ = AbstractSet._hash

    def __sub__(self, other):
        if isinstance(other, Cidrs):
            theirs = other._keys
            return Cidrs(array("Q", (k for k in self._keys if not _has(theirs, k))), ordered=True)
        return AbstractSet.__sub__(self, other)

    def __repr__(self):
        return "Cidrs(%d entries)" % len(self)

    def packed(self):
        """The sorted packed keys as bytes (what the watchdog's set digest hashes)."""
        return self._keys.tobytes()


def _has(keys, key):
    i = bisect_left(keys, key)
    return i < len(keys) and keys[i] == key


def sizing(count):
    """hashsize/maxelem for `count` entries: room to grow, never below ipset's defaults."""
    maxelem = 65536
    while maxelem < count * 2:
        maxelem *= 2
    hashsize = 1024
    while hashsize < count // 4:
        hashsize *= 2
    return hashsize, maxelem
