"""Synthetic country lists with a realistic prefix-length mix (used by kernel tests and bench/ipsets.py)."""

import random

from vpn_director import aggregate

# Roughly the shape of RIR-derived country lists: mostly /16../24, a few larger and smaller.
LENGTHS = [(24, 40), (23, 12), (22, 15), (21, 8), (20, 7), (19, 5), (18, 3), (17, 2), (16, 4),
           (15, 1), (13, 0.5), (26, 1), (28, 1), (32, 0.5)]
PUBLIC = (1 << 24, 224 << 24)  # 1.0.0.0 up to the multicast range


def synthetic(n, seed, avoid=()):
    """About `n` random prefixes [(start, prefixlen)] in public space, none inside `avoid` (/8 numbers)."""
    rng = random.Random(seed)
    lengths, weights = zip(*LENGTHS)
    out = []
    while len(out) < n:
        plen = rng.choices(lengths, weights)[0]
        start = rng.randrange(*PUBLIC) & ~((1 << (32 - plen)) - 1)
        if start >> 24 not in avoid:
            out.append((start, plen))
    return out


def spaced_24s(n, first=1 << 24):
    """`n` /24s with a gap after each, so that no two merge: n set members exactly."""
    return [(first + (i << 9), 24) for i in range(n)]


def zone_text(prefixes, header="# synthetic list\n"):
    return header + "".join(aggregate.text(s, p) + ("/32\n" if p == 32 else "\n") for s, p in prefixes)
