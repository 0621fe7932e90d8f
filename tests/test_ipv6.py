"""IPv6 block without a kernel: MAC discovery, the desired chains and jumps, the plan, and what
render, status and check say."""

import ipaddress
import json
import os
import stat

import pytest

from vpn_director import config, engine, lint, state, status
from vpn_director.errors import StateError, ToolError
from vpn_director.ipv6 import block, macs, pipeline
from vpn_director.ipv6 import live as v6live
from vpn_director.live import LiveState, parse_iptables_save
from vpn_director.model import TUNNEL, XRAY
from vpn_director.ops.leases import Lease
from vpn_director.reconcile import Plan
from vpn_director.tools import Tools

A = ipaddress.IPv4Address
N = ipaddress.IPv4Network
MAC10, MAC20, MAC21, MAC77 = "02:00:00:00:50:10", "02:00:00:00:50:20", "02:00:00:00:50:21", "02:00:00:00:60:77"
ARP_TEXT = """IP address       HW type     Flags       HW address            Mask     Device
192.168.50.10    0x1         0x2         02:00:00:00:50:10     *        br0
192.168.50.11    0x1         0x0         00:00:00:00:00:00     *        br0
192.168.50.12    0x1         0x2         02:00:00:00:50:12     *        eth0
192.168.50.13    0x1         0x6         02:AA:00:00:50:13     *        br0
192.168.50.14    0x1         0x2         01:00:5e:00:00:01     *        br0
garbage line
300.1.1.1        0x1         0x2         02:00:00:00:50:15     *        br0
"""


def reject(mac):
    return "-m mac --mac-source %s -j REJECT --reject-with icmp6-adm-prohibited" % mac


FORWARD = {XRAY: "-i br0 ! -o br0 -j VPD6_XRAY", TUNNEL: "-i br0 ! -o br0 -j VPD6_TUN"}
INPUT = {c: ["-i br0 -p %s -m %s --dport 53 -j %s" % (p, p, n) for p in ("udp", "tcp")]
         for c, n in ((XRAY, "VPD6_XRAY"), (TUNNEL, "VPD6_TUN"))}


@pytest.fixture
def make_cfg(tmp_path):
    (tmp_path / "rt_tables").write_text("111 wgc1\n112 wgc2\n")

    def make(xray=(), tunnels=None, paused=(), pins=None, mode=None, leases=None):
        v6 = {"macs": pins or {}}
        if mode:
            v6["mode"] = mode
        lf = tmp_path / "leases"
        lf.write_text(leases or "")
        raw = {"data_dir": str(tmp_path), "paused_clients": list(paused),
               "xray": {"clients": list(xray), "exclude_sets": []},
               "tunnel_director": {"tunnels": {t: {"clients": c} for t, c in (tunnels or {}).items()}},
               "advanced": {"rt_tables": str(tmp_path / "rt_tables"), "ipv6": v6, "leases_file": str(lf),
                            "state_dir": str(tmp_path / "state")}}
        return config.validate(raw)
    return make


def known(**by_source):
    """known(arp={"192.168.50.10": MAC}, ...) -> macs.known(...)"""
    tables = {k: {A(a): m for a, m in by_source.get(k, {}).items()} for k in ("pins", "arp", "leases", "memory")}
    return macs.known(tables["pins"], tables["arp"], tables["leases"], tables["memory"])


# --- MAC discovery ---------------------------------------------------------------------------

def test_neighbour_table_complete_unicast_entries_on_the_lan_only():
    assert macs.neighbours(ARP_TEXT, "br0") == {A("192.168.50.10"): MAC10, A("192.168.50.13"): "02:aa:00:00:50:13"}
    assert macs.neighbours(ARP_TEXT, "eth0") == {A("192.168.50.12"): "02:00:00:00:50:12"}
    assert macs.neighbours("", "br0") == {}


def test_neighbour_file_missing_is_empty(tmp_path):
    assert macs.read_neighbours("br0", str(tmp_path / "nope")) == {}
    p = tmp_path / "arp"
    p.write_text(ARP_TEXT)
    assert A("192.168.50.10") in macs.read_neighbours("br0", str(p))


