"""check's linter: one case per finding, each naming the clients and tunnels involved."""

import pytest

import fakeproc
from vpn_director import config, desired, lint
from vpn_director.xray import store

pytestmark = []


@pytest.fixture
def findings(tmp_path):
    rt = tmp_path / "rt_tables"
    rt.write_text("111 wgc1\n112 wgc2\n113 ovpnc1\n")

    def run(raw):
        raw = dict(raw, data_dir=str(tmp_path), advanced=dict(raw.get("advanced", {}), rt_tables=str(rt)))
        return lint.lint(config.validate(raw))
    return run


def tun(**tunnels):
    return {"tunnel_director": {"tunnels": tunnels}, "xray": {"clients": [], "exclude_sets": []}}


def test_clean_config_has_no_findings(findings):
    raw = {"xray": {"clients": ["192.168.50.10"], "servers": ["203.0.113.1"], "exclude_sets": []},
           "tunnel_director": {"tunnels": {"wgc1": {"clients": ["192.168.50.20"]}}}}
    assert findings(raw) == []


def test_shadowed_by_earlier_tunnel(findings):
    out = findings(tun(wgc1={"clients": ["192.168.50.0/24"]}, wgc2={"clients": ["192.168.50.7"]}))
    assert (lint.WARN, "tunnel wgc2 client 192.168.50.7/32 is shadowed by 192.168.50.0/24 of tunnel wgc1 "
                       "listed before it: its tunnel and exclusions never apply") in out


def test_partial_overlap_with_earlier_tunnel(findings):
    out = findings(tun(wgc1={"clients": ["192.168.50.8/29"]}, wgc2={"clients": ["192.168.50.0/24"]}))
    assert any("tunnel wgc2 client 192.168.50.0/24 overlaps 192.168.50.8/29 of tunnel wgc1" in m for _, m in out)


def test_covered_in_same_tunnel(findings):
    out = findings(tun(wgc1={"clients": ["192.168.50.0/24", "192.168.50.9"]}))
    assert any("192.168.50.9/32 is already covered by 192.168.50.0/24 in the same tunnel" in m for _, m in out)


def test_client_in_xray_and_tunnel(findings):
    raw = tun(wgc1={"clients": ["192.168.50.10"]})
    raw["xray"] = {"clients": ["192.168.50.0/24"], "servers": ["203.0.113.1"], "exclude_sets": []}
    out = findings(raw)
    assert any("tunnel wgc1 client 192.168.50.10/32 is also an Xray client (192.168.50.0/24): Xray wins" in m
               for _, m in out)


def test_duplicate_client(findings):
    out = findings(tun(wgc1={"clients": ["192.168.50.10", "192.168.50.10"]}))
    assert (lint.WARN, "tunnel wgc1 lists 192.168.50.10/32 twice") in out


def test_tunnel_without_effective_clients(findings):
    raw = tun(wgc1={"clients": ["192.168.50.10"]}, wgc2={"clients": []})
    raw["paused_clients"] = ["192.168.50.10"]
    out = findings(raw)
    assert (lint.WARN, "tunnel wgc1 routes nothing: all its clients are paused") in out
    assert (lint.WARN, "tunnel wgc2 routes nothing: it has no clients") in out


def test_exclusions_that_never_matter(findings):
    raw = {"xray": {"clients": ["192.168.50.10"], "servers": ["192.168.1.2"], "exclude_ips": ["10.1.0.0/16"],
                    "exclude_sets": []}}
    out = [m for _, m in findings(raw)]
    assert "xray.exclude_ips entry 10.1.0.0/16 can never matter: 10.0.0.0/8 is always bypassed already" in out
    assert "xray.servers entry 192.168.1.2/32 can never matter: 192.168.0.0/16 is always bypassed already" in out


def test_paused_client_in_no_list(findings):
    raw = tun(wgc1={"clients": ["192.168.50.10"]})
    raw["paused_clients"] = ["192.168.77.7"]
    assert (lint.WARN, "paused client 192.168.77.7/32 is in no list: pausing it changes nothing") in findings(raw)


