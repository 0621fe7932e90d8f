"""apply / stop / status against a real kernel in a throw-away namespace, under both iptables backends."""

import json
import re

import pytest

from doc_examples import EXAMPLE_1, EXAMPLE_2, EXAMPLE_3, MANGLE, RULES, TUN_JUMP, XRAY_JUMP, XRAY_ROUTE
from netns import Router

pytestmark = pytest.mark.kernel

EXAMPLES = {1: EXAMPLE_1, 2: EXAMPLE_2, 3: EXAMPLE_3}
BASE_RULES = ["0:\tfrom all lookup 255", "32766:\tfrom all lookup 254", "32767:\tfrom all lookup 253"]

FULL = {
    "xray": {"clients": ["192.168.50.10", "192.168.50.64/27"], "servers": ["203.0.113.10"],
             "exclude_ips": ["198.51.100.0/24"], "exclude_sets": ["ru"]},
    "tunnel_director": {"tunnels": {
        "wgc1": {"clients": ["192.168.50.0/24"], "exclude": ["ru"]},
        "ovpnc1": {"clients": ["192.168.1.5"], "exclude": ["ua", "ru"]},
    }},
}


def rules_n(router):
    return router.ns.run(["ip", "-N", "rule", "show"]).stdout.splitlines()


def prerouting(router):
    return router.chain("PREROUTING")


@pytest.mark.parametrize("n", [1, 2, 3])
def test_document_examples_apply_exactly(router, n):
    router.vpd("apply", config=router.config(EXAMPLES[n]), check=0)
    assert router.iptables_save() == MANGLE[n]
    assert rules_n(router) == BASE_RULES[:1] + RULES[n] + BASE_RULES[1:]
    assert router.routes(100).strip() == (XRAY_ROUTE if n != 2 else "")


def test_apply_twice_changes_nothing(router):
    cfg = router.config(FULL)
    router.vpd("apply", config=cfg, check=0)
    before = router.snapshot()
    stats = router.tmp / "stats.json"
    out = router.vpd("apply", "-v", config=cfg, check=0, env={"VPD_STATS": str(stats)})
    assert "no changes" in out.stdout
    assert router.snapshot() == before
    # four reads (iptables-save, ipset save, one ip batch of reads, ip6tables-save for the IPv6
    # block of the routed clients), nothing written
    stats = json.loads(stats.read_text())
    assert (stats["calls"], stats["writes"], stats["steps"]) == (4, 0, [])
    assert [argv[:2] for argv in stats["reads"]] == [  # an explicit apply reads every set member
        ["iptables-%s-save" % router.backend, "-t"], ["ipset", "save"], ["ip", "-N"],
        ["ip6tables-%s-save" % router.backend, "-t"]]
    assert router.vpd("status", config=cfg).returncode == 0


def test_firmware_mark_rules_come_before_tunnel_jump(router):
    router.ns.sh("iptables-%s -t mangle -A PREROUTING -i tun11 -j MARK --set-xmark 0x1/0x1 && "
                 "iptables-%s -t mangle -A PREROUTING -i wgc1 -j MARK --set-xmark 0x1/0x1"
                 % (router.backend, router.backend))
    firmware = ["-i tun11 -j MARK --set-xmark 0x1/0x1", "-i wgc1 -j MARK --set-xmark 0x1/0x1"]
    tunnel_only = router.config(EXAMPLE_2, "t.json")
    both = router.config(EXAMPLE_3, "b.json")
    router.vpd("apply", config=tunnel_only, check=0)
    assert prerouting(router) == firmware + [TUN_JUMP]
    router.vpd("apply", config=both, check=0)  # Xray added later still lands at 1
    assert prerouting(router) == [XRAY_JUMP] + firmware + [TUN_JUMP]
    router.vpd("stop", config=both, check=0)
    router.vpd("apply", "xray", config=both, check=0)
    router.vpd("apply", "tunnel", config=both, check=0)
    assert prerouting(router) == [XRAY_JUMP] + firmware + [TUN_JUMP]