def test_leases_and_remembered_entries_are_checked():
    leases = [Lease("192.168.50.20", MAC20, "tv", 0), Lease("192.168.50.21", "ff:ff:ff:ff:ff:ff", "", 0),
              Lease("192.168.50.22", "02:00:00:00:50:22\n-A", "", 0)]
    assert macs.from_leases(leases) == {A("192.168.50.20"): MAC20}
    rec = {"macs": {"192.168.50.10": MAC10, "192.168.50.999": MAC10, "192.168.50.11": "02:00:00:00:50:11 -j X",
                    "192.168.50.12": 7}}
    assert macs.remembered(rec) == {A("192.168.50.10"): MAC10}


def test_sources_pin_beats_arp_beats_lease_beats_memory():
    k = known(pins={"192.168.50.1": "02:00:00:00:00:01"},
              arp={"192.168.50.1": "02:00:00:00:00:02", "192.168.50.2": "02:00:00:00:00:02"},
              leases={"192.168.50.2": "02:00:00:00:00:03", "192.168.50.3": "02:00:00:00:00:03"},
              memory={"192.168.50.3": "02:00:00:00:00:04", "192.168.50.4": "02:00:00:00:00:04"})
    assert k == {A("192.168.50.1"): ("02:00:00:00:00:01", "pin"), A("192.168.50.2"): ("02:00:00:00:00:02", "arp"),
                 A("192.168.50.3"): ("02:00:00:00:00:03", "lease"),
                 A("192.168.50.4"): ("02:00:00:00:00:04", "remembered")}


def test_routed_clients_xray_and_tunnels_not_main(make_cfg):
    cfg = make_cfg(xray=["192.168.50.10"], tunnels={"wgc1": ["192.168.50.20"], "main": ["192.168.50.30"]})
    p = macs.protect(cfg, known(arp={"192.168.50.10": MAC10, "192.168.50.20": MAC20,
                                     "192.168.50.30": "02:00:00:00:50:30", "192.168.50.40": "02:00:00:00:50:40"}))
    assert p.components == [XRAY, TUNNEL]
    assert p.macs == {XRAY: {MAC10: [("192.168.50.10", "arp")]}, TUNNEL: {MAC20: [("192.168.50.20", "arp")]}}
    assert p.unprotected == []
    assert p.memory == {"192.168.50.10": MAC10, "192.168.50.20": MAC20}  # not .30 (main) nor .40 (no list)


def test_only_main_table_tunnels_route_nothing(make_cfg):
    cfg = make_cfg(tunnels={"main": ["192.168.50.30"]})
    assert not macs.any_routed(cfg)
    assert macs.protect(cfg, known(arp={"192.168.50.30": MAC10})).components == []


def test_cidr_client_covers_every_known_address_inside_it_but_not_paused_holes(make_cfg):
    cfg = make_cfg(xray=["192.168.60.0/24"], paused=["192.168.60.9"])
    p = macs.protect(cfg, known(arp={"192.168.60.7": MAC77, "192.168.60.9": "02:00:00:00:60:09"},
                                leases={"192.168.60.8": MAC77, "192.168.61.1": MAC10}))
    assert p.macs[XRAY] == {MAC77: [("192.168.60.7", "arp"), ("192.168.60.8", "lease")]}
    assert p.unprotected == []
    assert p.memory == {"192.168.60.7": MAC77, "192.168.60.8": MAC77}


def test_unprotected_host_and_cidr_clients(make_cfg):
    cfg = make_cfg(xray=["192.168.50.10", "192.168.60.0/24"], tunnels={"wgc1": ["192.168.50.20", "192.168.70.0/24"]})
    p = macs.protect(cfg, known(arp={"192.168.70.5": MAC20}))
    assert p.unprotected == [(XRAY, N("192.168.50.10/32")), (XRAY, N("192.168.60.0/24")),
                             (TUNNEL, N("192.168.50.20/32"))]
    assert p.macs == {XRAY: {}, TUNNEL: {MAC20: [("192.168.70.5", "arp")]}}


