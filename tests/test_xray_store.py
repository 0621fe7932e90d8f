"""The server store and how it reaches the routing: ids keep their status across refreshes, every
stored address joins the Xray servers set, the file is private, a damaged file is named."""

import json
import os
import stat

import pytest

from vpn_director import config, desired
from vpn_director.ops import txn
from vpn_director.xray import XrayError, store


def server(n, address="203.0.113.%d", name=None, port=443):
    addr = address % n if "%d" in address else address
    return {"id": "%012x" % n, "name": name or "srv %d" % n, "protocol": "vless", "address": addr, "port": port,
            "label": "vless·reality·vision",
            "outbound": {"protocol": "vless", "settings": {"vnext": [{"address": addr, "port": port, "users": []}]}}}


def no_dns(host):
    return store.resolve(host, lookup=lambda *a: (_ for _ in ()).throw(OSError("no DNS here")))


def test_replace_source_keeps_status_and_place_and_counts(tmp_path):
    st = store.Store()
    assert st.add(store.MANUAL, [server(1)], no_dns) == (1, 0)
    assert st.replace_source("sub:a", [server(2), server(3)], no_dns) == (2, 0)
    assert st.add(store.MANUAL, [server(4), server(1)], no_dns) == (1, 1)
    st.by_id(server(3)["id"])["status"] = {"latency_ms": 80, "checked": 1, "error": ""}
    renamed = dict(server(3), name="renamed by the panel")
    assert st.replace_source("sub:a", [renamed, server(5)], no_dns) == (1, 1)
    # a source's servers stay together, where the first of them was
    assert [s["id"] for s in st.servers] == [server(n)["id"] for n in (1, 4, 3, 5)]
    kept = st.by_id(server(3)["id"])
    assert kept["name"] == "renamed by the panel" and kept["status"]["latency_ms"] == 80
    assert kept["source"] == "sub:a" and kept["ips"] == ["203.0.113.3"]
    # a server already stored from another source is not stored twice
    assert st.replace_source("sub:b", [server(1), server(6)], no_dns) == (1, 0)
    assert [s["source"] for s in st.servers].count(store.MANUAL) == 2
    assert st.remove_source("sub:a") == 2 and st.by_id(server(3)["id"]) is None


def test_find_by_number_id_and_name():
    st = store.Store()
    st.add(store.MANUAL, [server(1), server(2, name="Frankfurt"), server(3, name="dup"), server(4, name="dup")],
           no_dns)
    assert st.find("2")["id"] == server(2)["id"] and st.find("#1")["id"] == server(1)["id"]
    assert st.find(server(4)["id"])["id"] == server(4)["id"]
    assert st.find("Frankfurt")["id"] == server(2)["id"]
    with pytest.raises(XrayError, match="2 servers are named 'dup'"):
        st.find("dup")
    with pytest.raises(XrayError, match="no server 'nope'"):
        st.find("nope")


def test_resolve_literals_and_names():
    assert store.resolve("203.0.113.9") == ["203.0.113.9"]
    assert store.resolve("2001:db8::1") == []  # IPv6 servers never meet the IPv4 rules
    fake = [(2, 1, 6, "", ("198.51.100.2", 0)), (2, 1, 6, "", ("198.51.100.1", 0)), (2, 1, 6, "", ("198.51.100.2", 0))]
    assert store.resolve("proxy.example", lookup=lambda *a: fake) == ["198.51.100.1", "198.51.100.2"]
    assert no_dns("proxy.example") == []


def test_saved_private_and_loaded_back(tmp_path):
    st = store.Store()
    st.add(store.MANUAL, [server(1, name="🇩🇪 Франкфурт")], no_dns)
    d = str(tmp_path / "data")
    store.save(d, st)
    assert stat.S_IMODE(os.stat(store.path(d)).st_mode) == 0o600
    again = store.load(d)
    assert again.servers == st.servers and "🇩🇪 Франкфурт" in open(store.path(d), encoding="utf-8").read()
    before = store.raw_bytes(d)
    st.add(store.MANUAL, [server(2)], no_dns)
    store.save(d, st)
    store.put_back(d, before)
    assert store.raw_bytes(d) == before
    store.put_back(d, None)
    assert not os.path.exists(store.path(d)) and store.load(d).servers == []