def test_jumps_moved_back_when_others_push_them(router):
    cfg = router.config(EXAMPLE_3)
    router.vpd("apply", config=cfg, check=0)
    ipt = "iptables-%s -t mangle " % router.backend
    # another tool inserts at 1; the firmware appends a mark rule after our tunnel jump
    router.ns.sh(ipt + "-I PREROUTING 1 -i eth9 -j RETURN && " + ipt + "-A PREROUTING -i wgc2 -j MARK --set-xmark 0x1/0x1")
    st = router.vpd("status", config=cfg, check=3)
    assert "MISMATCH jump     PREROUTING -> XRAY_TPROXY" in st.stdout
    assert "MISMATCH jump     PREROUTING -> TUN_DIR" in st.stdout
    router.vpd("apply", config=cfg, check=0)
    assert prerouting(router) == [XRAY_JUMP, "-i eth9 -j RETURN", "-i wgc2 -j MARK --set-xmark 0x1/0x1", TUN_JUMP]
    router.vpd("status", config=cfg, check=0)


DRIFTS = {
    "chain rule": ("iptables-{b} -t mangle -D TUN_DIR 1", "TUN_DIR"),
    "whole chain flushed": ("iptables-{b} -t mangle -F XRAY_TPROXY", "XRAY_TPROXY"),
    "xray jump": ("iptables-{b} -t mangle -D PREROUTING -i br0 -j XRAY_TPROXY", "PREROUTING -> XRAY_TPROXY"),
    "tunnel ip rule": ("ip rule del pref 16385", "16385"),
    "xray ip rule": ("ip rule del pref 200", "200"),
    "route": ("ip route flush table 100", "table 100"),
    "set member": ("ipset del XRAY_CLIENTS 192.168.50.10", "XRAY_CLIENTS"),
    "extra set member": ("ipset add ru 1.2.3.0/24", "ru"),
}


@pytest.mark.parametrize("kind", sorted(DRIFTS))
def test_drift_is_reported_and_restored(router, kind):
    cfg = router.config(FULL)
    router.vpd("apply", config=cfg, check=0)
    good = router.snapshot()
    cmd, name = DRIFTS[kind]
    router.ns.sh(cmd.format(b=router.backend))
    st = router.vpd("status", config=cfg, check=3)
    bad = [l for l in st.stdout.splitlines() if l.startswith(("MISSING", "MISMATCH"))]
    assert any(name in l for l in bad), st.stdout
    router.vpd("apply", config=cfg, check=0)
    assert router.snapshot() == good
    router.vpd("status", config=cfg, check=0)


@pytest.mark.parametrize("rule", ["pref 16000 fwmark 0x10000/0xff0000 lookup 112",
                                  "pref 200 from 192.168.50.0/24 fwmark 0x100/0x100 lookup 150",
                                  "pref 16390 fwmark 0x70000/0xff0000 lookup 111"])
def test_foreign_rules_are_reported_never_removed(router, rule):
    """Only exact selectors we created are ours: a rule somebody else put at our priorities or
    with our mask stays through apply and stop; status flags it when it sees our marks first."""
    cfg = router.config(FULL)
    router.ns.sh("ip rule add " + rule)
    router.vpd("apply", config=cfg, check=0)
    shown = [l for l in rules_n(router) if l.startswith(rule.split()[1] + ":")]
    assert len(shown) == 2 if rule.startswith("pref 200") else len(shown) == 1, shown
    # the first two see our marks first (16000 < 16384; the same 200 but added before ours)
    catches = "0x70000" not in rule
    st = router.vpd("status", config=cfg, check=3 if catches else 0)
    if catches:
        assert "MISMATCH ip rule  %s" % rule.split()[1] in st.stdout and "ahead of our rule" in st.stdout
    router.vpd("stop", config=cfg, check=0)
    assert any(l.startswith(rule.split()[1] + ":") for l in rules_n(router))