def test_tunnel_first_match_a_main_tunnel_listed_first_takes_the_address(make_cfg):
    cfg = make_cfg(tunnels={"main": ["192.168.50.0/28"], "wgc1": ["192.168.50.5", "192.168.50.0/24"]})
    p = macs.protect(cfg, known(arp={"192.168.50.5": MAC10, "192.168.50.100": MAC20}))
    assert p.macs[TUNNEL] == {MAC20: [("192.168.50.100", "arp")]}
    assert p.unprotected == []  # .5 goes to main first: not routed, not unprotected


def test_pins_protect_but_are_not_remembered(make_cfg):
    cfg = make_cfg(xray=["192.168.50.10"], pins={"192.168.50.10": MAC10})
    p = macs.protect(cfg, known(pins={"192.168.50.10": MAC10}))
    assert p.macs[XRAY] == {MAC10: [("192.168.50.10", "pin")]}
    assert p.memory == {}


def test_memory_stays_while_routed_and_yields_to_a_new_mac(make_cfg, tmp_path):
    arp = tmp_path / "arp"
    cfg = make_cfg(xray=["192.168.50.10", "192.168.50.11"])
    arp.write_text(ARP_TEXT.splitlines()[0] + "\n192.168.50.10 0x1 0x2 %s * br0\n" % MAC10)
    d = pipeline.build(cfg, {}, arp=str(arp))
    assert d.protection.memory == {"192.168.50.10": MAC10}
    record = {"ipv6": {"chains": {}, "macs": d.protection.memory}}
    arp.write_text(ARP_TEXT.splitlines()[0] + "\n")  # the entry expired: still blocked
    d = pipeline.build(cfg, record, arp=str(arp))
    assert d.chains[0].rules == (reject(MAC10),)
    assert d.protection.macs[XRAY] == {MAC10: [("192.168.50.10", "remembered")]}
    arp.write_text(ARP_TEXT.splitlines()[0] + "\n192.168.50.10 0x1 0x2 %s * br0\n" % MAC21)  # another device
    d = pipeline.build(cfg, record, arp=str(arp))
    assert d.chains[0].rules == (reject(MAC21),) and d.protection.memory == {"192.168.50.10": MAC21}
    d = pipeline.build(make_cfg(xray=["192.168.50.11"]), record, arp=str(arp))  # no longer routed: forgotten
    assert d.protection.memory == {} and d.chains[0].rules == ()


def test_leases_file_is_a_source(make_cfg, tmp_path):
    cfg = make_cfg(xray=["192.168.50.20"], leases="0 %s 192.168.50.20 tv *\n" % MAC20.upper())
    d = pipeline.build(cfg, {}, arp=str(tmp_path / "none"))
    assert d.protection.macs[XRAY] == {MAC20: [("192.168.50.20", "lease")]}


def test_ignore_mode_builds_nothing(make_cfg):
    assert pipeline.build(make_cfg(xray=["192.168.50.10"], mode="ignore"), {}) is None


# --- desired chains and jumps ----------------------------------------------------------------

def protection(**per_comp):
    p = macs.Protection(components=list(per_comp))
    p.macs = {c: {m: [("192.168.50.1", "arp")] for m in ms} for c, ms in per_comp.items()}
    return p


def test_one_chain_per_component_jumped_from_forward_and_input_dns(make_cfg):
    cfg = make_cfg(xray=["192.168.50.10"], tunnels={"wgc1": ["192.168.50.20"]})
    d = block.desired(cfg, protection(xray=[MAC10], tunnel=[MAC20, MAC21]))
    assert [(c.name, c.rules, c.component) for c in d.chains] == [
        ("VPD6_XRAY", (reject(MAC10),), XRAY), ("VPD6_TUN", (reject(MAC20), reject(MAC21)), TUNNEL)]
    assert [(j.spec, j.first, j.component) for j in d.jumps["FORWARD"]] == [
        (FORWARD[XRAY], True, XRAY), (FORWARD[TUNNEL], True, TUNNEL)]
    assert [j.spec for j in d.jumps["INPUT"]] == INPUT[XRAY] + INPUT[TUNNEL]
    for name in ("VPD6_XRAY", "VPD6_TUN"):
        assert config.CHAIN_NAME_RE.match(name) and name not in config.TARGET_NAMES


def test_a_component_with_no_mac_known_still_gets_its_empty_chain(make_cfg):
    d = block.desired(make_cfg(xray=["192.168.50.10"]), protection(xray=[]))
    assert [(c.name, c.rules) for c in d.chains] == [("VPD6_XRAY", ())]