def test_xray_without_servers(findings, tmp_path):
    raw = {"xray": {"clients": ["192.168.50.10"], "exclude_sets": []}}
    assert any("no xray.servers" in m for _, m in findings(raw))
    # servers imported into the store are bypassed like xray.servers: no warning then
    st = store.Store({"servers": [{"id": "0123456789ab", "address": "203.0.113.5", "ips": ["203.0.113.5"],
                                   "outbound": {"protocol": "shadowsocks"}}]})
    store.save(str(tmp_path), st)
    assert not any("no xray.servers" in m for _, m in findings(raw))


class FakeLive:
    def __init__(self, rules, routes=None):
        self.rules, self.routes = rules, routes or {}


def live_findings(tmp_path, rules, routes=None):
    rt = tmp_path / "rt_tables"
    rt.write_text("111 wgc1\n")
    cfg = config.validate({"data_dir": str(tmp_path), "advanced": {"rt_tables": str(rt)},
                           "xray": {"clients": ["192.168.50.10"], "servers": ["203.0.113.1"], "exclude_sets": []},
                           "tunnel_director": {"tunnels": {"wgc1": {"clients": ["192.168.50.20"]}}}})
    full = desired.build(cfg, resolver=lambda name: [])
    proc = fakeproc.listening(tmp_path / "proc")  # Xray listens: these tests are about ip rules
    return lint.lint_live(cfg, FakeLive(rules, routes), full, {}, proc=proc, lan_address=lambda name: None)


# Parsed `ip -N rule show` lines as the live reader returns them; the kernel tier reads real ones.
def test_live_merlin_vpn_director_rules(tmp_path):
    out = live_findings(tmp_path, [(10001, "from 192.168.50.20 lookup 111")])
    assert any("ip rule 10001" in m and "firmware's VPN Director" in m for _, m in out)


def test_live_same_mark_before_ours_is_an_error(tmp_path):
    out = live_findings(tmp_path, [(100, "from all fwmark 0x10000/0x10000 lookup 120")])
    assert (lint.ERROR, "ip rule 100 (from all fwmark 0x10000/0x10000 lookup 120) matches mark 0x10000 before "
                        "ours: tunnel wgc1's traffic would go to table 120") in out


def test_live_table_100_used_by_another_tool(tmp_path):
    out = live_findings(tmp_path, [(300, "from 10.0.0.0/8 lookup 100")], {100: ["blackhole 1.2.3.0/24"]})
    msgs = [m for _, m in out]
    assert any("ip rule 300 also uses table 100" in m for m in msgs)
    assert any("table 100 holds routes that are not vpn-director's: blackhole 1.2.3.0/24" in m for m in msgs)


def test_live_merlin_vpn_marks(tmp_path):
    out = live_findings(tmp_path, [(9990, "from all fwmark 0x1000/0xf000 lookup 115")])
    assert any("firmware's VPN marks" in m for _, m in out)


def test_live_our_own_rules_are_not_findings(tmp_path):
    out = live_findings(tmp_path, [(200, "from all fwmark 0x100/0x100 lookup 100"),
                                   (16384, "from all fwmark 0x10000/0xff0000 lookup 111")],
                        {100: ["2 default dev lo scope 254"]})
    assert out == []


def test_live_foreign_rules_in_our_range_are_collisions_not_ours(tmp_path):
    """Rules at our priorities that mention our masks but are not exactly ours are reported."""
    out = live_findings(tmp_path, [(200, "from 10.0.0.0/8 fwmark 0x100/0x100 lookup 150"),
                                   (16500, "iif wgc1 fwmark 0x770000/0xff0000 lookup 160")])
    msgs = [m for _, m in out]
    assert any("ip rule 200 (from 10.0.0.0/8" in m and "mark bits vpn-director uses" in m for m in msgs)
    assert any("ip rule 16500 (iif wgc1" in m and "mark bits vpn-director uses" in m for m in msgs)


def test_live_other_backend_is_an_error():
    (level, msg), = lint.other_backend(["TUN_DIR"], "legacy")
    assert level == lint.ERROR and "TUN_DIR are live in the nft iptables backend" in msg
    assert lint.other_backend([], "nft") == []
