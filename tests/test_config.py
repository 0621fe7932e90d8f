"""Config loading and validation (SPEC §3): every key, older shell-tool files, and a corpus of
invalid files that must each be refused with the right JSON path, exit 2 and the kernel untouched."""

import copy
import difflib
import ipaddress
import json
import os
import re

import pytest

from netns import ROOT
from vpn_director import cli, config
from vpn_director.errors import EXIT_USAGE, ConfigError

RT_TABLES = "111 wgc1\n112 wgc2\n113 ovpnc1\n114 ovpnc3\n"
RT_PLACEHOLDER = "@RT_TABLES@"
EXAMPLE = os.path.join(ROOT, "examples", "vpn-director.json")


@pytest.fixture
def rt_tables(tmp_path):
    path = tmp_path / "rt_tables"
    path.write_text(RT_TABLES)
    return str(path)


def with_rt(raw, rt_path):
    """A deep copy of `raw` whose advanced.rt_tables points at the test's file (unless set)."""
    raw = copy.deepcopy(raw)
    adv = raw.setdefault("advanced", {})
    if isinstance(adv, dict):
        adv.setdefault("rt_tables", rt_path)
    return raw


def write(tmp_path, text, name="vpn-director.json"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def problems_of(excinfo):
    return excinfo.value.problems


def has_path(problems, path):
    """True when one problem is reported exactly at JSON path `path` ("path: message")."""
    return any(p.startswith(path + ": ") for p in problems)


# --------------------------------------------------------------------------------------------
# Valid files
# --------------------------------------------------------------------------------------------

def test_shipped_example_loads(tmp_path, rt_tables):
    raw = json.loads(open(EXAMPLE, encoding="utf-8").read())
    raw["advanced"]["rt_tables"] = rt_tables
    cfg = config.load(write(tmp_path, json.dumps(raw)))
    assert cfg.warnings == []
    assert [str(n) for n in cfg.xray.clients] == ["192.168.50.10/32", "192.168.50.64/27"]
    assert cfg.xray.servers == ["203.0.113.10/32"]
    assert [str(n) for n in cfg.xray.exclude_ips] == ["198.51.100.0/24"]
    assert cfg.xray.exclude_sets == ["ru"]
    assert [(t.name, t.table, t.slot) for t in cfg.tunnels] == [("wgc1", 111, 1), ("ovpnc1", 113, 2)]
    assert [str(n) for n in cfg.tunnels[0].clients] == ["192.168.50.0/24"]
    assert cfg.tunnels[0].exclude == ["ru"] and cfg.tunnels[1].exclude == []
    assert cfg.lan_interface == "br0"
    assert (cfg.boot_min_time, cfg.boot_wait_delay) == (120, 60)


def test_defaults_are_the_spec_values(tmp_path):
    for raw in ({}, {"advanced": {}, "xray": {}, "tunnel_director": {}},
                {"advanced": {"xray": {}, "tunnel_director": {}, "boot": {}}, "ipsets": {}}):
        cfg = config.validate(copy.deepcopy(raw), "defaults.json")
        assert cfg.data_dir == "/opt/vpn-director/data"
        assert cfg.paused_clients == []
        x = cfg.xray
        assert (x.clients, x.servers, x.exclude_ips, x.exclude_sets) == ([], [], [], ["ru"])
        assert cfg.tunnels == []
        assert x.tproxy_port == 12345
        assert x.route_table == 100
        assert x.rule_pref == 200
        assert (x.fwmark, x.fwmark_mask) == (0x100, 0x100)
        assert x.chain == "XRAY_TPROXY"
        assert x.clients_ipset == "XRAY_CLIENTS"
        assert x.servers_ipset == "XRAY_SERVERS"
        assert cfg.td_chain == "TUN_DIR"
        assert cfg.td_pref_base == 16384
        assert cfg.td_mark_mask == 0x00FF0000
        assert cfg.td_mark_shift == 16
        assert (cfg.boot_min_time, cfg.boot_wait_delay) == (120, 60)
        assert cfg.lan_interface == "br0"
        assert cfg.state_dir == "/tmp/tunnel_director"
        assert cfg.rt_tables == "/etc/iproute2/rt_tables"
        assert cfg.ipset_sources and all("{cc}" in s for s in cfg.ipset_sources)
        assert cfg.td_mark(1) == 0x10000 and cfg.td_max_slots == 255
        assert cfg.warnings == []


def test_default_path_and_env_override(tmp_path, rt_tables):
    path = write(tmp_path, json.dumps(with_rt({"xray": {"clients": ["192.168.50.10"]}}, rt_tables)))
    cfg = config.load(None, env={"VPD_CONFIG": path})
    assert cfg.path == path and [str(n) for n in cfg.xray.clients] == ["192.168.50.10/32"]
    assert config.DEFAULT_PATH == "/opt/vpn-director/vpn-director.json"


def test_every_key_is_read(tmp_path, rt_tables):
    raw = {
        "data_dir": "/srv/vpd/data",
        "paused_clients": ["192.168.50.11"],
        "xray": {"clients": ["192.168.50.10", "192.168.50.11"], "servers": ["203.0.113.10", "Proxy.Example.COM."],
                 "exclude_ips": ["198.51.100.0/24"], "exclude_sets": ["ru", "ua", "MY_SET"]},
        "tunnel_director": {"tunnels": {"wgc2": {"clients": ["192.168.60.0/24"], "exclude": ["ru"]}}},
        "advanced": {
            "xray": {"tproxy_port": 23456, "route_table": 150, "rule_pref": 300, "fwmark": "0x200",
                     "fwmark_mask": "0x200", "chain": "XR", "clients_ipset": "XC", "servers_ipset": "XS"},
            "tunnel_director": {"chain": "TD", "pref_base": 20000, "mark_mask": "0x0000f000", "mark_shift": 12},
            "boot": {"min_time": 0, "wait_delay": 5},
            "lan_interface": "lan0", "state_dir": "/run/vpd", "rt_tables": rt_tables,
            "iptables": "nft", "lock_timeout": 30,
        },
        "ipsets": {"sources": ["file:///srv/zones/{cc}.zone", "https://mirror.example/{cc}.txt"]},
    }
    cfg = config.validate(raw, "all.json")
    assert cfg.warnings == []
    assert cfg.data_dir == "/srv/vpd/data" and cfg.state_dir == "/run/vpd" and cfg.lan_interface == "lan0"
    assert [str(n) for n in cfg.paused_clients] == ["192.168.50.11/32"]
    x = cfg.xray
    assert x.servers == ["203.0.113.10/32", "proxy.example.com"]
    assert x.exclude_sets == ["ru", "ua", "MY_SET"]
    assert (x.tproxy_port, x.route_table, x.rule_pref, x.fwmark, x.fwmark_mask) == (23456, 150, 300, 0x200, 0x200)
    assert (x.chain, x.clients_ipset, x.servers_ipset) == ("XR", "XC", "XS")
    assert (cfg.td_chain, cfg.td_pref_base, cfg.td_mark_mask, cfg.td_mark_shift) == ("TD", 20000, 0xF000, 12)
    assert cfg.td_max_slots == 15 and cfg.td_mark(1) == 0x1000
    assert (cfg.boot_min_time, cfg.boot_wait_delay, cfg.iptables, cfg.lock_timeout) == (0, 5, "nft", 30)
    assert cfg.ipset_sources == raw["ipsets"]["sources"]
    assert [(t.name, t.table) for t in cfg.tunnels] == [("wgc2", 112)]
    xc, tuns = config.effective(cfg)
    assert [str(n) for n in xc] == ["192.168.50.10/32"]  # the paused client is out


# Files as the shell-based VPN Director wrote them: servers_ipset (or bypass_ipset), exclude_ips,
# paused_clients, numbers sometimes as strings.
SHELL_FILE = """{
  "data_dir": "/jffs/addons/vpn-director/data",
  "paused_clients": ["192.168.50.20", "192.168.60.7"],
  "xray": {
    "clients": ["192.168.50.10", "192.168.50.20"],
    "servers": ["203.0.113.10"],
    "exclude_ips": ["198.51.100.0/24", "192.0.2.1"],
    "exclude_sets": ["ru"]
  },
  "tunnel_director": {
    "tunnels": {
      "ovpnc3": {"clients": ["192.168.60.0/24"], "exclude": ["ru"]}
    }
  },
  "advanced": {
    "xray": {
      "tproxy_port": "12345",
      "route_table": 100,
      "rule_pref": 200,
      "fwmark": "0x100",
      "fwmark_mask": "0x100",
      "chain": "XRAY_TPROXY",
      "clients_ipset": "XRAY_CLIENTS",
      "%(servers_key)s": "%(servers_set)s"
    },
    "tunnel_director": {"chain": "TUN_DIR", "pref_base": 16384, "mark_mask": "0x00ff0000", "mark_shift": 16},
    "boot": {"min_time": 120, "wait_delay": 60},
    "rt_tables": "%(rt)s"
  }
}
"""


@pytest.mark.parametrize("servers_key", ["servers_ipset", "bypass_ipset"])
def test_older_shell_tool_file_loads(tmp_path, rt_tables, servers_key):
    text = SHELL_FILE % {"servers_key": servers_key, "servers_set": "XRAY_BYPASS", "rt": rt_tables}
    cfg = config.load(write(tmp_path, text))
    assert cfg.warnings == []
    assert cfg.xray.servers_ipset == "XRAY_BYPASS"
    assert cfg.xray.tproxy_port == 12345
    assert [str(n) for n in cfg.xray.exclude_ips] == ["198.51.100.0/24", "192.0.2.1/32"]
    assert [str(n) for n in cfg.paused_clients] == ["192.168.50.20/32", "192.168.60.7/32"]
    assert [(t.name, t.table, t.slot) for t in cfg.tunnels] == [("ovpnc3", 114, 1)]
    xc, tuns = config.effective(cfg)
    assert [str(n) for n in xc] == ["192.168.50.10/32"]
    # a paused host inside a tunnel subnet needs an explicit hole
    assert [str(n) for n in config.paused_inside(cfg, tuns[0][1])] == ["192.168.60.7/32"]


def test_bypass_ipset_and_servers_ipset_may_agree(rt_tables):
    raw = with_rt({"advanced": {"xray": {"servers_ipset": "BYP", "bypass_ipset": "BYP"}}}, rt_tables)
    assert config.validate(raw).xray.servers_ipset == "BYP"


def test_upper_case_country_codes_are_normalised(rt_tables):
    raw = with_rt({"xray": {"exclude_sets": ["RU", "Ua", "MY_SET", "ru"]},
                   "tunnel_director": {"tunnels": {"wgc1": {"clients": ["192.168.50.0/24"],
                                                            "exclude": ["UA", "By"]}}}}, rt_tables)
    cfg = config.validate(raw)
    assert cfg.xray.exclude_sets == ["ru", "ua", "MY_SET"]  # external set names keep their case
    assert cfg.tunnels[0].exclude == ["ua", "by"]
    # "ru" after "RU" is the same set: a warning, not silently two entries, not an error
    assert [w for w in cfg.warnings if w.startswith("xray.exclude_sets[3]: ")]
    assert all(config.is_country(n) for n in ("ru", "ua", "by"))


def test_tunnel_order_is_file_order(tmp_path, rt_tables):
    text = ('{"tunnel_director": {"tunnels": {'
            '"ovpnc3": {"clients": ["192.168.1.5"]}, "wgc2": {"clients": ["192.168.1.6"]}, '
            '"ovpnc1": {"clients": ["192.168.1.7"]}, "wgc1": {"clients": ["192.168.1.8"]}}},'
            ' "advanced": {"rt_tables": "%s"}}' % rt_tables)
    cfg = config.load(write(tmp_path, text))
    assert [(t.name, t.slot, t.table) for t in cfg.tunnels] == [
        ("ovpnc3", 1, 114), ("wgc2", 2, 112), ("ovpnc1", 3, 113), ("wgc1", 4, 111)]
    assert [cfg.td_mark(t.slot) for t in cfg.tunnels] == [0x10000, 0x20000, 0x30000, 0x40000]


def test_numeric_tables_and_main(rt_tables):
    raw = with_rt({"tunnel_director": {"tunnels": {"200": {"clients": ["10.1.0.0/16"]},
                                                   "main": {"clients": ["10.2.0.0/16"]},
                                                   "wgc1": {"clients": ["10.3.0.0/16"]}}},
                   "advanced": {"xray": {"route_table": "wgc2"}}}, rt_tables)
    cfg = config.validate(raw)
    assert [(t.name, t.table, t.slot) for t in cfg.tunnels] == [("200", 200, 1), ("main", 254, 2), ("wgc1", 111, 3)]
    assert cfg.xray.route_table == 112
    raw = with_rt({"advanced": {"xray": {"route_table": "150"}}}, rt_tables)
    assert config.validate(raw).xray.route_table == 150


def test_rt_tables_d_conf_files_are_read(tmp_path):
    etc = tmp_path / "iproute2"
    (etc / "rt_tables.d").mkdir(parents=True)
    (etc / "rt_tables").write_text("# reserved values\n255 local\n254 main\n111 wgc1\n")
    (etc / "rt_tables.d" / "vpn.conf").write_text("120 wgc5  # added by the VPN package\n0x7b ovpnc5\n")
    (etc / "rt_tables.d" / "ignored.txt").write_text("130 wgc6\n")
    raw = {"tunnel_director": {"tunnels": {"wgc5": {"clients": ["10.5.0.0/16"]},
                                           "ovpnc5": {"clients": ["10.6.0.0/16"]},
                                           "wgc1": {"clients": ["10.7.0.0/16"]}}},
           "advanced": {"rt_tables": str(etc / "rt_tables")}}
    cfg = config.validate(copy.deepcopy(raw))
    assert [(t.name, t.table) for t in cfg.tunnels] == [("wgc5", 120), ("ovpnc5", 123), ("wgc1", 111)]
    raw["tunnel_director"]["tunnels"]["wgc6"] = {"clients": ["10.8.0.0/16"]}
    with pytest.raises(ConfigError) as e:
        config.validate(raw)
    assert len(problems_of(e)) == 1 and has_path(problems_of(e), "tunnel_director.tunnels.wgc6")


def test_unknown_keys_are_warnings_not_errors(rt_tables):
    raw = with_rt({"comment": "mine", "xray": {"clients": ["192.168.50.10"], "exclude_set": ["ru"]},
                   "tunnel_director": {"enabled": True, "tunnels": {"wgc1": {"clients": ["10.0.0.0/8"],
                                                                             "note": "x"}}},
                   "advanced": {"xray": {"tproxy_prot": 1}, "tunnel_director": {"mark": 1},
                                "boot": {"delay": 1}, "colour": "blue"},
                   "ipsets": {"source": []}}, rt_tables)
    cfg = config.validate(raw)
    paths = sorted(w.split(":")[0] for w in cfg.warnings)
    assert paths == sorted([
        "comment", "xray.exclude_set", "tunnel_director.enabled", "tunnel_director.tunnels.wgc1.note",
        "advanced.xray.tproxy_prot", "advanced.tunnel_director.mark", "advanced.boot.delay",
        "advanced.colour", "ipsets.source"])
    assert all("unknown key" in w for w in cfg.warnings)
    assert cfg.xray.exclude_sets == ["ru"]  # the misspelt key did not replace the default


def test_host_bits_are_masked_with_a_warning(rt_tables):
    cfg = config.validate(with_rt({"xray": {"clients": ["192.168.50.77/24"]}}, rt_tables))
    assert cfg.xray.clients == [ipaddress.IPv4Network("192.168.50.0/24")]
    assert [w for w in cfg.warnings if w.startswith("xray.clients[0]: ")]


def test_every_problem_is_reported_at_once(tmp_path, rt_tables):
    raw = with_rt({
        "data_dir": "relative/data",
        "xray": {"clients": ["192.168.50.10", "192.168.1.300", "0.0.0.0/0"], "exclude_sets": ["ru", "bad set"]},
        "tunnel_director": {"tunnels": {"wgc1": {"clients": ["192.168.50.0/24", "10.0.0.1", "192.168.1.300"]},
                                        "wgc9": {"clients": []}}},
        "advanced": {"xray": {"tproxy_port": 70000, "chain": "TUN_DIR"},
                     "tunnel_director": {"mark_shift": 8},
                     "lan_interface": "a-very-long-bridge-name"},
        "ipsets": {"sources": ["https://example.com/ru.zone"]},
    }, rt_tables)
    expected = [
        "data_dir", "xray.clients[1]", "xray.clients[2]", "xray.exclude_sets[1]",
        "tunnel_director.tunnels.wgc1.clients[2]", "tunnel_director.tunnels.wgc9",
        "advanced.xray.tproxy_port", "advanced.tunnel_director.chain", "advanced.tunnel_director.mark_shift",
        "advanced.lan_interface", "ipsets.sources[0]",
    ]
    with pytest.raises(ConfigError) as e:
        config.validate(copy.deepcopy(raw), "many.json")
    problems = problems_of(e)
    assert len(problems) == len(expected), "\n".join(problems)
    for path in expected:
        assert has_path(problems, path), "%s not reported in:\n%s" % (path, "\n".join(problems))
    assert "tunnel_director.tunnels.wgc1.clients[2]: '192.168.1.300' is not an IPv4 address or CIDR" in problems

    # The CLI lists them all and exits 2 (the check command never reaches the kernel).
    path = write(tmp_path, json.dumps(raw))
    for command in ("check", "render"):
        assert cli.main(["-c", path, command]) == EXIT_USAGE


def test_cli_lists_every_problem_on_stderr(tmp_path, rt_tables, capsys):
    raw = with_rt({"xray": {"clients": ["192.168.1.300"]}, "advanced": {"xray": {"tproxy_port": 0}}}, rt_tables)
    assert cli.main(["-c", write(tmp_path, json.dumps(raw)), "check"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "invalid config: 2 problem(s)" in err
    assert "  xray.clients[0]: '192.168.1.300' is not an IPv4 address or CIDR" in err
    assert "  advanced.xray.tproxy_port: 0 is out of range 1..65535" in err


def test_duplicate_json_keys_are_reported(tmp_path, rt_tables):
    text = ('{"xray": {"clients": ["192.168.50.10"], "clients": ["192.168.50.11"]},'
            ' "tunnel_director": {"tunnels": {"wgc1": {"clients": ["10.0.0.1"], "exclude": [], "exclude": ["ru"]},'
            ' "wgc2": {}, "wgc1": {"clients": ["10.0.0.2"]}}},'
            ' "advanced": {"rt_tables": "%s"}, "data_dir": "/a", "data_dir": "/b"}' % rt_tables)
    with pytest.raises(ConfigError) as e:
        config.load(write(tmp_path, text))
    problems = problems_of(e)
    for path in ("xray.clients", "tunnel_director.tunnels.wgc1", "data_dir"):
        assert has_path(problems, path), "\n".join(problems)
    assert all("more than once" in p for p in problems)


def test_not_json_and_missing_file(tmp_path):
    for text in ("{\"xray\": {\"clients\": [\"192.168.50.10\"],}}", "", "xray.clients=1", "{'a': 1}"):
        path = write(tmp_path, text)
        with pytest.raises(ConfigError) as e:
            config.load(path)
        assert len(problems_of(e)) == 1 and problems_of(e)[0].startswith(path + ": not valid JSON")
        assert e.value.exit_code == EXIT_USAGE
    missing = str(tmp_path / "nope.json")
    with pytest.raises(ConfigError) as e:
        config.load(missing)
    assert problems_of(e)[0].startswith(missing + ": cannot read config")
    assert cli.main(["-c", missing, "check"]) == EXIT_USAGE
    with pytest.raises(ConfigError) as e:
        config.load(str(tmp_path))  # a directory
    assert "cannot read config" in problems_of(e)[0]


# --------------------------------------------------------------------------------------------
# The corpus of invalid files: (id, config, exact JSON path of one expected problem).
# A config is a dict (advanced.rt_tables is filled in with the test's file) or raw JSON text
# (RT_PLACEHOLDER is replaced), for what a dict cannot express (duplicate keys, a non-object).
# --------------------------------------------------------------------------------------------

def test_a_config_file_starting_with_a_utf8_bom_loads(tmp_path, rt_tables):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(with_rt(VALID, rt_tables)).encode())
    assert [t.name for t in config.load(str(path)).tunnels] == ["wgc1"]


def test_a_config_file_over_1_mib_is_refused_without_reading_it_all(tmp_path, capsys):
    big = write(tmp_path, '{"data_dir": "/a", "x": "%s"}' % ("y" * (1 << 20)))
    with pytest.raises(ConfigError) as e:
        config.load(big)
    assert problems_of(e) == ["%s: larger than 1024 KiB: not a vpn-director config" % big]
    assert cli.main(["-c", "/dev/zero", "check"]) == EXIT_USAGE  # endless: only 1 MiB + 1 bytes are read
    assert "/dev/zero: larger than 1024 KiB" in capsys.readouterr().err


def test_text_that_is_not_utf8_is_an_invalid_config(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"data_dir": "/caf\xe9"}')
    with pytest.raises(ConfigError) as e:
        config.load(str(path))
    assert problems_of(e) == ["%s: not UTF-8 text (byte 18)" % path]


@pytest.mark.parametrize("text", ["[" * 1000 + "]" * 1000, '{"a": ' * 900 + "1" + "}" * 900,
                                  '{"xray": {"clients": %s}}' % ("[" * 40 + "]" * 40)])
def test_deeply_nested_json_is_an_invalid_config_not_an_internal_error(tmp_path, capsys, text):
    path = write(tmp_path, text)
    assert cli.main(["-c", path, "check"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "%s: nested more than 32 levels deep" % path in err and "internal error" not in err


@pytest.mark.parametrize("key", ["xray.clients", "xray.exclude_ips", "xray.servers", "paused_clients",
                                 "tunnel_director.tunnels.wgc1.clients"])
@pytest.mark.parametrize("text", ["192.168.1.9/08", "192.168.01.9", "010.0.0.0/8"])
def test_a_number_with_a_leading_zero_in_a_cidr_is_an_error_with_its_path(rt_tables, key, text):
    raw = {}
    *parents, leaf = key.split(".")
    node = raw
    for name in parents:
        node = node.setdefault(name, {})
    node[leaf] = ["192.168.50.0/24", text]
    with pytest.raises(ConfigError) as e:
        config.validate(with_rt(raw, rt_tables))
    assert any(p.startswith("%s[1]: %r is not an IPv4 address" % (key, text)) for p in problems_of(e)), problems_of(e)


@pytest.mark.parametrize("where", ["before", "after"])
def test_an_empty_config_path_is_bad_usage_not_the_default_config(tmp_path, capsys, monkeypatch, where):
    monkeypatch.setenv("VPD_CONFIG", write(tmp_path, json.dumps({"xray": {"exclude_sets": []}})))
    argv = ["-c", "", "check"] if where == "before" else ["check", "-c", ""]
    assert cli.main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "argument -c/--config: an empty path" in err and "config OK" not in err


def ax(**kw):
    return {"advanced": {"xray": kw}}


def atd(tunnels=None, **kw):
    raw = {"advanced": {"tunnel_director": kw}}
    if tunnels:
        raw["tunnel_director"] = {"tunnels": {t: {"clients": ["192.168.%d.0/24" % (60 + i)]}
                                              for i, t in enumerate(tunnels)}}
    return raw


def tun(body, name="wgc1"):
    return {"tunnel_director": {"tunnels": {name: body}}}


def xr(**kw):
    return {"xray": kw}


def adv(**kw):
    return {"advanced": kw}


CORPUS = [
    # addresses and CIDRs
    ("td-client-octet-300", tun({"clients": ["192.168.50.0/24", "192.168.1.5", "192.168.1.300"], "exclude": ["ru"]}),
     "tunnel_director.tunnels.wgc1.clients[2]"),
    ("xray-client-hostname", xr(clients=["laptop.lan"]), "xray.clients[0]"),
    ("xray-client-default-route", xr(clients=["192.168.50.10", "0.0.0.0/0"]), "xray.clients[1]"),
    ("xray-client-prefix-33", xr(clients=["10.0.0.0/33"]), "xray.clients[0]"),
    ("xray-client-ipv6", xr(clients=["fd00::1"]), "xray.clients[0]"),
    ("xray-client-number", xr(clients=[3232248330]), "xray.clients[0]"),
    ("xray-client-padded", xr(clients=[" 192.168.50.10"]), "xray.clients[0]"),
    ("xray-client-leading-zero", xr(clients=["192.168.050.10"]), "xray.clients[0]"),
    ("xray-clients-string", xr(clients="192.168.50.10"), "xray.clients"),
    ("xray-not-object", {"xray": ["192.168.50.10"]}, "xray"),
    ("xray-server-bad-hostname", xr(servers=["-proxy-.example.com"]), "xray.servers[0]"),
    ("xray-server-octet-300", xr(servers=["203.0.113.10", "203.0.113.300"]), "xray.servers[1]"),
    ("xray-server-default-route", xr(servers=["0.0.0.0/0"]), "xray.servers[0]"),
    ("xray-server-not-string", xr(servers=[{"host": "proxy"}]), "xray.servers[0]"),
    ("xray-exclude-ip-bad", xr(exclude_ips=["198.51.100.0/24", "not-a-cidr"]), "xray.exclude_ips[1]"),
    ("xray-exclude-ip-default-route", xr(exclude_ips=["0.0.0.0/0"]), "xray.exclude_ips[0]"),
    ("xray-exclude-ips-object", xr(exclude_ips={"a": "198.51.100.0/24"}), "xray.exclude_ips"),
    ("paused-client-bad", {"paused_clients": ["192.168.50.256"]}, "paused_clients[0]"),
    ("paused-clients-object", {"paused_clients": {"192.168.50.10": True}}, "paused_clients"),
    # set names
    ("exclude-set-32-chars", xr(exclude_sets=["A" * 32]), "xray.exclude_sets[0]"),
    ("exclude-set-space", xr(exclude_sets=["ru", "my set"]), "xray.exclude_sets[1]"),
    ("exclude-set-slash", tun({"clients": ["192.168.50.0/24"], "exclude": ["ru", "bad/set"]}),
     "tunnel_director.tunnels.wgc1.exclude[1]"),
    ("exclude-set-empty", xr(exclude_sets=[""]), "xray.exclude_sets[0]"),
    ("exclude-set-number", xr(exclude_sets=[7]), "xray.exclude_sets[0]"),
    ("exclude-sets-string", xr(exclude_sets="ru"), "xray.exclude_sets"),
    ("exclude-set-is-own-set", xr(exclude_sets=["XRAY_CLIENTS"]), "xray.exclude_sets[0]"),
    ("td-exclude-is-own-set", tun({"clients": ["10.0.0.1"], "exclude": ["XRAY_SERVERS"]}),
     "tunnel_director.tunnels.wgc1.exclude[0]"),
    ("clients-ipset-32-chars", ax(clients_ipset="X" * 32), "advanced.xray.clients_ipset"),
    ("servers-ipset-charset", ax(servers_ipset="XRAY SERVERS"), "advanced.xray.servers_ipset"),
    ("bypass-ipset-charset", ax(bypass_ipset="bypass!"), "advanced.xray.bypass_ipset"),
    ("bypass-vs-servers-ipset", ax(servers_ipset="XRAY_SERVERS", bypass_ipset="XRAY_BYPASS"),
     "advanced.xray.bypass_ipset"),
    ("clients-ipset-equals-servers", ax(clients_ipset="XRAY", servers_ipset="XRAY"), "advanced.xray.servers_ipset"),
    ("set-name-reserved-tmp-prefix", ax(clients_ipset="vpd-tmp-0"), "advanced.xray.clients_ipset"),
    # tunnels and routing tables
    ("tunnel-table-unknown", tun({"clients": ["10.0.0.1"]}, name="wgc9"), "tunnel_director.tunnels.wgc9"),
    ("tunnel-table-local", tun({"clients": ["10.0.0.1"]}, name="local"), "tunnel_director.tunnels.local"),
    ("tunnel-table-zero", tun({"clients": ["10.0.0.1"]}, name="0"), "tunnel_director.tunnels.0"),
    ("tunnel-table-unicode-digit", tun({"clients": ["10.0.0.1"]}, name="\u00b2"),
     "tunnel_director.tunnels.\u00b2"),
    ("tunnel-is-xray-route-table", tun({"clients": ["10.0.0.1"]}, name="100"), "tunnel_director.tunnels.100"),
    ("tunnel-body-list", tun(["192.168.50.0/24"]), "tunnel_director.tunnels.wgc1"),
    ("tunnel-clients-string", tun({"clients": "192.168.50.0/24"}), "tunnel_director.tunnels.wgc1.clients"),
    ("tunnels-list", {"tunnel_director": {"tunnels": [{"wgc1": {"clients": ["10.0.0.1"]}}]}},
     "tunnel_director.tunnels"),
    ("tunnel-director-string", {"tunnel_director": "wgc1"}, "tunnel_director"),
    ("too-many-tunnels-for-mask", atd(["wgc1", "wgc2", "ovpnc1", "ovpnc3"], mark_mask="0x00030000"),
     "tunnel_director.tunnels"),
    ("xray-route-table-main", ax(route_table="main"), "advanced.xray.route_table"),
    ("xray-route-table-unknown", ax(route_table="xray"), "advanced.xray.route_table"),
    ("xray-route-table-float", ax(route_table=100.5), "advanced.xray.route_table"),
    # numbers
    ("tproxy-port-70000", ax(tproxy_port=70000), "advanced.xray.tproxy_port"),
    ("tproxy-port-zero", ax(tproxy_port=0), "advanced.xray.tproxy_port"),
    ("tproxy-port-float", ax(tproxy_port=12345.5), "advanced.xray.tproxy_port"),
    ("tproxy-port-bool", ax(tproxy_port=True), "advanced.xray.tproxy_port"),
    ("tproxy-port-word", ax(tproxy_port="12k"), "advanced.xray.tproxy_port"),
    ("tproxy-port-unicode-digits", ax(tproxy_port="\u0661\u0662\u0663"), "advanced.xray.tproxy_port"),
    ("tproxy-port-superscript", ax(tproxy_port="\u00b2"), "advanced.xray.tproxy_port"),
    ("rule-pref-32766", ax(rule_pref=32766), "advanced.xray.rule_pref"),
    ("boot-min-time-negative", adv(boot={"min_time": -1}), "advanced.boot.min_time"),
    ("boot-wait-delay-word", adv(boot={"wait_delay": "soon"}), "advanced.boot.wait_delay"),
    ("boot-string", adv(boot="fast"), "advanced.boot"),
    ("lock-timeout-negative", adv(lock_timeout=-5), "advanced.lock_timeout"),
    ("pref-base-word", atd(pref_base="high"), "advanced.tunnel_director.pref_base"),
    # marks, priorities, chains
    ("fwmark-outside-mask", ax(fwmark="0x200", fwmark_mask="0x100"), "advanced.xray.fwmark"),
    ("fwmark-zero", ax(fwmark=0), "advanced.xray.fwmark"),
    ("fwmark-word", ax(fwmark="mark"), "advanced.xray.fwmark"),
    ("fwmark-bool", ax(fwmark=True), "advanced.xray.fwmark"),
    ("fwmark-mask-33-bits", ax(fwmark_mask="0x100000000"), "advanced.xray.fwmark_mask"),
    ("fwmark-overlaps-tunnel-mask", ax(fwmark="0x10000", fwmark_mask="0x10000"),
     "advanced.tunnel_director.mark_mask"),
    ("mark-mask-non-contiguous", atd(mark_mask="0x00ff00ff"), "advanced.tunnel_director.mark_mask"),
    ("mark-mask-zero", atd(mark_mask="0x0"), "advanced.tunnel_director.mark_mask"),
    ("mark-mask-negative", atd(mark_mask=-1), "advanced.tunnel_director.mark_mask"),
    ("mark-shift-inconsistent", atd(mark_shift=8), "advanced.tunnel_director.mark_shift"),
    ("mark-shift-40", atd(mark_shift=40), "advanced.tunnel_director.mark_shift"),
    ("rule-pref-collides-tunnel-pref", dict(atd(["wgc1", "wgc2"]), advanced={"xray": {"rule_pref": 16385}}),
     "advanced.xray.rule_pref"),
    ("pref-base-equals-xray-pref", atd(pref_base=200), "advanced.xray.rule_pref"),
    ("pref-base-overflow", atd(["wgc1", "wgc2"], pref_base=32765), "advanced.tunnel_director.pref_base"),
    # the whole slot range (255 with the default mask) must sit before the main rule at 32766
    ("pref-base-slot-range-overflow", atd(["wgc1"], pref_base=32600), "advanced.tunnel_director.pref_base"),
    ("same-chain-for-both", {"advanced": {"xray": {"chain": "ROUTING"}, "tunnel_director": {"chain": "ROUTING"}}},
     "advanced.tunnel_director.chain"),
    ("xray-chain-29-chars", ax(chain="X" * 29), "advanced.xray.chain"),
    ("xray-chain-space", ax(chain="XRAY TPROXY"), "advanced.xray.chain"),
    ("xray-chain-builtin", ax(chain="PREROUTING"), "advanced.xray.chain"),
    ("xray-chain-target-tproxy", ax(chain="TPROXY"), "advanced.xray.chain"),
    ("xray-chain-leading-dash", ax(chain="-XRAY"), "advanced.xray.chain"),
    ("td-chain-target-mark", atd(chain="MARK"), "advanced.tunnel_director.chain"),
    ("td-chain-verdict-accept", atd(chain="ACCEPT"), "advanced.tunnel_director.chain"),
    ("td-chain-number", atd(chain=5), "advanced.tunnel_director.chain"),
    # paths, interface, backend, country sources
    ("ipsets-source-without-cc", {"ipsets": {"sources": ["https://example.com/ru.zone"]}}, "ipsets.sources[0]"),
    ("ipsets-source-not-url", {"ipsets": {"sources": ["/opt/zones/{cc}.zone"]}}, "ipsets.sources[0]"),
    ("ipsets-source-ftp", {"ipsets": {"sources": ["file:///z/{cc}.zone", "ftp://x/{cc}"]}}, "ipsets.sources[1]"),
    ("ipsets-sources-string", {"ipsets": {"sources": "https://example.com/{cc}.zone"}}, "ipsets.sources"),
    ("ipsets-list", {"ipsets": ["https://example.com/{cc}.zone"]}, "ipsets"),
    ("lan-interface-16-chars", adv(lan_interface="br0-lan-bridge-x"), "advanced.lan_interface"),
    ("lan-interface-wildcard", adv(lan_interface="br+"), "advanced.lan_interface"),
    ("lan-interface-number", adv(lan_interface=0), "advanced.lan_interface"),
    ("data-dir-relative", {"data_dir": "vpn-director/data"}, "data_dir"),
    ("data-dir-number", {"data_dir": 1}, "data_dir"),
    ("state-dir-relative", adv(state_dir="tmp/tunnel_director"), "advanced.state_dir"),
    ("rt-tables-relative", adv(rt_tables="rt_tables"), "advanced.rt_tables"),
    ("iptables-backend-unknown", adv(iptables="nftables"), "advanced.iptables"),
    ("advanced-list", {"advanced": []}, "advanced"),
    ("advanced-xray-string", {"advanced": {"xray": "XRAY_TPROXY"}}, "advanced.xray"),
    # what only raw text can express
    ("duplicate-key-xray-clients",
     '{"xray": {"clients": ["192.168.50.10"], "clients": ["192.168.50.11"]},'
     ' "advanced": {"rt_tables": "%s"}}' % RT_PLACEHOLDER, "xray.clients"),
    ("duplicate-tunnel",
     '{"tunnel_director": {"tunnels": {"wgc1": {"clients": ["10.0.0.1"]}, "wgc1": {"clients": ["10.0.0.2"]}}},'
     ' "advanced": {"rt_tables": "%s"}}' % RT_PLACEHOLDER, "tunnel_director.tunnels.wgc1"),
    ("root-list", '[{"xray": {"clients": ["192.168.50.10"]}}]', "<root>"),
    ("root-string", '"vpn-director"', "<root>"),
]


def test_corpus_is_large_and_ids_are_unique():
    ids = [c[0] for c in CORPUS]
    assert len(ids) >= 35
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("cfg,path", [pytest.param(c, p, id=i) for i, c, p in CORPUS])
def test_invalid_config_is_refused_with_its_path(tmp_path, rt_tables, cfg, path):
    with pytest.raises(ConfigError) as e:
        if isinstance(cfg, str):
            config.load(write(tmp_path, cfg.replace(RT_PLACEHOLDER, rt_tables)))
        else:
            config.validate(with_rt(cfg, rt_tables), "corpus.json")
    assert has_path(problems_of(e), path), "wanted a problem at %s, got:\n%s" % (path, "\n".join(problems_of(e)))
    assert e.value.exit_code == EXIT_USAGE


# --------------------------------------------------------------------------------------------
# Kernel: every corpus case through the real CLI leaves the kernel byte-identical.
# --------------------------------------------------------------------------------------------

VALID = {"xray": {"clients": ["192.168.50.10"], "exclude_sets": ["ru"]},
         "tunnel_director": {"tunnels": {"wgc1": {"clients": ["192.168.50.0/24"], "exclude": ["ru"]}}}}


COUNTERS_RE = re.compile(r"\[\d+:\d+\]$", re.M)


def kernel_state(router):
    """Everything apply could touch, as text: iptables (all tables), ipset (raw, with initval),
    ip rules, all routes, plus the normalised snapshot and the state directory's files."""
    state = dict(router.snapshot())
    save = router.ns.run(["iptables-%s-save" % router.backend]).stdout
    state["iptables"] = "\n".join(l for l in save.splitlines() if not l.startswith("#"))
    for key in ("mangle", "iptables"):
        # built-in chain policy counters move with traffic (the bridge sends IGMP reports at
        # any time); rules, chains and policies are what must not change
        state[key] = COUNTERS_RE.sub("[0:0]", state[key])
    state["ipset-raw"] = router.ns.run(["ipset", "save"]).stdout
    state["routes-all"] = router.ns.run(["ip", "-4", "route", "show", "table", "all"]).stdout
    files = {}
    for dirpath, _, names in os.walk(str(router.state_dir)):
        for n in names:
            p = os.path.join(dirpath, n)
            with open(p, "rb") as fh:
                files[os.path.relpath(p, str(router.state_dir))] = fh.read()
    state["state_dir"] = files
    return state


def _write_case(router, cfg, name):
    if isinstance(cfg, str):
        path = router.tmp / name
        path.write_text(cfg.replace(RT_PLACEHOLDER, str(router.rt_tables)))
        return str(path)
    if isinstance(cfg.get("advanced", {}), dict):
        return router.config(cfg, name=name)
    path = router.tmp / name
    path.write_text(json.dumps(dict(cfg, data_dir=cfg.get("data_dir", str(router.data)))))
    return str(path)


def _diff(before, after):
    out = []
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key), after.get(key)
        if a == b:
            continue
        if isinstance(a, str) and isinstance(b, str):
            diff = difflib.unified_diff(a.splitlines(), b.splitlines(), "before", "after", lineterm="", n=0)
            out.append("[%s]\n%s" % (key, "\n".join(list(diff)[2:])))
        else:
            out.append("[%s] %r -> %r" % (key, a, b))
    return "\n".join(out)


def _reported(stderr, path):
    return any(line.strip().startswith(path + ": ") for line in stderr.splitlines())


@pytest.mark.kernel
@pytest.mark.timeout(600)
def test_invalid_configs_leave_the_kernel_untouched(router):
    router.vpd("apply", config=router.config(VALID), check=0)
    before = kernel_state(router)
    assert "XRAY_TPROXY" in before["mangle"] and "TUN_DIR" in before["mangle"]
    assert "XRAY_CLIENTS" in before["ipset"] and "lookup 100" in before["rules"]

    extra = [("not-json", "{\"xray\": {\"clients\": [\"192.168.50.10\"],}}", "not valid JSON"),
             ("empty-file", "", "not valid JSON")]
    failures = []
    for case_id, cfg, path in CORPUS:
        cfg_path = _write_case(router, cfg, "corpus-%s.json" % case_id.replace("/", "_"))
        for command in ("apply", "check"):
            try:
                proc = router.vpd(command, config=cfg_path, check=2)
            except AssertionError as e:
                failures.append("%s/%s: %s" % (case_id, command, str(e).splitlines()[0]))
                continue
            if not _reported(proc.stderr, path):
                failures.append("%s/%s: %s not reported in stderr:\n%s" % (case_id, command, path, proc.stderr))
        after = kernel_state(router)
        if after != before:
            failures.append("%s: kernel state changed: %s" % (case_id, _diff(before, after)))
            router.vpd("apply", config=router.config(VALID), check=0)  # restore for the next cases
            before = kernel_state(router)
    for case_id, text, wanted in extra:
        cfg_path = str(router.tmp / ("extra-%s.json" % case_id))
        with open(cfg_path, "w") as fh:
            fh.write(text)
        proc = router.vpd("apply", config=cfg_path)
        if proc.returncode != 2 or wanted not in proc.stderr:
            failures.append("%s: exit %d, stderr %r" % (case_id, proc.returncode, proc.stderr))
        after = kernel_state(router)
        if after != before:
            failures.append("%s: kernel state changed: %s" % (case_id, _diff(before, after)))
    assert not failures, "%d of %d cases went wrong:\n%s" % (len(failures), len(CORPUS) + len(extra),
                                                            "\n".join(failures))
    # the valid config still applies as a no-op afterwards
    assert "no changes" in router.vpd("apply", config=router.config(VALID), check=0).stdout


def test_reread_under_the_lock_loads_only_a_changed_file(tmp_path):
    """apply re-reads the config once it holds the lock; an unchanged file is not validated twice."""
    from vpn_director import engine
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"data_dir": str(tmp_path), "xray": {"clients": ["192.168.1.10"]}}))
    cfg = config.load(str(path))
    assert engine.reread(cfg) is cfg
    new = tmp_path / "new.json"
    new.write_text(json.dumps({"data_dir": str(tmp_path), "xray": {"clients": ["192.168.1.11"]}}))
    os.replace(str(new), str(path))  # as an edit writes it
    again = engine.reread(cfg)
    assert [str(n) for n in again.xray.clients] == ["192.168.1.11/32"]