@pytest.mark.parametrize("mac", ["02:00:00:00:50:1", "02:00:00:00:50:10\n-A INPUT", "01:00:5e:00:00:01",
                                 "02-00-00-00-50-10", "02:00:00:00:50:1G"])
def test_nothing_but_a_strict_unicast_mac_reaches_the_document(mac):
    with pytest.raises(ValueError):
        block.reject(mac)


# --- the plan --------------------------------------------------------------------------------

def saved(text):
    s = LiveState()
    parse_iptables_save(text, s, table="filter")
    return s


def kernel(d):
    """The filter table ip6tables-save would print after `d` was applied to an empty kernel."""
    lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
    lines += [":%s - [0:0]" % c.name for c in d.chains]
    for parent in ("INPUT", "FORWARD"):
        lines += ["-A %s %s" % (parent, j.spec) for j in d.jumps[parent]]
    lines += ["-A %s %s" % (c.name, r) for c in d.chains for r in c.rules]
    return saved("\n".join(lines + ["COMMIT"]) + "\n")


@pytest.fixture
def both(make_cfg):
    cfg = make_cfg(xray=["192.168.50.10"], tunnels={"wgc1": ["192.168.50.20"]})
    return block.desired(cfg, protection(xray=[MAC10], tunnel=[MAC20]))


def test_plan_on_an_empty_table_and_its_exact_undo(both):
    step, after, warnings = block.plan(both, saved("*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n"), "all", {})
    assert step.tool == "ip6tables" and warnings == []
    assert step.batch.splitlines() == [
        "*filter", ":VPD6_XRAY - [0:0]", ":VPD6_TUN - [0:0]",
        "-A VPD6_XRAY " + reject(MAC10), "-A VPD6_TUN " + reject(MAC20),
        "-I FORWARD 1 " + FORWARD[XRAY], "-I FORWARD 2 " + FORWARD[TUNNEL],
        "-I INPUT 1 " + INPUT[XRAY][0], "-I INPUT 2 " + INPUT[XRAY][1],
        "-I INPUT 3 " + INPUT[TUNNEL][0], "-I INPUT 4 " + INPUT[TUNNEL][1], "COMMIT"]
    assert step.undo.splitlines() == [
        "*filter",
        "-D INPUT " + INPUT[TUNNEL][1], "-D INPUT " + INPUT[TUNNEL][0],
        "-D INPUT " + INPUT[XRAY][1], "-D INPUT " + INPUT[XRAY][0],
        "-D FORWARD " + FORWARD[TUNNEL], "-D FORWARD " + FORWARD[XRAY],
        ":VPD6_XRAY - [0:0]", "-X VPD6_XRAY", ":VPD6_TUN - [0:0]", "-X VPD6_TUN", "COMMIT"]
    assert after == {"VPD6_XRAY": XRAY, "VPD6_TUN": TUNNEL}


def test_plan_is_empty_when_the_kernel_matches_whatever_order_our_top_jumps_are_in(both):
    assert block.plan(both, kernel(both), "all", {})[0] is None
    live = kernel(both)
    live.chains["FORWARD"].reverse()
    live.chains["INPUT"].reverse()
    live.chains["FORWARD"].append("-i eth9 -j ACCEPT")
    assert block.plan(both, live, "all", {})[0] is None


def test_a_foreign_rule_pushed_in_front_moves_our_jumps_back_to_the_top(both):
    live = kernel(both)
    live.chains["FORWARD"].insert(0, "-i br0 -j ACCEPT")
    step, _, _ = block.plan(both, live, "all", {})
    assert step.batch.splitlines()[1:-1] == [
        "-D FORWARD " + FORWARD[XRAY], "-I FORWARD 1 " + FORWARD[XRAY],
        "-D FORWARD " + FORWARD[TUNNEL], "-I FORWARD 2 " + FORWARD[TUNNEL]]


