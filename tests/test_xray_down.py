"""xray.other_protocols (the Xray chain's final DROP), trace of protocols TPROXY cannot take, and
check --live's findings about the TPROXY listener and Asuswrt-Merlin's kill switch."""

import json
import re
import subprocess
import sys

import pytest

import fakeproc
from doc_examples import EXAMPLE_1, EXAMPLE_3, XRAY_CHAIN
from netns import ROOT
from vpn_director import desired, lint, reconcile, render, status, trace
from vpn_director.live import LiveSet, LiveState
from vpn_director.reconcile import plan


def drop(raw):
    return dict(raw, xray=dict(raw["xray"], other_protocols="drop"))


def chain(full, name="XRAY_TPROXY"):
    return [c for c in full.chains if c.name == name][0].rules


# --- the chain ------------------------------------------------------------------------------------

def test_direct_keeps_the_documents_chain(build_cfg):
    assert list(chain(desired.build(build_cfg(EXAMPLE_1)))) == XRAY_CHAIN


def test_drop_appends_one_final_drop_after_the_tproxy_rules(build_cfg):
    assert list(chain(desired.build(build_cfg(drop(EXAMPLE_1))))) == XRAY_CHAIN + ["-j DROP"]


def test_drop_without_xray_clients_adds_nothing(build_cfg):
    raw = {"xray": {"clients": [], "other_protocols": "drop"},
           "tunnel_director": {"tunnels": {"wgc1": {"clients": ["192.168.50.20"]}}}}
    assert [c.name for c in desired.build(build_cfg(raw)).chains] == ["TUN_DIR"]


def test_render_prints_the_drop_rule_last(build_cfg):
    full = desired.build(build_cfg(drop(EXAMPLE_1)))
    doc = render.chain_doc([(c.name, c.rules) for c in full.chains], [], [])
    lines = [l for l in doc.splitlines() if l.startswith("-A XRAY_TPROXY")]
    assert lines[-3:] == ["-A XRAY_TPROXY %s" % XRAY_CHAIN[-2], "-A XRAY_TPROXY %s" % XRAY_CHAIN[-1],
                          "-A XRAY_TPROXY -j DROP"]


def test_a_chain_with_the_drop_rule_is_still_ours():
    assert reconcile.looks_like_ours(XRAY_CHAIN + ["-j DROP"])
    assert not reconcile.looks_like_ours(XRAY_CHAIN + ["-j ACCEPT"])


def test_switching_other_protocols_rebuilds_only_the_xray_chain_and_status_shows_the_rule(build_cfg):
    direct = desired.build(build_cfg(EXAMPLE_1))
    dropping = desired.build(build_cfg(drop(EXAMPLE_1)))
    live = LiveState(chains={"PREROUTING": ["-i br0 -j XRAY_TPROXY"], "XRAY_TPROXY": list(XRAY_CHAIN)},
                     sets={}, rules=[(200, "from all fwmark 0x100/0x100 lookup 100")],
                     routes={100: [desired.XRAY_ROUTE_SHOWN]})
    for s in dropping.sets:  # the sets are in place: only the chain differs
        live.sets[s.name] = LiveSet(s.name, "hash:net", "family inet hashsize 1024 maxelem 65536", s.members)
    p = plan(dropping, live, "all", {"chains": {"XRAY_TPROXY": "xray"}})
    assert [s.name for s in p.steps] == ["update mangle chains and jumps"]
    assert "-A XRAY_TPROXY -j DROP\n" in p.steps[0].batch
    assert not plan(direct, live, "all", {"chains": {"XRAY_TPROXY": "xray"}}).steps

    live.chains["XRAY_TPROXY"].append("-j DROP")
    live.counters = {"XRAY_TPROXY": [(0, 0)] * 12 + [(7, 588)]}
    rep = status.report(dropping, live, "all", {})
    rules = [o for o in rep["objects"] if o["name"] == "XRAY_TPROXY"][0]["rules"]
    assert rules[-1] == {"rule": "-j DROP", "status": "OK", "packets": 7, "bytes": 588}
    assert re.search(r"^    OK +7 pkts  -j DROP$", status.format_text(rep), re.M)
    rep = status.report(direct, live, "all", {})  # the config says direct: the live DROP is flagged
    rules = [o for o in rep["objects"] if o["name"] == "XRAY_TPROXY"][0]["rules"]
    assert rules[-1] == {"rule": "-j DROP", "status": "MISMATCH", "note": "not in config"}


# --- trace ------------------------------------------------------------------------------------------

