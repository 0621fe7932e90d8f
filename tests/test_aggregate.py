"""CIDR aggregation (property tests) and the strict zone-line parser; no kernel needed."""

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vpn_director import aggregate, sets
from vpn_director.errors import DataError


def _prefix(start, plen):
    return start & ~((1 << (32 - plen)) - 1) & 0xFFFFFFFF, plen


# Dense prefixes inside one /20 overlap and touch often; sparse ones cover the whole space.
DENSE = st.tuples(st.integers(0x0A000000, 0x0A000FFF), st.integers(20, 32))
SPARSE = st.tuples(st.integers(0, 2 ** 32 - 1), st.integers(1, 32))
PREFIXES = st.lists(st.one_of(DENSE, SPARSE).map(lambda p: _prefix(*p)), max_size=60)


def covered(prefixes, addr):
    return any(s <= addr < s + (1 << (32 - p)) for s, p in prefixes)


def boundaries(*lists):
    """Every point where coverage can change: both unions are unions of intervals."""
    pts = set()
    for prefixes in lists:
        for s, p in prefixes:
            end = s + (1 << (32 - p))
            pts.update(x for x in (s - 1, s, end - 1, end) if 0 <= x < 2 ** 32)
    return pts


def mergeable(a, b):
    """Two prefixes that overlap, or together form exactly one larger aligned CIDR."""
    (s1, p1), (s2, p2) = a, b
    e1, e2 = s1 + (1 << (32 - p1)), s2 + (1 << (32 - p2))
    if s1 < e2 and s2 < e1:
        return True
    return p1 == p2 and p1 > 1 and s1 ^ s2 == 1 << (32 - p1)  # /1 + /1 would need a /0


@settings(max_examples=400, deadline=None)
@given(PREFIXES)
def test_aggregation_keeps_exactly_the_same_addresses(prefixes):
    out = aggregate.aggregate(prefixes)
    for x in boundaries(prefixes, out):
        assert covered(prefixes, x) == covered(out, x), "address %s" % ipaddress.IPv4Address(x)


@settings(max_examples=400, deadline=None)
@given(PREFIXES)
def test_aggregation_is_minimal(prefixes):
    out = aggregate.aggregate(prefixes)
    for i in range(len(out)):
        assert out[i] == _prefix(*out[i]), "not aligned: %r" % (out[i],)
        for j in range(i + 1, len(out)):
            assert not mergeable(out[i], out[j]), (out[i], out[j])
    # the standard library's collapse is minimal too; the counts agree (a /0 becomes two /1s)
    nets = [ipaddress.IPv4Network(p) for p in prefixes]
    expect = list(ipaddress.collapse_addresses(nets))
    assert len(out) == sum(2 if n.prefixlen == 0 else 1 for n in expect)


def test_adjacent_and_overlapping_prefixes_merge():
    prefixes = sets.parse_prefixes(["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/23", "10.0.1.128/25",
                                    "10.0.4.0/32", "10.0.4.1", "192.0.2.0/24"], "t")
    assert [aggregate.text(*p) for p in aggregate.aggregate_packed(prefixes)] == [
        "10.0.0.0/22", "10.0.4.0/31", "192.0.2.0/24"]
    assert sets.members(prefixes) == {"10.0.0.0/22", "10.0.4.0/31", "192.0.2.0/24"}
    assert sets.count_members(prefixes) == 3 and len(prefixes) == 7


def test_an_unaligned_range_splits_into_the_largest_blocks():
    lo, hi = 0x0A000005, 0x0A000014  # 10.0.0.5 .. 10.0.0.20
    assert [aggregate.text(*p) for p in aggregate.split(lo, hi)] == [
        "10.0.0.5", "10.0.0.6/31", "10.0.0.8/29", "10.0.0.16/30", "10.0.0.20"]


def test_the_whole_space_stays_storable():
    out = aggregate.aggregate([(0, 2), (1 << 30, 2), (2 << 30, 1)])
    assert [aggregate.text(*p) for p in out] == ["0.0.0.0/1", "128.0.0.0/1"]