def test_damaged_store_is_named_and_contributes_no_address(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "servers.json").write_text('{"servers": [{"name": "no id"}]}')
    with pytest.raises(XrayError, match="servers.json is damaged"):
        store.load(str(d))
    warned = []
    assert store.addresses(str(d), warned.append) == [] and "damaged" in warned[0]


def test_every_stored_address_joins_the_servers_set(tmp_path, build_cfg):
    st = store.Store()
    st.add(store.MANUAL, [server(1), server(2, address="10.99.0.2")], no_dns)
    st.replace_source("sub:a", [dict(server(3), address="proxy.example")],
                      lambda h: ["198.51.100.7", "198.51.100.8"])
    store.save(str(tmp_path), st)
    cfg = build_cfg({"xray": {"clients": ["192.168.50.10"], "servers": ["192.0.2.1"], "exclude_ips": ["192.0.2.128/25"]}})
    addrs = store.addresses(cfg.data_dir)
    assert addrs == ["10.99.0.2", "198.51.100.7", "198.51.100.8", "203.0.113.1"]
    full = desired.build(cfg, resolver=lambda n: [], country_loader=lambda p: (frozenset(), 0), stored_servers=addrs)
    members = next(s for s in full.sets if s.name == cfg.xray.servers_ipset).members
    assert members == frozenset(["192.0.2.1", "192.0.2.128/25", "10.99.0.2", "198.51.100.7", "198.51.100.8",
                                 "203.0.113.1"])


def test_config_keys_of_the_xray_side(build_cfg):
    cfg = build_cfg({"xray": {"subscriptions": [{"id": "main", "url": "https://sub.example/abc?token=s3cret"}],
                              "active_server": "0123456789ab", "bittorrent": "direct"},
                     "advanced": {"xray": {"socks_port": 1080, "service": "managed", "binary": "/opt/sbin/xray"}}})
    side = cfg.xray.side
    assert (side.active_server, side.bittorrent, side.socks_port, side.service, side.binary) == \
        ("0123456789ab", "direct", 1080, "managed", "/opt/sbin/xray")
    assert side.subscriptions[0].interval_h == 12 and side.subscriptions[0].enabled is True
    with pytest.raises(config.ConfigError) as e:
        build_cfg({"xray": {"subscriptions": [{"id": "a", "url": "ftp://sub.example/s3cret"},
                                              {"id": "b", "url": "https://x/1", "interval_h": 0}, {"id": "b", "url": "https://x/2"}],
                            "active_server": "Frankfurt", "bittorrent": "maybe"},
                   "advanced": {"xray": {"socks_port": 12345, "config_path": "/etc/xray/config.txt"}}})
    text = "\n".join(e.value.problems)
    for path in ("xray.subscriptions[0].url", "xray.subscriptions[1].interval_h", "xray.subscriptions[2].id",
                 "xray.active_server", "xray.bittorrent", "advanced.xray.socks_port", "advanced.xray.config_path"):
        assert path in text
    assert "s3cret" not in text  # a subscription address is a secret, even when it is wrong


