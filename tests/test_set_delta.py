"""Delta or full swap for a changed country set: the rule and the order of the batch (no kernel needed)."""

import pytest
from vpn_director.errors import DataError
from vpn_director import reconcile
from vpn_director.live import LiveSet, LiveState
from vpn_director.model import SHARED, DesiredState, Ownership, SetSpec

OWN = Ownership("br0", "XRAY_TPROXY", "TUN_DIR", 200, 0x100, (16384, 16638), 0xFF0000, 100,
                ("XRAY_CLIENTS", "XRAY_SERVERS"))
HEADER = "family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x5a5a5a5a"
OLD = frozenset(["10.0.0.0/23"] + ["100.%d.0.0/16" % i for i in range(20)])
NEW = frozenset(["10.0.0.0/24", "10.0.1.0/24"] + ["100.%d.0.0/16" % i for i in range(20)])


def step(new, old=OLD, header=HEADER, country=True, name="ru"):
    live = LiveState(sets={name: LiveSet(name, "hash:net", header, old)})
    d = DesiredState(ownership=OWN, sets=[SetSpec(name, new, SHARED, country=country)])
    return reconcile._sets_step(d, live)[0]


def test_small_change_is_a_delta_with_adds_before_dels():
    s = step(NEW)
    assert s.batch.splitlines() == ["add ru 10.0.0.0/24", "add ru 10.0.1.0/24", "del ru 10.0.0.0/23"]
    assert s.changes == ["set ru: +2 -1 entries (delta)"]
    # the undo also never uncovers an address: the old prefix comes back before the new ones go
    assert s.undo.splitlines() == ["add ru 10.0.0.0/23", "del ru 10.0.0.0/24", "del ru 10.0.1.0/24"]


def test_large_change_is_a_full_swap():
    new = frozenset("101.%d.0.0/16" % i for i in range(20))
    s = step(new)
    lines = s.batch.splitlines()
    assert lines[0].startswith("create vpd-tmp-0 hash:net family inet ")
    assert lines[-1] == "swap vpd-tmp-0 ru" and len(lines) == 22
    assert s.changes == ["set ru: +20 -21 entries (swapped)"]
    assert s.undo.splitlines() == ["swap vpd-tmp-0 ru", "destroy vpd-tmp-0"]


def test_the_rule_threshold():
    base = frozenset("100.%d.0.0/16" % i for i in range(30))
    five = frozenset("101.%d.0.0/16" % i for i in range(5))
    # 30 -> 30 members with 5 added and 5 removed: 10 changes, one third of 30
    at_limit = (base - frozenset(sorted(base)[:5])) | five
    assert "(delta)" in step(at_limit, old=base).changes[0]
    # one more change than a third: swap
    over = (base - frozenset(sorted(base)[:6])) | five
    assert "(swapped)" in step(over, old=base).changes[0]


def test_a_delta_that_would_overflow_maxelem_is_a_swap():
    tight = HEADER.replace("maxelem 65536", "maxelem 22")
    assert "(swapped)" in step(NEW, header=tight).changes[0]
    assert "(delta)" in step(NEW, header=HEADER.replace("maxelem 65536", "maxelem 23")).changes[0]


def test_sets_with_extensions_or_not_ours_are_swapped():
    assert "(swapped)" in step(NEW, header=HEADER + " counters").changes[0]
    assert "(swapped)" in step(NEW, country=False, name="XRAY_SERVERS").changes[0]


def test_set_of_another_family_is_refused_before_any_line():
    # a swap with an inet6 set fails half-way through the batch: refused while planning instead
    with pytest.raises(DataError, match="exists as hash:net family inet6"):
        step(NEW, header=HEADER.replace("inet", "inet6"))