def test_zone_lines_comments_host_bits_and_line_endings():
    text = "# header\r\n77.88.1.7/16\r\n\r\n5.255.255.0/24 # trailing comment\n  91.198.0.0/16  \n1.2.3.4\n"
    assert list(sets.parse_prefixes(text.splitlines(), "z")) == [aggregate.pack(*p) for p in [
        (0x4D580000, 16), (0x05FFFF00, 24), (0x5BC60000, 16), (0x01020304, 32)]]


@pytest.mark.parametrize("line", ["1.2.3", "1.2.3.4.5", "01.2.3.4", "256.1.1.1", "1.2.3.4/33", "1.2.3.4/",
                                  "1.2.3.4 /8", "<html>", "2001:db8::/32", "1.2.3.4-1.2.3.9", "0.0.0.0/0",
                                  "١.2.3.4"])
def test_a_bad_line_is_named(line):
    with pytest.raises(DataError) as e:
        sets.parse_prefixes(["10.0.0.0/8", line], "list.zone")
    assert str(e.value).startswith("list.zone:2: ")


def test_render_sorts_members_by_address_then_length():
    from vpn_director import render
    lines = render.set_lines("ru", {"10.0.0.0/8", "9.255.0.0/16", "10.0.0.0", "100.0.0.0/8"})
    assert lines[1:] == ["add ru 9.255.0.0/16", "add ru 10.0.0.0/8", "add ru 10.0.0.0", "add ru 100.0.0.0/8"]


def cidrs(*texts):
    return sets.Cidrs(sets.pack_member(t) for t in texts)


def test_packed_members_behave_like_a_frozenset_of_their_texts():
    c = cidrs("10.0.0.0/23", "1.2.3.4", "192.0.2.0/24")
    f = frozenset(["192.0.2.0/24", "1.2.3.4", "10.0.0.0/23"])
    assert c == f and f == c and not c != f and hash(c) == hash(f) and len(c) == 3
    assert list(c) == ["1.2.3.4", "10.0.0.0/23", "192.0.2.0/24"]  # address order
    assert "1.2.3.4" in c and "10.0.0.0/23" in c
    # only the exact text `ipset save` prints is a member
    for text in ("1.2.3.4/32", "10.0.0.1/23", "10.0.0.0/23 nomatch", "10.0.0.0", 7):
        assert text not in c and text not in f
    g = frozenset(["10.0.0.0/23", "10.0.0.0/8 nomatch"])
    assert c - g == f - g == {"1.2.3.4", "192.0.2.0/24"}
    assert g - c == g - f == {"10.0.0.0/8 nomatch"}
    assert c - cidrs("1.2.3.4") == {"10.0.0.0/23", "192.0.2.0/24"}
    assert isinstance(c - cidrs("1.2.3.4"), sets.Cidrs)
    assert c != cidrs("1.2.3.4") and cidrs() == frozenset()
    assert sets.Cidrs([5 << 6 | 32, 1 << 6 | 32, 5 << 6 | 32]) == {"0.0.0.1", "0.0.0.5"}  # sorted, unique


def test_live_sets_are_packed_unless_an_entry_has_flags():
    from vpn_director import live
    state = live.LiveState()
    live.parse_ipset_save(
        "create ru hash:net family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x1\n"
        "add ru 77.88.0.0/16\nadd ru 5.255.255.0/24\n"
        "create XRAY_CLIENTS hash:net family inet hashsize 1024 maxelem 65536\n"
        "add XRAY_CLIENTS 192.168.50.0/24\nadd XRAY_CLIENTS 192.168.50.7 nomatch\n"
        "create empty hash:net family inet\n", state)
    ru, xc = state.sets["ru"], state.sets["XRAY_CLIENTS"]
    assert isinstance(ru.members, sets.Cidrs) and ru.members == {"77.88.0.0/16", "5.255.255.0/24"}
    assert ru.header.startswith("family inet hashsize 1024 maxelem 65536")
    assert xc.members == {"192.168.50.0/24", "192.168.50.7 nomatch"}
    assert state.sets["empty"].members == frozenset()
