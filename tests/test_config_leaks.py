"""Config keys that keep routed clients off the WAN: advanced.kill_switch, advanced.ipv6,
per-tunnel kill_switch, xray.other_protocols."""

import ipaddress

import pytest

from vpn_director import config
from vpn_director.errors import ConfigError


@pytest.fixture
def rt(tmp_path):
    path = tmp_path / "rt_tables"
    path.write_text("111 wgc1\n112 wgc2\n")
    return str(path)


def load(rt, **adv):
    raw = {"tunnel_director": {"tunnels": {"wgc1": {"clients": ["192.168.50.20"]},
                                           "main": {"clients": ["192.168.50.30"]}}},
           "advanced": dict(adv, rt_tables=rt)}
    return config.validate(raw)


def problems(raw):
    with pytest.raises(ConfigError) as e:
        config.validate(raw)
    return e.value.problems


def test_defaults_guard_every_tunnel_but_main_and_block_ipv6(rt):
    cfg = load(rt)
    assert (cfg.kill_switch, cfg.kill_action, cfg.guard_pref_base) == (True, "unreachable", 16640)
    assert cfg.ipv6_mode == "block" and cfg.ipv6_macs == {}
    assert cfg.xray.other_protocols == "direct"
    assert [config.guarded(cfg, t) for t in cfg.tunnels] == [True, False]


def test_per_tunnel_override_beats_the_global_switch(rt):
    raw = {"tunnel_director": {"tunnels": {"wgc1": {"clients": ["192.168.50.20"], "kill_switch": False},
                                           "wgc2": {"clients": ["192.168.50.21"], "kill_switch": True}}},
           "advanced": {"rt_tables": rt, "kill_switch": {"enabled": False, "action": "prohibit"}}}
    cfg = config.validate(raw)
    assert [config.guarded(cfg, t) for t in cfg.tunnels] == [False, True]
    assert cfg.kill_action == "prohibit"


def test_guard_base_follows_a_moved_lookup_range(rt):
    cfg = load(rt, tunnel_director={"pref_base": 20000, "mark_mask": "0xf000", "mark_shift": 12})
    assert cfg.guard_pref_base == 20016  # 15 slots: lookups 20000..20014, guards from 20016


@pytest.mark.parametrize("base,why", [
    (16500, "above the tunnel lookup priorities 16384..16638"),
    (32700, "would reach past priority 32765"),
])
def test_guard_base_out_of_place_is_refused_with_its_path(rt, base, why):
    raw = {"advanced": {"rt_tables": rt, "kill_switch": {"guard_pref_base": base}}}
    [p] = problems(raw)
    assert p.startswith("advanced.kill_switch.guard_pref_base: ") and why in p


def test_guard_range_may_not_overlap_the_firmware_band(rt):
    raw = {"advanced": {"rt_tables": rt, "tunnel_director": {"pref_base": 9000, "mark_mask": "0xf000",
                                                             "mark_shift": 12},
                        "kill_switch": {"guard_pref_base": 10100}}}
    [p] = problems(raw)
    assert "overlaps the firmware's rule priorities 10000..12220" in p


def test_bad_values_are_each_reported_with_their_path(rt):
    raw = {"xray": {"other_protocols": "reject"},
           "tunnel_director": {"tunnels": {"wgc1": {"clients": [], "kill_switch": "yes"}}},
           "advanced": {"rt_tables": rt, "kill_switch": {"enabled": 1, "action": "drop"},
                        "ipv6": {"mode": "follow", "macs": {"192.168.50.300": "aa:bb:cc:dd:ee:ff",
                                                            "192.168.50.10": "aa:bb:cc:dd:ee"}}}}
    got = problems(raw)
    for path in ("xray.other_protocols", "tunnel_director.tunnels.wgc1.kill_switch", "advanced.kill_switch.enabled",
                 "advanced.kill_switch.action", "advanced.ipv6.mode", "advanced.ipv6.macs.192.168.50.300",
                 "advanced.ipv6.macs.192.168.50.10"):
        assert any(p.startswith(path + ": ") for p in got), (path, got)


def test_pinned_macs_are_normalised(rt):
    cfg = load(rt, ipv6={"mode": "ignore", "macs": {"192.168.50.10": "AA-BB-CC-DD-EE-0F"}})
    assert cfg.ipv6_mode == "ignore"
    assert cfg.ipv6_macs == {ipaddress.IPv4Address("192.168.50.10"): "aa:bb:cc:dd:ee:0f"}


def test_unknown_keys_in_the_new_sections_warn(rt):
    cfg = load(rt, kill_switch={"wan_reject": True}, ipv6={"lan_interfaces": ["br0"]})
    assert "advanced.kill_switch.wan_reject: unknown key (ignored)" in cfg.warnings
    assert "advanced.ipv6.lan_interfaces: unknown key (ignored)" in cfg.warnings