def test_status_json(router):
    import json
    cfg = router.config(EXAMPLE_3)
    router.vpd("apply", config=cfg, check=0)
    rep = json.loads(router.vpd("status", "--json", config=cfg, check=0).stdout)
    kinds = {(o["kind"], o["name"]): o["status"] for o in rep["objects"]}
    assert kinds[("chain", "XRAY_TPROXY")] == "OK"
    assert kinds[("jump", "PREROUTING -> TUN_DIR")] == "OK"
    assert kinds[("ip rule", "16384")] == "OK"
    assert kinds[("route", "table 100")] == "OK"
    assert all("packets" in r for o in rep["objects"] if o["kind"] == "chain" for r in o["rules"])


EDITS = [
    ("base", FULL),
    ("add client", {**FULL, "xray": {**FULL["xray"], "clients": FULL["xray"]["clients"] + ["192.168.50.20"]}}),
    ("remove client", {**FULL, "tunnel_director": {"tunnels": {
        "wgc1": {"clients": [], "exclude": ["ru"]}, "ovpnc1": FULL["tunnel_director"]["tunnels"]["ovpnc1"]}}}),
    ("reorder tunnels", {**FULL, "tunnel_director": {"tunnels": {
        "ovpnc1": FULL["tunnel_director"]["tunnels"]["ovpnc1"], "wgc1": FULL["tunnel_director"]["tunnels"]["wgc1"]}}}),
    ("change exclusions", {**FULL, "xray": {**FULL["xray"], "exclude_sets": ["ua"]}}),
    ("remove all tunnels", {"xray": FULL["xray"]}),
    ("tunnels back", FULL),
    ("remove xray", {"tunnel_director": FULL["tunnel_director"]}),
    ("paused client", {**FULL, "paused_clients": ["192.168.50.10", "192.168.50.99"]}),
    ("nothing", {}),
    ("base again", FULL),
]


def test_config_edits_converge_to_a_fresh_apply(request, router, backend, tmp_path):
    mismatches = []
    for i, (label, cfg) in enumerate(EDITS):
        router.vpd("apply", config=router.config(cfg, "edit%d.json" % i), check=0)
        got = router.snapshot()
        sub = tmp_path / ("fresh%d" % i)
        sub.mkdir()
        fresh = Router(request.addfinalizer, backend, sub)
        fresh.vpd("apply", config=fresh.config(cfg), check=0)
        if got != fresh.snapshot():
            mismatches.append(label)
        fresh.ns.delete()
    assert mismatches == []


def test_stop_removes_only_what_we_own(router):
    b = router.backend
    router.ns.sh(
        "ipset create mine hash:ip && ipset add mine 10.9.9.9 && "
        "iptables-{b} -t mangle -N FOREIGN && iptables-{b} -t mangle -A FOREIGN -j RETURN && "
        "iptables-{b} -t mangle -A PREROUTING -i eth9 -j FOREIGN && "
        "iptables-{b} -t mangle -A PREROUTING -i tun11 -j MARK --set-xmark 0x1/0x1 && "
        "ip rule add pref 300 fwmark 0x5 lookup 50 && ip rule add pref 16500 lookup 60 && "
        "ip route add blackhole 10.0.0.0/8 table 100".format(b=b))
    before = router.snapshot()
    cfg = router.config(FULL)
    router.vpd("apply", config=cfg, check=0)
    assert router.snapshot() != before
    router.vpd("stop", config=cfg, check=0)
    assert router.snapshot() == before
    router.vpd("stop", config=cfg, check=0)  # twice is fine
    assert router.snapshot() == before


def test_scoped_apply_and_stop(router):
    cfg = router.config(FULL)
    router.vpd("apply", "xray", config=cfg, check=0)
    assert "TUN_DIR" not in router.iptables_save()
    assert prerouting(router) == [XRAY_JUMP]
    router.vpd("apply", "tunnel", config=cfg, check=0)
    full = router.snapshot()
    router.vpd("status", config=cfg, check=0)
    router.vpd("stop", "xray", config=cfg, check=0)
    save = router.iptables_save()
    assert "XRAY_TPROXY" not in save and "TUN_DIR" in save
    assert "add ru 77.88.0.0/16" in router.ipset_save()  # still used by the tunnel chain
    assert "XRAY_CLIENTS" not in router.ipset_save()
    router.vpd("status", "tunnel", config=cfg, check=0)
    router.vpd("status", "xray", config=cfg, check=3)
    router.vpd("apply", config=cfg, check=0)
    assert router.snapshot() == full
    router.vpd("stop", "tunnel", config=cfg, check=0)
    router.vpd("stop", "xray", config=cfg, check=0)
    assert router.iptables_save().count("-A ") == 0
    assert router.ipset_save().strip() == ""