def test_scoped_stop_removes_only_its_component(both):
    record = {"chains": {"VPD6_XRAY": XRAY, "VPD6_TUN": TUNNEL}}
    step, after, _ = block.plan(both, kernel(both), "tunnel", record, stop=True)
    assert step.batch.splitlines() == [
        "*filter", ":VPD6_TUN - [0:0]", "-D FORWARD " + FORWARD[TUNNEL],
        "-D INPUT " + INPUT[TUNNEL][0], "-D INPUT " + INPUT[TUNNEL][1], "-X VPD6_TUN", "COMMIT"]
    assert after == {"VPD6_XRAY": XRAY}
    # and the undo puts the chain back with its rule and jumps
    assert "-A VPD6_TUN " + reject(MAC20) in step.undo and "-I FORWARD 2 " + FORWARD[TUNNEL] in step.undo


def test_scoped_apply_keeps_the_other_component_and_its_position(make_cfg, both):
    only_tun = block.desired(make_cfg(tunnels={"wgc1": ["192.168.50.20"]}), protection(tunnel=[MAC20]))
    assert block.plan(only_tun, kernel(both), "tunnel", {"chains": {"VPD6_XRAY": XRAY}})[0] is None


def test_an_apply_of_one_scope_refreshes_the_macs_of_the_other_live_chain(make_cfg, both):
    more = block.desired(make_cfg(xray=["192.168.50.10"], tunnels={"wgc1": ["192.168.50.20"]}),
                         protection(xray=[MAC10, MAC77], tunnel=[MAC20]))
    step, after, _ = block.plan(more, kernel(both), "tunnel", {"chains": {"VPD6_XRAY": XRAY}})
    assert step.batch.splitlines() == ["*filter", ":VPD6_XRAY - [0:0]", "-A VPD6_XRAY " + reject(MAC10),
                                       "-A VPD6_XRAY " + reject(MAC77), "COMMIT"]
    assert after == {"VPD6_XRAY": XRAY, "VPD6_TUN": TUNNEL}
    # a stopped component is not started by it
    live = kernel(both)
    for parent in ("FORWARD", "INPUT"):
        live.chains[parent] = [r for r in live.chains[parent] if "VPD6_XRAY" not in r]
    del live.chains["VPD6_XRAY"]
    assert block.plan(more, live, "tunnel", {})[0] is None


def test_a_component_no_longer_routed_loses_its_chain(make_cfg, both):
    only_x = block.desired(make_cfg(xray=["192.168.50.10"]), protection(xray=[MAC10]))
    step, after, _ = block.plan(only_x, kernel(both), "all", {"chains": {"VPD6_XRAY": XRAY, "VPD6_TUN": TUNNEL}})
    assert "-X VPD6_TUN" in step.batch and after == {"VPD6_XRAY": XRAY}


def test_a_new_mac_rebuilds_only_its_chain(make_cfg, both):
    more = block.desired(make_cfg(xray=["192.168.50.10"], tunnels={"wgc1": ["192.168.50.20"]}),
                         protection(xray=[MAC10], tunnel=[MAC20, MAC21]))
    step, _, _ = block.plan(more, kernel(both), "all", {})
    assert step.batch.splitlines() == ["*filter", ":VPD6_TUN - [0:0]", "-A VPD6_TUN " + reject(MAC20),
                                       "-A VPD6_TUN " + reject(MAC21), "COMMIT"]
    assert step.undo.splitlines() == ["*filter", ":VPD6_TUN - [0:0]", "-A VPD6_TUN " + reject(MAC20), "COMMIT"]


def test_a_recorded_chain_holding_foreign_rules_is_left_alone(both):
    live = kernel(both)
    live.chains["OLD6"] = ["-p tcp -j ACCEPT"]
    step, after, warnings = block.plan(both, live, "all", {"chains": {"OLD6": XRAY}})
    assert step is None and "OLD6" not in after
    assert warnings == ["ip6tables chain OLD6 is in the record but holds rules vpn-director does not write; "
                        "left alone"]


# --- the pipeline: plan order, record, render, status, check ---------------------------------