def test_icmp_from_an_xray_client_goes_direct_by_default(tracer):
    v = tracer(EXAMPLE_1, "192.168.50.10", "8.8.8.8", "icmp")
    assert v.steps == [
        "XRAY_TPROXY: src in XRAY_CLIENTS? Yes",
        "dst in XRAY_SERVERS? No",
        "dst private? No",
        'dst in "ru"? No',
        "icmp is not TCP or UDP, TPROXY does not take it → end of XRAY_TPROXY (xray.other_protocols: direct)",
        "Goes to main table → WAN (direct)",
    ]
    assert (v.route, v.table, v.mark) == ("direct", "main", 0)


def test_icmp_from_an_xray_client_is_dropped_with_drop(tracer):
    v = tracer(drop(EXAMPLE_1), "192.168.50.10", "8.8.8.8", "icmp")
    assert v.steps[-1] == "icmp is not TCP or UDP, TPROXY does not take it → DROP (xray.other_protocols: drop)"
    assert v.rules[-1] == "-j DROP"
    assert (v.route, v.table, v.mark) == ("dropped", "none", 0)
    assert v.as_dict()["route"] == "dropped"


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_tcp_and_udp_are_unaffected_by_drop(tracer, proto):
    for dst in ("8.8.8.8", "77.88.8.8", "10.1.2.3"):
        a = tracer(EXAMPLE_3, "192.168.50.10", dst, proto)
        b = tracer(drop(EXAMPLE_3), "192.168.50.10", dst, proto)
        assert (a.route, a.table, a.mark, a.steps) == (b.route, b.table, b.mark, b.steps)


def test_drop_spares_excluded_destinations_and_other_clients(tracer):
    raw = dict(drop(EXAMPLE_1), tunnel_director={"tunnels": {"wgc1": {"clients": ["192.168.50.20"]}}})
    assert tracer(raw, "192.168.50.10", "77.88.8.8", "icmp").route == "direct"  # dst in "ru": RETURN first
    assert tracer(raw, "192.168.50.10", "192.168.1.1", "icmp").route == "direct"  # private: RETURN first
    assert tracer(raw, "192.168.50.99", "8.8.8.8", "icmp").route == "direct"  # not an Xray client
    v = tracer(raw, "192.168.50.20", "8.8.8.8", "icmp")  # a tunnel client's ICMP follows its mark
    assert (v.route, v.tunnel) == ("tunnel", "wgc1")


def test_a_live_chain_missing_its_tcp_tproxy_rule_drops_tcp_too(build_cfg):
    cfg = build_cfg(drop(EXAMPLE_1))
    rs = trace.from_desired(desired.build(cfg), cfg)
    rs.chains["XRAY_TPROXY"] = [r for r in rs.chains["XRAY_TPROXY"] if not r.startswith("-p tcp")]
    v = trace.trace(rs, "192.168.50.10", "8.8.8.8", "tcp")
    assert v.route == "dropped" and v.steps[-1] == "XRAY_TPROXY: rule without conditions → DROP"


def _config(tmp_path, raw):
    (tmp_path / "ipsets").mkdir(exist_ok=True)
    (tmp_path / "ipsets" / "ru.zone").write_text("77.88.0.0/16\n")
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(dict(raw, data_dir=str(tmp_path))))
    return str(cfg)


def _cli(tmp_path, raw, *args):
    return subprocess.run([sys.executable, "-m", "vpn_director", "-c", _config(tmp_path, raw), "trace"] + list(args),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          env={"PYTHONPATH": ROOT, "PATH": "/usr/bin:/bin"})


def test_cli_traces_icmp(tmp_path):
    p = _cli(tmp_path, drop(EXAMPLE_1), "192.168.50.10", "8.8.8.8", "--proto", "icmp")
    assert p.returncode == 0, p.stderr
    assert "192.168.50.10 → 8.8.8.8 icmp (desired state)" in p.stdout
    assert "  5. icmp is not TCP or UDP, TPROXY does not take it → DROP (xray.other_protocols: drop)" in p.stdout
    assert "route: dropped  table: none  mark: 0x0" in p.stdout
    j = json.loads(_cli(tmp_path, EXAMPLE_1, "192.168.50.10", "8.8.8.8", "--proto", "icmp", "--json").stdout)
    assert (j["route"], j["table"]) == ("direct", "main")


def test_cli_refuses_a_port_for_icmp(tmp_path):
    p = _cli(tmp_path, EXAMPLE_1, "192.168.50.10", "8.8.8.8", "--proto", "icmp", "--dport", "80")
    assert p.returncode == 2 and "--dport needs --proto tcp or udp" in p.stderr


# --- the TPROXY listener, read from /proc/net ------------------------------------------------------

