"""Rendered batches for the document's examples (no kernel needed)."""

import ipaddress
import json

import pytest

from doc_examples import EXAMPLE_1, EXAMPLE_2, EXAMPLE_3, XRAY_CHAIN
from vpn_director import cli, config, desired, engine

EXAMPLES = {1: EXAMPLE_1, 2: EXAMPLE_2, 3: EXAMPLE_3}


@pytest.fixture
def build(build_cfg):
    return lambda raw: desired.build(build_cfg(raw))


def chain(state, name):
    return [c for c in state.chains if c.name == name]


def test_example_1_xray_chain_is_the_documents(build):
    s = build(EXAMPLE_1)
    assert list(chain(s, "XRAY_TPROXY")[0].rules) == XRAY_CHAIN
    assert not chain(s, "TUN_DIR")
    assert [(j.spec, j.first) for j in s.jumps] == [("-i br0 -j XRAY_TPROXY", True)]
    assert [(r.pref, r.text) for r in s.rules] == [(200, "from all fwmark 0x100/0x100 lookup 100")]
    assert [(r.table, r.add) for r in s.routes] == [(100, "local default dev lo")]
    names = {x.name: x.members for x in s.sets}
    assert names["XRAY_CLIENTS"] == {"192.168.50.10"}
    assert names["XRAY_SERVERS"] == frozenset()
    assert names["ru"] == {"77.88.0.0/16", "5.255.255.0/24"}


def test_example_2_tunnel_chain_slot_mark_pref(build):
    s = build(EXAMPLE_2)
    assert not chain(s, "XRAY_TPROXY")
    assert list(chain(s, "TUN_DIR")[0].rules) == [
        "-s 192.168.1.5/32 -m set --match-set ru dst -j RETURN",
        "-s 192.168.1.5/32 -m mark --mark 0x0/0xff0000 -j MARK --set-xmark 0x10000/0xff0000",
    ]
    # the lookup, then its kill-switch guard (`ip -N rule show` prints unreachable as 7)
    assert [(r.pref, r.text) for r in s.rules] == [(16384, "from all fwmark 0x10000/0xff0000 lookup 114"),
                                                   (16640, "from all fwmark 0x10000/0xff0000 7")]
    assert [j.spec for j in s.jumps] == ["-i br0 -m mark --mark 0x0/0xff0000 -j TUN_DIR"]
    assert {x.name for x in s.sets} == {"ru"}


def test_example_3_both(build):
    s = build(EXAMPLE_3)
    assert list(chain(s, "XRAY_TPROXY")[0].rules) == XRAY_CHAIN
    assert chain(s, "TUN_DIR")[0].rules[1].endswith("--set-xmark 0x10000/0xff0000")
    assert [r.pref for r in s.rules] == [200, 16384, 16640]


def test_render_text_order_and_jump_positions(build):
    b = engine.render_batches(build(EXAMPLE_3))
    doc = b["iptables"].splitlines()
    assert doc[0] == "*mangle" and doc[-1] == "COMMIT"
    assert doc[-3:-1] == ["-I PREROUTING 1 -i br0 -j XRAY_TPROXY",
                          "-I PREROUTING 2 -i br0 -m mark --mark 0x0/0xff0000 -j TUN_DIR"]
    assert b["ip"].splitlines() == [
        "rule add pref 200 from all fwmark 0x100/0x100 lookup 100",
        "rule add pref 16384 from all fwmark 0x10000/0xff0000 lookup 111",
        "rule add pref 16640 from all fwmark 0x10000/0xff0000 unreachable",
        "route replace local default dev lo table 100",
    ]
    assert "create ru hash:net family inet hashsize 1024 maxelem 65536" in b["ipset"].splitlines()


def test_tunnel_order_decides_slot_mark_and_pref(build, tmp_path):
    raw = {"tunnel_director": {"tunnels": {
        "ovpnc3": {"clients": ["192.168.1.5"]},
        "wgc1": {"clients": ["192.168.1.6", "192.168.2.0/24"], "exclude": ["ru"]},
    }}}
    s = build(raw)
    assert [(r.pref, r.mark, r.table, r.action) for r in s.rules] == [
        (16384, 0x10000, 114, None), (16640, 0x10000, 0, "unreachable"),
        (16385, 0x20000, 111, None), (16641, 0x20000, 0, "unreachable")]
    rules = chain(s, "TUN_DIR")[0].rules
    assert rules == (
        "-s 192.168.1.5/32 -m mark --mark 0x0/0xff0000 -j MARK --set-xmark 0x10000/0xff0000",
        "-s 192.168.1.6/32 -m set --match-set ru dst -j RETURN",
        "-s 192.168.1.6/32 -m mark --mark 0x0/0xff0000 -j MARK --set-xmark 0x20000/0xff0000",
        "-s 192.168.2.0/24 -m set --match-set ru dst -j RETURN",
        "-s 192.168.2.0/24 -m mark --mark 0x0/0xff0000 -j MARK --set-xmark 0x20000/0xff0000",
    )


def test_paused_clients(build):
    raw = {"paused_clients": ["192.168.50.7", "192.168.1.5"],
           "xray": {"clients": ["192.168.50.0/24", "192.168.1.5"], "exclude_sets": []},
           "tunnel_director": {"tunnels": {"wgc1": {"clients": ["192.168.50.0/24"]}}}}
    s = build(raw)
    members = {x.name: x.members for x in s.sets}
    # exact entries leave the list; an address inside a listed subnet gets a nomatch hole
    assert members["XRAY_CLIENTS"] == {"192.168.50.0/24", "192.168.50.7 nomatch"}
    assert chain(s, "TUN_DIR")[0].rules[0] == "-s 192.168.50.7/32 -j RETURN"