def test_apply_blocks_first_stop_unblocks_last_and_the_record_keeps_chains_and_macs(make_cfg, tmp_path):
    cfg = make_cfg(xray=["192.168.50.10"], pins={"192.168.50.10": MAC10}, leases="0 %s 192.168.50.10 x *\n" % MAC21)
    full, _ = engine.build(cfg, {})
    current = LiveState(ipv6=v6live.V6Live(saved("*filter\nCOMMIT\n")))
    p = engine._plan(full, current, "all", {}, warn=lambda m: None)
    assert [s.tool for s in p.steps][0] == "ip6tables"
    assert p.record["ipv6"] == p.intent["ipv6"] == {"chains": {"VPD6_XRAY": XRAY}, "macs": {}}
    record = dict(p.record)
    live6 = kernel(full.ipv6)
    stop = engine._plan(engine._stop_state(cfg), LiveState(ipv6=v6live.V6Live(live6)), "all", record,
                        warn=lambda m: None, stop=True)
    assert [s.tool for s in stop.steps] == ["ip6tables"]
    assert "ipv6" not in stop.record


def test_ipv6_unavailable_is_one_warning_and_the_record_is_kept(make_cfg):
    cfg = make_cfg(xray=["192.168.50.10"])
    full, _ = engine.build(cfg, {})
    rec = {"ipv6": {"chains": {"VPD6_XRAY": XRAY}, "macs": {"192.168.50.10": MAC10}}}
    warned = []
    p = engine._plan(full, LiveState(ipv6=v6live.V6Live(None, "no ip6tables")), "all", rec, warn=warned.append)
    assert warned == ["no ip6tables"] and not [s for s in p.steps if s.tool == "ip6tables"]
    assert p.record["ipv6"]["chains"] == {"VPD6_XRAY": XRAY}


def test_render_prints_the_ip6tables_batch_and_writes_its_file(make_cfg, tmp_path):
    cfg = make_cfg(xray=["192.168.50.10"], pins={"192.168.50.10": MAC10})
    full, _ = engine.build(cfg, {})
    batches = engine.render_batches(full)
    assert batches["ip6tables"].splitlines()[:4] == ["*filter", ":VPD6_XRAY - [0:0]",
                                                     "-A VPD6_XRAY " + reject(MAC10), "-I FORWARD 1 " + FORWARD[XRAY]]
    paths = engine.write_out(str(tmp_path / "out"), batches)
    assert (tmp_path / "out" / "ip6tables.filter").read_text() == batches["ip6tables"]
    assert len(paths) == 4
    ignore, _ = engine.build(make_cfg(xray=["192.168.50.10"], mode="ignore"), {})
    b = engine.render_batches(ignore)
    assert b["ip6tables"] == "" and engine._empty("ip6tables") == "*filter\nCOMMIT\n"


def test_render_command_prints_the_section(make_cfg, capsys, tmp_path):
    from vpn_director import cli
    make_cfg()  # writes rt_tables
    raw = {"data_dir": str(tmp_path), "xray": {"clients": ["192.168.50.10"], "exclude_sets": []},
           "advanced": {"rt_tables": str(tmp_path / "rt_tables"), "ipv6": {"macs": {"192.168.50.10": MAC10}},
                        "state_dir": str(tmp_path / "state")}}
    (tmp_path / "c.json").write_text(json.dumps(raw))
    assert cli.main(["-c", str(tmp_path / "c.json"), "render"]) == 0
    out = capsys.readouterr().out
    assert "### ip6tables-restore --noflush\n*filter\n:VPD6_XRAY - [0:0]\n" in out


def test_status_objects_unprotected_does_not_change_the_exit_code(make_cfg):
    cfg = make_cfg(xray=["192.168.50.10", "192.168.50.11"], pins={"192.168.50.10": MAC10})
    full, _ = engine.build(cfg, {})
    rep = status.report(full, LiveState(ipv6=v6live.V6Live(kernel(full.ipv6))), "xray", {})
    v6 = [o for o in rep["objects"] if o.get("family") == "ipv6"]
    assert [(o["kind"], o["name"], o["status"]) for o in v6] == [
        ("chain", "VPD6_XRAY", "OK"), ("jump", "FORWARD -> VPD6_XRAY", "OK"),
        ("jump", "INPUT -> VPD6_XRAY", "OK"), ("jump", "INPUT -> VPD6_XRAY", "OK"),
        ("client", "192.168.50.11", "UNPROTECTED")]
    assert v6[0]["rules"][0]["clients"] == ["192.168.50.10 (pin)"]
    only6 = dict(rep, objects=v6)
    assert status._result(v6)["ok"]
    text = status.format_text(only6)
    assert "UNPROTECTED client   192.168.50.11" in text
    assert "ipv6: 1 routed client(s) with no known MAC, their IPv6 is not blocked" in text
    # a missing jump is drift
    live = kernel(full.ipv6)
    live.chains["FORWARD"] = []
    rep = status.report(full, LiveState(ipv6=v6live.V6Live(live)), "xray", {})
    assert ("jump", "FORWARD -> VPD6_XRAY", "MISSING") in [(o["kind"], o["name"], o["status"]) for o in rep["objects"]]
    assert not rep["ok"]
    # the tunnel scope shows nothing of Xray's
    rep = status.report(full, LiveState(ipv6=v6live.V6Live(kernel(full.ipv6))), "tunnel", {})
    assert not [o for o in rep["objects"] if o.get("family") == "ipv6"]


