"""CIDR aggregation: merge overlapping and adjacent IPv4 prefixes into the fewest aligned CIDRs.

A prefix is a pair (start, prefixlen) with `start` the network address as an integer; large
lists travel packed, one int per prefix (`pack`), so that 100k-entry lists stay small. The
prefixes become integer intervals, sorted and merged, and each merged interval is split back
into the largest aligned blocks that fit, which is the smallest CIDR cover of it.
"""

FULL = 1 << 32


def pack(start, plen):
    """One int per prefix that sorts by address, then by length."""
    return (start << 6) | plen


def merge_packed(keys):
    """Sorted, disjoint, non-adjacent intervals (lo, hi), inclusive, covering packed prefixes."""
    lo = hi = -2
    for key in sorted(keys):
        start, plen = key >> 6, key & 63
        end = start + (1 << (32 - plen)) - 1
        if start <= hi + 1:
            if end > hi:
                hi = end
            continue
        if hi >= 0:
            yield lo, hi
        lo, hi = start, end
    if hi >= 0:
        yield lo, hi


def split(lo, hi):
    """The aligned CIDRs that exactly cover [lo, hi], largest first where alignment allows."""
    out = []
    while lo <= hi:
        size = lo & -lo if lo else FULL
        # hash:net cannot hold a /0, so the whole space stays two /1s
        size = min(size, FULL >> 1)
        while size > hi - lo + 1:
            size >>= 1
        out.append((lo, 33 - size.bit_length()))
        lo += size
    return out


def aggregate_packed(keys):
    """Yield the minimal (start, prefixlen) cover of the addresses of packed prefixes."""
    for lo, hi in merge_packed(keys):
        yield from split(lo, hi)


def aggregate(prefixes):
    """The minimal list of (start, prefixlen) covering exactly the addresses of `prefixes`."""
    return list(aggregate_packed(pack(s, p) for s, p in prefixes))


_OCTETS = [str(i) for i in range(256)]
_SUFFIX = ["/%d" % i for i in range(32)] + [""]


def text(start, plen):
    """As `ipset save` prints a hash:net entry: host routes without /32."""
    o = _OCTETS
    return "%s.%s.%s.%s%s" % (o[start >> 24], o[(start >> 16) & 255], o[(start >> 8) & 255], o[start & 255],
                              _SUFFIX[plen])


def texts(keys):
    """text() of packed prefixes, in their order; table look-ups keep 100k entries cheap."""
    o, suffix = _OCTETS, _SUFFIX
    return ["%s.%s.%s.%s%s" % (o[k >> 30], o[(k >> 22) & 255], o[(k >> 14) & 255], o[(k >> 6) & 255],
                               suffix[k & 63]) for k in keys]