def test_health_and_failover_keys(build_cfg):
    side = build_cfg({"xray": {}}).xray.side
    assert (side.health.enabled, side.health.interval_s, side.health.timeout_s, side.health.fail_threshold,
            side.health.require_wan) == (True, 30, 10, 3, True)
    assert side.health.urls == ["http://www.gstatic.com/generate_204", "http://cp.cloudflare.com/generate_204"]
    assert (side.failover.enabled, side.failover.max_switches_per_hour, side.failover.return_to_preferred,
            side.failover.return_hold_s, side.failover.on_all_down, side.preferred_server) == (True, 5, True, 300,
                                                                                             "block", None)
    cfg = build_cfg({"xray": {"preferred_server": "0123456789ab",
                              "health": {"interval_s": 1, "fail_threshold": 2, "urls": ["http://1.1.1.1/generate_204"],
                                         "require_wan": False},
                              "failover": {"on_all_down": "direct", "return_hold_s": 0}}})
    s = cfg.xray.side
    assert (s.preferred_server, s.health.interval_s, s.health.urls, s.health.require_wan, s.failover.on_all_down,
            s.failover.return_hold_s) == ("0123456789ab", 1, ["http://1.1.1.1/generate_204"], False, "direct", 0)
    with pytest.raises(config.ConfigError) as e:
        build_cfg({"xray": {"preferred_server": "Frankfurt",
                            "health": {"enabled": "yes", "interval_s": 0, "timeout_s": 500, "fail_threshold": "x",
                                       "urls": ["https://www.gstatic.com/generate_204", 7], "require_wan": 1},
                            "failover": {"enabled": 0, "max_switches_per_hour": 0, "return_to_preferred": None,
                                         "return_hold_s": -1, "on_all_down": "open", "bogus": 1}}})
    text = "\n".join(e.value.problems)
    for path in ("xray.preferred_server", "xray.health.enabled", "xray.health.interval_s", "xray.health.timeout_s",
                 "xray.health.fail_threshold", "xray.health.urls[0]", "xray.health.urls[1]", "xray.health.require_wan",
                 "xray.failover.enabled", "xray.failover.max_switches_per_hour", "xray.failover.return_hold_s",
                 "xray.failover.on_all_down"):
        assert path + ":" in text, path
    with pytest.raises(config.ConfigError, match="xray.health.urls: must name at least one URL"):
        build_cfg({"xray": {"health": {"urls": []}}})
    with pytest.raises(config.ConfigError, match="xray.health: must be an object"):
        build_cfg({"xray": {"health": [1]}})
    cfg = build_cfg({"xray": {"failover": {"bogus": 1}}})
    assert cfg.warnings == ["xray.failover.bogus: unknown key (ignored)"]


def test_process_only_xray_keys_do_not_apply():
    base = {"xray": {"clients": ["192.168.50.10"]}}
    for key, value in (("active_server", "0123456789ab"), ("subscriptions", [{"id": "a", "url": "https://x/"}]),
                       ("bittorrent", "proxy"), ("preferred_server", "0123456789ab"), ("health", {"interval_s": 5}),
                       ("failover", {"on_all_down": "direct"})):
        new = json.loads(json.dumps(base))
        new["xray"][key] = value
        assert txn.scope_of(base, new) is None
    new = json.loads(json.dumps(base))
    new["xray"]["clients"].append("192.168.50.11")
    assert txn.scope_of(base, new) == "xray"


def test_a_store_edit_whose_apply_fails_puts_the_store_back(tmp_path, build_cfg):
    from vpn_director.errors import ToolError
    from vpn_director.xray import actions
    cfg = build_cfg({"xray": {"clients": ["192.168.50.10"], "exclude_sets": []},
                     "advanced": {"state_dir": str(tmp_path / "state"), "lock_timeout": 5}})
    st = store.Store()
    st.add(store.MANUAL, [server(1)], no_dns)
    store.save(cfg.data_dir, st)

    def failing_tools(cfg):
        raise ToolError("load sets", "simulated failure")
    calls = []

    def no_kernel(cfg):  # an edit that leaves the addresses as they are never reaches the kernel
        calls.append(cfg)
        raise AssertionError("applied")
    actions.edit_store(cfg, lambda s: s.sources.update({"sub:x": {"error": "offline"}}), no_kernel)
    assert calls == [] and store.load(cfg.data_dir).sources == {"sub:x": {"error": "offline"}}
    before = store.raw_bytes(cfg.data_dir)
    with pytest.raises(XrayError, match="server list is back as it was"):
        actions.edit_store(cfg, lambda s: s.add(store.MANUAL, [server(2)], no_dns), failing_tools)
    assert store.raw_bytes(cfg.data_dir) == before