def test_status_says_when_ipv6_is_skipped_and_keeps_exit_zero(make_cfg):
    cfg = make_cfg(xray=["192.168.50.10"], pins={"192.168.50.10": MAC10})
    full, _ = engine.build(cfg, {})
    rep = status.report(full, LiveState(ipv6=v6live.V6Live(None, "the kernel has no IPv6")), "all", {})
    skipped = [o for o in rep["objects"] if o.get("status") == "SKIPPED"]
    assert skipped and skipped[0]["note"] == "the kernel has no IPv6"


def test_status_flags_a_chain_left_by_an_earlier_config(make_cfg, both):
    cfg = make_cfg(xray=["192.168.50.10"], pins={"192.168.50.10": MAC10})
    full, _ = engine.build(cfg, {})
    rep = status.report(full, LiveState(ipv6=v6live.V6Live(kernel(both))), "all",
                        {"ipv6": {"chains": {"VPD6_TUN": TUNNEL}}})
    got = [(o["kind"], o["name"], o["status"]) for o in rep["objects"] if o.get("family") == "ipv6"]
    assert ("chain", "VPD6_TUN", "MISMATCH") in got and ("jump", "FORWARD -> VPD6_TUN", "MISMATCH") in got


def test_check_live_warns_about_unprotected_clients_and_missing_ipv6(make_cfg):
    cfg = make_cfg(xray=["192.168.50.10"], tunnels={"wgc1": ["192.168.70.0/24"]})
    full, _ = engine.build(cfg, {})
    found = lint.lint_live(cfg, LiveState(ipv6=v6live.V6Live(None, "ip6tables not found")), full, {})
    assert (lint.WARN, "ip6tables not found") in found
    msgs = [m for level, m in found if "no MAC known" in m]
    assert [m.split(":")[0] for m in msgs] == ["xray client 192.168.50.10", "tunnel client 192.168.70.0/24"]
    assert all(level == lint.WARN for level, _ in found)
    many = make_cfg(xray=["192.168.50.%d" % i for i in range(1, 31)])
    full, _ = engine.build(many, {})
    found = [m for _, m in lint.lint_live(many, LiveState(), full, {}) if "MAC known" in m]
    assert len(found) == 11 and found[-1].startswith("and 20 more routed client(s) with no MAC known")


# --- reading, tools, record --------------------------------------------------------------------

class FakeTools:
    def __init__(self, text="*filter\nCOMMIT\n", error=None):
        self.text, self.error, self.reads = text, error, 0

    def ip6tables_save(self, counters=False):
        self.reads += 1
        if self.error:
            raise self.error
        return self.text


def test_read_only_when_something_is_routed_or_recorded(make_cfg, tmp_path):
    tools = FakeTools()
    inet6 = tmp_path / "if_inet6"
    inet6.write_text("")
    assert v6live.read(tools, make_cfg(tunnels={"main": ["192.168.50.30"]}), {}, if_inet6=str(inet6)) is None
    assert v6live.read(tools, make_cfg(xray=["192.168.50.10"], mode="ignore"), {}, if_inet6=str(inet6)) is None
    assert tools.reads == 0
    got = v6live.read(tools, make_cfg(xray=["192.168.50.10"], mode="ignore"),
                      {"ipv6": {"chains": {"VPD6_XRAY": XRAY}}}, if_inet6=str(inet6))
    assert got.state is not None and tools.reads == 1
    assert v6live.read(tools, make_cfg(xray=["192.168.50.10"]), {}, if_inet6=str(inet6)).problem is None