def test_proc_parser_reads_ipv4_ipv6_and_mapped_listeners(tmp_path):
    proc = fakeproc.write(tmp_path, tcp=[("127.0.0.1", 12345), ("::", 12345), ("::ffff:192.168.50.1", 12345),
                                         ("0.0.0.0", 22), ("192.168.50.1", 12345, fakeproc.ESTABLISHED)],
                          udp=[("0.0.0.0", 12345), ("fd00::1", 12345),
                               ("10.0.0.1", 12345, fakeproc.ESTABLISHED, "10.0.0.2", 5353)])
    found = lint.proc_listeners(12345, proc)
    assert [str(a) for a in found["tcp"]] == ["127.0.0.1", "::", "192.168.50.1"]  # LISTEN only; mapped = IPv4
    assert [str(a) for a in found["udp"]] == ["0.0.0.0", "fd00::1"]  # a connected UDP socket is no listener
    assert lint.proc_listeners(22, proc) == {"tcp": [lint.ipaddress.ip_address("0.0.0.0")], "udp": []}


def test_proc_parser_matches_the_kernels_text():
    # What Linux on a little-endian machine prints for 127.0.0.1:12345 (the words are host integers).
    if sys.byteorder == "little":
        assert fakeproc.hexaddr("127.0.0.1") == "0100007F"
        assert fakeproc.hexaddr("::1") == "00000000000000000000000001000000"
    row = "   0: 0100007F:3039 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1"
    assert str(lint._proc_socket(row, "tcp", 12345)) == ("127.0.0.1" if sys.byteorder == "little" else "1.0.0.127")
    assert lint._proc_socket("garbage", "tcp", 12345) is None
    assert lint._proc_socket("   0: XYZ:3039 00000000:0000 0A", "tcp", 12345) is None


def test_proc_parser_unreadable_is_none(tmp_path):
    assert lint.proc_listeners(12345, str(tmp_path / "nothing")) is None


def findings(build_cfg, tmp_path, tcp=(), udp=(), lan="192.168.50.1", raw=None):
    cfg = build_cfg(raw or EXAMPLE_1)
    return lint.tproxy_listener(cfg, fakeproc.write(tmp_path, tcp, udp), lambda name: lan)


@pytest.mark.parametrize("addr", ["0.0.0.0", "::", "192.168.50.1", "::ffff:192.168.50.1"])
def test_listener_where_tproxy_finds_it_is_no_finding(build_cfg, tmp_path, addr):
    assert findings(build_cfg, tmp_path, [(addr, 12345)], [(addr, 12345)]) == []


def test_nothing_listening_is_a_warning_dropped_not_leaked(build_cfg, tmp_path):
    (level, msg), = findings(build_cfg, tmp_path, [("0.0.0.0", 22)], [])
    assert level == lint.WARN
    assert msg == ("nothing listens on TCP or UDP port 12345 (advanced.xray.tproxy_port): Xray clients' TCP and "
                   "UDP are dropped, not leaked, until Xray listens there (connections hang until they time out)")


def test_only_udp_missing(build_cfg, tmp_path):
    (level, msg), = findings(build_cfg, tmp_path, [("0.0.0.0", 12345)], [("0.0.0.0", 53)])
    assert level == lint.WARN and msg.startswith("nothing listens on UDP port 12345") and "UDP is dropped" in msg


def test_listener_on_loopback_is_an_error(build_cfg, tmp_path):
    (level, msg), = findings(build_cfg, tmp_path, [("127.0.0.1", 12345)], [("127.0.0.1", 12345)])
    assert level == lint.ERROR
    assert msg == ("Xray listens on port 12345 only at TCP 127.0.0.1; UDP 127.0.0.1, but the TPROXY rules "
                   "(--on-ip 0.0.0.0) look for the listener at br0's address 192.168.50.1 or 0.0.0.0: every TCP "
                   "and UDP packet from Xray clients is dropped; make Xray's TPROXY inbound listen on 0.0.0.0 "
                   "(its default) or ::")


def test_another_address_or_an_ipv6_one_is_an_error_too(build_cfg, tmp_path):
    out = findings(build_cfg, tmp_path, [("192.168.60.1", 12345), ("fd00::1", 12345)], [("0.0.0.0", 12345)])
    (level, msg), = out
    assert level == lint.ERROR and "only at TCP 192.168.60.1, fd00::1" in msg and "every TCP packet" in msg


def test_a_wildcard_listener_beside_a_bad_one_is_enough(build_cfg, tmp_path):
    assert findings(build_cfg, tmp_path, [("127.0.0.1", 12345), ("0.0.0.0", 12345)], [("::", 12345)]) == []


