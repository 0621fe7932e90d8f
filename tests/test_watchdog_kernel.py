"""On a real kernel: the watchdog's cheap check (set headers against the record of what was
loaded) still catches every disruption it claims, hands each to the exact read, and repairs it;
an explicit apply repairs what the cheap check cannot see (a same-size content swap)."""

import json

import pytest

from test_apply_kernel import FULL

pytestmark = pytest.mark.kernel

# a 300-prefix list that aggregation leaves as it is (no two neighbours)
RU = "".join("10.%d.%d.0/24\n" % (i // 100, i % 100 * 2) for i in range(300))


def watch(router, cfg, tmp_path):
    """One watchdog run: (its -v output, the read-only tools it ran, its writes)."""
    stats = tmp_path / "stats.json"
    p = router.vpd("-v", "apply", "--if-changed", config=cfg, check=0, env={"VPD_STATS": str(stats)})
    s = json.loads(stats.read_text())
    return p.stdout, [" ".join(a[:3]) for a in s["reads"]], s["steps"]


@pytest.fixture
def applied(router, tmp_path):
    router.zone("ru", RU)
    cfg = router.config(dict(FULL, advanced={"watchdog": {"min_interval": 0}}))
    router.vpd("apply", config=cfg, check=0)
    return cfg, router.snapshot()


def test_a_matching_state_is_checked_without_reading_set_members(router, applied, tmp_path):
    cfg, good = applied
    out, reads, writes = watch(router, cfg, tmp_path)
    assert "live state matches the config" in out and writes == []
    assert "ipset list -t" in reads and "ipset save" not in reads
    assert router.snapshot() == good


def _ipt(router, args):
    router.ns.sh("iptables-%s -t mangle %s" % (router.backend, args))


JUMP = "-i br0 -m mark --mark 0x0/0xff0000 -j TUN_DIR"
CASES = {
    # name: (how the disruption is made, the step that must repair it)
    "chain flushed": (lambda r: _ipt(r, "-F TUN_DIR"), "update mangle chains and jumps"),
    "chain deleted": (lambda r: _ipt(r, "-D PREROUTING " + JUMP) or _ipt(r, "-F TUN_DIR") or _ipt(r, "-X TUN_DIR"),
                      "update mangle chains and jumps"),
    "jump moved": (lambda r: _ipt(r, "-D PREROUTING " + JUMP) or _ipt(r, "-I PREROUTING 1 " + JUMP),
                   "update mangle chains and jumps"),
    "rule deleted": (lambda r: r.ns.sh("ip rule del pref 16384"), "ip rules and routes"),
    "route deleted": (lambda r: r.ns.sh("ip route flush table 100"), "ip rules and routes"),
    "set flushed": (lambda r: r.ns.sh("ipset flush ru"), "load sets"),
    "member deleted": (lambda r: r.ns.sh("ipset del ru 10.0.14.0/24"), "load sets"),
    "member added": (lambda r: r.ns.sh("ipset add ru 192.0.2.0/24"), "load sets"),
    # a set in use cannot be destroyed: a firewall rebuild empties the mangle table first
    "set destroyed": (lambda r: _ipt(r, "-F") or _ipt(r, "-X") or r.ns.sh("ipset destroy ru"), "load sets"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_disruption_is_found_and_repaired(router, applied, tmp_path, case):
    cfg, good = applied
    watch(router, cfg, tmp_path)  # the record now vouches for the sets
    disrupt, step = CASES[case]
    disrupt(router)
    assert router.snapshot() != good
    out, reads, _ = watch(router, cfg, tmp_path)
    assert "drift repaired" in out and step in out, out
    assert router.snapshot() == good
    router.vpd("status", config=cfg, check=0)
    if step == "load sets":
        assert "ipset save" in reads  # the repair was planned from the exact read
    out, reads, writes = watch(router, cfg, tmp_path)  # and the next check is cheap again
    assert "live state matches" in out and writes == [] and "ipset save" not in reads


def test_same_size_swap_is_what_the_watchdog_cannot_see_and_apply_repairs(router, applied, tmp_path):
    cfg, good = applied
    watch(router, cfg, tmp_path)
    router.ns.sh("ipset del ru 10.0.14.0/24 && ipset add ru 192.0.2.0/24")  # same count, other content
    out, _, writes = watch(router, cfg, tmp_path)
    assert "live state matches" in out and writes == []  # documented blind spot
    router.vpd("status", config=cfg, check=3)  # status reads every member
    out = router.vpd("-v", "apply", config=cfg, check=0).stdout
    assert "set ru: +1 -1 entries" in out
    assert router.snapshot() == good


def test_a_changed_list_is_not_vouched_for(router, applied, tmp_path):
    """The record vouches for what was loaded: a list that changed since (same size) is read and applied."""
    cfg, good = applied
    watch(router, cfg, tmp_path)
    router.zone("ru", RU.replace("10.0.14.0/24", "192.0.2.0/24"))
    out, reads, _ = watch(router, cfg, tmp_path)
    assert "drift repaired" in out and "set ru: +1 -1 entries" in out and "ipset save" in reads
    assert "192.0.2.0/24" in router.ns.run(["ipset", "save", "ru"]).stdout