def test_dry_run_touches_nothing(router):
    cfg = router.config(FULL)
    before = router.snapshot()
    out = router.vpd("apply", "--dry-run", config=cfg, check=0)
    assert router.snapshot() == before
    assert "-I PREROUTING 1 -i br0 -j XRAY_TPROXY" in out.stdout
    assert "rule add pref 16385 from all fwmark 0x20000/0xff0000 lookup 113" in out.stdout
    router.vpd("apply", config=cfg, check=0)
    assert "no changes" in router.vpd("apply", "--dry-run", config=cfg, check=0).stdout


def test_render_out_builds_the_same_state(request, router, backend, tmp_path):
    cfg = router.config(FULL)
    out = tmp_path / "batches"
    router.vpd("render", "--out", str(out), config=cfg, check=0)
    router.ns.run(["ip6tables-%s-restore" % backend, "--noflush"], input=(out / "ip6tables.filter").read_text())
    router.ns.run(["ipset", "restore"], input=(out / "ipset.restore").read_text())
    router.ns.run(["ip", "-batch", str(out / "ip.batch")])
    router.ns.run(["iptables-%s-restore" % backend, "--noflush"], input=(out / "iptables.mangle").read_text())
    fed = router.snapshot()
    sub = tmp_path / "applied"
    sub.mkdir()
    other = Router(request.addfinalizer, backend, sub)
    other.vpd("apply", config=other.config(FULL), check=0)
    assert fed == other.snapshot()
    filter6 = ["ip6tables-%s-save" % backend, "-t", "filter"]

    def rules6(ns):  # the policies' counters count the namespace's own IPv6 (router solicitations...)
        return [re.sub(r" \[\d+:\d+\]$", "", l) for l in ns.run(filter6).stdout.splitlines() if not l.startswith("#")]
    assert rules6(router.ns) == rules6(other.ns)
    # and the tool agrees that the fed state is what the config wants
    router.vpd("status", config=cfg, check=0)


def test_tunnel_reorder_goes_through_temporary_marks(router):
    a = router.config(FULL, "a.json")
    router.vpd("apply", config=a, check=0)
    tuns = FULL["tunnel_director"]["tunnels"]
    b = router.config({**FULL, "tunnel_director": {"tunnels": {"ovpnc1": tuns["ovpnc1"], "wgc1": tuns["wgc1"]}}},
                      "b.json")
    out = router.vpd("apply", "-v", config=b, check=0)
    assert "marks remapped" in out.stdout
    assert [l for l in rules_n(router) if l.startswith("1638")] == [
        "16384:\tfrom all fwmark 0x10000/0xff0000 lookup 113",
        "16385:\tfrom all fwmark 0x20000/0xff0000 lookup 111"]
    marks = [r for r in router.chain("TUN_DIR") if "-j MARK" in r]
    assert marks[0] == "-s 192.168.1.5/32 -m mark --mark 0x0/0xff0000 -j MARK --set-xmark 0x10000/0xff0000"
    assert marks[1].endswith("--set-xmark 0x20000/0xff0000")
    router.vpd("status", config=b, check=0)


def test_external_set_must_exist_and_is_never_removed(router):
    cfg = router.config({"xray": {"clients": ["192.168.50.10"], "exclude_sets": ["my_list"]}})
    before = router.snapshot()
    err = router.vpd("apply", config=cfg, check=1).stderr
    assert "my_list" in err and "do not exist" in err
    assert router.snapshot() == before
    router.ns.sh("ipset create my_list hash:net")
    router.vpd("apply", config=cfg, check=0)
    router.vpd("stop", config=cfg, check=0)
    assert "create my_list hash:net" in router.ipset_save()