def test_no_ipv6_in_the_kernel_or_no_ip6tables_is_a_problem_not_an_error(make_cfg, tmp_path):
    cfg = make_cfg(xray=["192.168.50.10"])
    got = v6live.read(FakeTools(), cfg, {}, if_inet6=str(tmp_path / "missing"))
    assert got.state is None and "has no IPv6" in got.problem
    inet6 = tmp_path / "if_inet6"
    inet6.write_text("")
    got = v6live.read(FakeTools(error=ToolError("preflight", "ip6tables not found (ip6tables-legacy-restore)")),
                      cfg, {}, if_inet6=str(inet6))
    assert got.problem == ("routed clients' IPv6 is not blocked: preflight: ip6tables not found "
                           "(ip6tables-legacy-restore)")


def fake_bin(d, name, version):
    p = d / name
    p.write_text("#!/bin/sh\necho '%s'\n" % version)
    p.chmod(p.stat().st_mode | stat.S_IEXEC)


@pytest.mark.parametrize("have,want,found", [
    (["iptables-legacy-restore", "ip6tables-legacy-restore"], "legacy", "ip6tables-legacy-restore"),
    (["iptables-nft-restore", "ip6tables-nft-restore", "ip6tables-restore"], "nft", "ip6tables-nft-restore"),
    (["iptables-restore", "ip6tables-restore"], "auto", "ip6tables-restore"),  # Merlin: plain names only
    (["iptables-restore", "ip6tables-legacy-restore", "ip6tables-restore"], "auto", "ip6tables-legacy-restore"),
])
def test_ip6tables_follows_the_iptables_backend(tmp_path, have, want, found):
    for name in have:
        fake_bin(tmp_path, name, "%s v1.8.9 (%s)" % (name, "nf_tables" if want == "nft" else "legacy"))
        fake_bin(tmp_path, name.replace("-restore", "-save"), "")
    tools = Tools(want, env={"PATH": str(tmp_path)}, cache_dir=str(tmp_path / "cache"))
    assert tools.probe6() == (found, found.replace("-restore", "-save"))


def test_ip6tables_missing_or_in_another_backend(tmp_path):
    fake_bin(tmp_path, "iptables-restore", "iptables-restore v1.8.9 (nf_tables)")
    fake_bin(tmp_path, "iptables-save", "")
    tools = Tools("auto", env={"PATH": str(tmp_path)})
    with pytest.raises(ToolError, match=r"ip6tables not found \(ip6tables-nft-restore or ip6tables-restore\)"):
        tools.probe6()
    fake_bin(tmp_path, "ip6tables-restore", "ip6tables-restore v1.8.9 (legacy)")
    fake_bin(tmp_path, "ip6tables-save", "")
    with pytest.raises(ToolError, match="not the nft backend"):
        Tools("auto", env={"PATH": str(tmp_path)}).probe6()


def test_the_record_key_is_checked(tmp_path):
    d = tmp_path / "st"
    d.mkdir(mode=0o700)
    good = {"ipv6": {"chains": {"VPD6_XRAY": "xray"}, "macs": {"192.168.50.10": MAC10}}}
    (d / "state.json").write_text(json.dumps(good))
    assert state.load_record(str(d)) == good
    (d / "state.json").write_text(json.dumps({"ipv6": {"chains": ["VPD6_XRAY"]}}))
    with pytest.raises(StateError, match="ipv6 must hold"):
        state.load_record(str(d))
    assert os.path.exists(str(d / "state.json"))


def test_extend_without_a_read_keeps_the_memory_out_when_nothing_is_routed(make_cfg):
    cfg = make_cfg(tunnels={"main": ["192.168.50.30"]})
    full, _ = engine.build(cfg, {"ipv6": {"chains": {}, "macs": {"192.168.50.30": MAC10}}})
    p = pipeline.extend(Plan([], {}, {}), full, LiveState(), "all", {"ipv6": {"macs": {"192.168.50.30": MAC10}}})
    assert p.steps == [] and "ipv6" not in p.record