def test_lan_address_unknown_only_wildcards_count(build_cfg, tmp_path):
    (level, msg), = findings(build_cfg, tmp_path, [("192.168.50.1", 12345)], [("0.0.0.0", 12345)], lan=None)
    assert level == lint.ERROR and "look for the listener at 0.0.0.0: every TCP packet" in msg


def test_no_xray_clients_no_listener_findings(build_cfg, tmp_path):
    raw = {"xray": {"clients": []}, "tunnel_director": {"tunnels": {"wgc1": {"clients": ["192.168.50.20"]}}}}
    assert findings(build_cfg, tmp_path, raw=raw) == []


def test_unreadable_proc_says_the_listener_was_not_checked(build_cfg, tmp_path):
    cfg = build_cfg(EXAMPLE_1)
    (level, msg), = lint.tproxy_listener(cfg, str(tmp_path / "none"), lambda name: None)
    assert level == lint.WARN and "whether Xray listens on port 12345 was not checked" in msg


def test_lint_live_includes_the_listener_findings(build_cfg, tmp_path):
    cfg = build_cfg(EXAMPLE_1)
    live = LiveState(rules=[], routes={})
    out = lint.lint_live(cfg, live, desired.build(cfg), {}, proc=fakeproc.write(tmp_path),
                         lan_address=lambda name: "192.168.50.1")
    assert [m[:40] for _, m in out] == ["nothing listens on TCP or UDP port 12345"]


def test_interface_address_of_a_missing_interface_is_none():
    assert lint.interface_address("vpd-no-such0") is None


# --- Asuswrt-Merlin's kill switch ---------------------------------------------------------------------

MERLIN = {"xray": {"clients": ["192.168.50.10"], "exclude_sets": []},
          "tunnel_director": {"tunnels": {"wgc1": {"clients": ["192.168.50.20", "192.168.50.64/28"]}}}}


def ks(build_cfg, rules):
    return lint.merlin_kill_switch(build_cfg(MERLIN), rules)


def test_kill_switch_rule_covering_a_tunnel_client(build_cfg):
    # `ip -N rule show` prints prohibit as 8
    (level, msg), = ks(build_cfg, [(12211, "from 192.168.50.20 8")])
    assert level == lint.WARN
    assert msg.startswith("ip rule 12211 (from 192.168.50.20 8) is Asuswrt-Merlin's kill switch for one of its "
                          "VPN clients and covers tunnel wgc1 client 192.168.50.20/32: evaluated before")


def test_kill_switch_rule_by_name_covering_part_of_a_subnet_and_an_xray_client(build_cfg):
    (_, msg), = ks(build_cfg, [(12216, "from 192.168.50.0/26 prohibit")])  # .0-.63: the Xray and .20 clients
    assert "covers Xray client 192.168.50.10/32, tunnel wgc1 client 192.168.50.20/32:" in msg
    (_, msg), = ks(build_cfg, [(12216, "from 192.168.50.70 prohibit")])
    assert "covers tunnel wgc1 client 192.168.50.64/28:" in msg


def test_kill_switch_for_the_whole_lan_covers_everyone(build_cfg):
    (_, msg), = ks(build_cfg, [(12220, "from all iif br0 8")])
    assert "covers Xray client 192.168.50.10/32, tunnel wgc1 client 192.168.50.20/32, tunnel wgc1 client " \
           "192.168.50.64/28:" in msg


@pytest.mark.parametrize("rule", [
    (12211, "from 192.168.50.30 8"),  # nobody of ours
    (12211, "from all iif br1 8"),  # another LAN
    (12100, "from 192.168.50.20 8"),  # below the kill switch band (a routing rule: linted elsewhere)
    (16384, "from 192.168.50.20 8"),  # outside Merlin's band
    (12211, "from 192.168.50.20 lookup 8"),  # a lookup, not a kill switch
])
def test_not_a_kill_switch_over_our_clients(build_cfg, rule):
    assert ks(build_cfg, [rule]) == []


def test_lint_live_reports_the_kill_switch(build_cfg, tmp_path):
    cfg = build_cfg(MERLIN)
    live = LiveState(rules=[(12215, "from 192.168.50.20 8")], routes={})
    out = lint.lint_live(cfg, live, desired.build(cfg), {}, proc=fakeproc.listening(tmp_path),
                         lan_address=lambda name: None)
    assert any("firmware's VPN Director" in m for _, m in out)  # the general finding for the band
    assert any("Asuswrt-Merlin's kill switch" in m and "tunnel wgc1 client 192.168.50.20/32" in m for _, m in out)