def test_servers_hostnames_and_exclude_ips_feed_servers_set(tmp_path):
    rt = tmp_path / "rt_tables"
    rt.write_text("")
    cfg = config.validate({"data_dir": str(tmp_path), "advanced": {"rt_tables": str(rt)},
                           "xray": {"clients": ["192.168.50.10"], "servers": ["proxy.example", "203.0.113.10"],
                                    "exclude_ips": ["198.51.100.0/24"], "exclude_sets": []}})
    s = desired.build(cfg, resolver=lambda name: {"proxy.example": ["203.0.113.77"]}[name])
    assert {x.name: x.members for x in s.sets}["XRAY_SERVERS"] == {
        "203.0.113.77", "203.0.113.10", "198.51.100.0/24"}


def test_missing_zone_file_is_a_clear_error(build, tmp_path):
    from vpn_director.errors import DataError
    with pytest.raises(DataError, match=r"ipsets/ua\.zone"):
        build({"xray": {"clients": ["192.168.50.10"], "exclude_sets": ["UA"]}})


def test_external_set_is_not_loaded(build):
    s = build({"xray": {"clients": ["192.168.50.10"], "exclude_sets": ["my_list"]}})
    assert s.external_sets == ["my_list"]
    assert "my_list" not in {x.name for x in s.sets}


@pytest.fixture
def render_out(tmp_path, capsys):
    """render --out DIR through the CLI: (exit code, stderr)."""
    (tmp_path / "rt_tables").write_text("111 wgc1\n")
    cfg = tmp_path / "c.json"
    raw = {"xray": {"exclude_sets": []}, "advanced": {"rt_tables": str(tmp_path / "rt_tables")}}
    cfg.write_text(json.dumps(raw))

    def run(out):
        code = cli.main(["-c", str(cfg), "render", "--out", out])
        return code, capsys.readouterr().err
    return run


def test_render_out_onto_an_existing_file_is_bad_usage_and_keeps_the_file(render_out, tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("mine\n")
    assert render_out(str(target)) == (2, "vpn-director: error: render --out %s: exists and is not a directory\n"
                                       % target)
    assert target.read_text() == "mine\n"


@pytest.mark.parametrize("where", ["under a file", "procfs"])
def test_render_out_where_nothing_can_be_written_is_one_line_naming_the_path(render_out, tmp_path, where):
    (tmp_path / "notes.txt").write_text("mine\n")
    out = str(tmp_path / "notes.txt" / "batches") if where == "under a file" else "/proc/vpd-render-test"
    code, err = render_out(out)
    assert code == 1
    assert err.startswith("vpn-director: error: render --out %s: cannot write there: " % out)
    assert err.count("\n") == 1 and "internal error" not in err


def test_render_out_empty_is_bad_usage(render_out, tmp_path):
    code, err = render_out("")
    assert code == 2 and "argument --out: an empty path" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "rt_tables"]


def test_kill_switch_guards_follow_the_config(build):
    tunnels = {"wgc1": {"clients": ["192.168.1.6"]}, "main": {"clients": ["192.168.1.7"]},
               "ovpnc3": {"clients": ["192.168.1.8"], "kill_switch": False}}
    s = build({"tunnel_director": {"tunnels": tunnels}, "advanced": {"kill_switch": {"action": "prohibit"}}})
    # none for the main table (it is the WAN), none where the tunnel turns it off
    assert [(r.pref, r.text) for r in s.rules if r.action] == [(16640, "from all fwmark 0x10000/0xff0000 8")]
    s = build({"tunnel_director": {"tunnels": tunnels}, "advanced": {"kill_switch": {"enabled": False}}})
    assert [r for r in s.rules if r.action] == []


def test_guarded_clients_reach_the_lan_subnets_unmarked(tmp_path):
    rt = tmp_path / "rt_tables"
    rt.write_text("111 wgc1\n")
    raw = {"data_dir": str(tmp_path), "advanced": {"rt_tables": str(rt)}, "paused_clients": ["192.168.50.7"],
           "tunnel_director": {"tunnels": {"wgc1": {"clients": ["192.168.50.0/24"]}}}}
    lan = [ipaddress.IPv4Network("192.168.50.0/24"), ipaddress.IPv4Network("192.168.60.0/24")]
    rules = chain(desired.build(config.validate(raw), lan_nets=lan), "TUN_DIR")[0].rules
    assert rules[:3] == ("-s 192.168.50.7/32 -j RETURN", "-d 192.168.50.0/24 -j RETURN",
                         "-d 192.168.60.0/24 -j RETURN")
    raw["advanced"]["kill_switch"] = {"enabled": False}
    rules = chain(desired.build(config.validate(raw), lan_nets=lan), "TUN_DIR")[0].rules
    assert not any(r.startswith("-d ") for r in rules)  # without guards nothing changes


def test_lan_subnets_are_the_lan_interfaces_connected_routes(tmp_path):
    from vpn_director import killswitch
    route = tmp_path / "route"
    route.write_text(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"   # default via the WAN
        "br0\t0032A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"    # 192.168.50.0/24
        "br0\t003CA8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"    # 192.168.60.0/24
        "br0\t0000000A\t0132A8C0\t0003\t0\t0\t0\t000000FF\t0\t0\t0\n"    # 10.0.0.0/8 via a LAN router
        "br1\t0065A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n")   # another interface
    assert [str(n) for n in killswitch.lan_subnets("br0", str(route))] == ["192.168.50.0/24", "192.168.60.0/24"]
    assert killswitch.lan_subnets("br0", str(tmp_path / "missing")) == []
