"""The device list and "route this device via..." of the front ends (ops.devices, ops.clients.route_device),
without a kernel: the web UI and the bot both call these, so they agree by construction."""

import json

import pytest

import test_ops
from test_ops import BASE, edit, load
from vpn_director import config
from vpn_director.bot.router import Router
from vpn_director.ops import OpsError, clients, devices, leases, names

conf = test_ops.conf  # the config fixture of the operations layer's tests


def base(**extra):
    raw = json.loads(json.dumps(BASE))
    raw.update(extra)
    return raw


def test_rows_are_clients_leases_and_named_single_addresses(conf):
    cfg = config.load(conf(base(names={"192.168.50.40": "printer", "192.168.50.64/27": "kids"},
                                paused_clients=["192.168.50.77"])))
    rows = devices.rows(cfg)
    by = {r["address"]: r for r in rows}
    assert [r["address"] for r in rows] == ["192.168.50.0/24", "192.168.50.10", "192.168.50.20", "192.168.50.23",
                                            "192.168.50.24", "192.168.50.40", "192.168.50.77"]
    assert "192.168.50.64/27" not in by  # a named subnet that is no client is no device
    assert (by["192.168.50.10"]["via"], by["192.168.50.10"]["client"], by["192.168.50.10"]["listed_in"]) == (
        "xray", True, ["xray"])
    phone = by["192.168.50.23"]
    assert (phone["name"], phone["mac"], phone["lease"], phone["client"]) == (
        "annas-phone", "aa:bb:cc:dd:ee:01", True, False)
    assert (phone["via"], phone["route"], phone["paused"], phone["inside"]) == (
        "wgc1", "tunnel", False, ["192.168.50.0/24 of wgc1"])
    assert (by["192.168.50.40"]["name"], by["192.168.50.40"]["mac"], by["192.168.50.40"]["via"]) == (
        "printer", "", "wgc1")
    assert (by["192.168.50.77"]["via"], by["192.168.50.77"]["paused"], by["192.168.50.77"]["client"]) == (
        "direct", True, True)
    assert set(rows[0]) == {"address", "name", "mac", "route", "via", "table", "paused", "listed_in", "inside",
                            "client", "lease"}
    # given leases and names are used as they are
    found = leases.read(cfg.leases_file)
    assert devices.rows(cfg, leases=found, names=names.Names(cfg.names, found)) == rows
    assert [r["address"] for r in devices.rows(cfg, leases=[])] == [
        "192.168.50.0/24", "192.168.50.10", "192.168.50.20", "192.168.50.40", "192.168.50.77"]
    assert devices.vias(cfg) == ["xray", "wgc2", "wgc1"]


def test_the_bot_lists_the_same_devices(conf):
    path = conf(base(names={"192.168.50.40": "printer"}, paused_clients=["192.168.50.24"]))
    cfg = config.load(path)
    assert Router(path).devices(cfg) == devices.rows(cfg)


def test_route_device(conf):
    path = conf()
    # inside wgc1's 192.168.50.0/24 and in no list: direct is a pause
    res = edit(path, clients.route_device("192.168.50.24", "direct"))
    assert res.summary == "client 192.168.50.24: paused (it is inside 192.168.50.0/24 of wgc1)"
    assert load(path)["paused_clients"] == ["192.168.50.24"] and str(res.subject) == "192.168.50.24/32"
    by = {r["address"]: r for r in devices.rows(res.cfg)}
    assert (by["192.168.50.24"]["via"], by["192.168.50.24"]["paused"]) == ("direct", True)
    assert "already goes direct" in edit(path, clients.route_device("192.168.50.24", "direct")).notes[-1]
    # the command line's move keeps its meaning: a device in no list already goes direct
    assert "already goes direct" in edit(path, clients.move("192.168.50.23", "direct")).notes[-1]
    # a name or MAC works as everywhere else
    res = edit(path, clients.route_device("annas-phone", "direct"))
    assert res.summary == "client 192.168.50.23 (annas-phone): paused (it is inside 192.168.50.0/24 of wgc1)"
    # not listed: added; listed: moved
    res = edit(path, clients.route_device("192.168.50.24", "xray"))
    assert res.summary == "client 192.168.50.24: added to xray" and "is paused" in res.notes[-1]
    res = edit(path, clients.route_device("192.168.50.10", "wgc2"))
    assert res.summary == "client 192.168.50.10: xray → wgc2"
    # listed and inside a routed subnet: direct moves it out and pauses it, in one version
    res = edit(path, clients.route_device("192.168.50.10", "direct"))
    assert res.summary == "client 192.168.50.10: wgc2 → direct, paused (it is inside 192.168.50.0/24 of wgc1)"
    raw = load(path)
    assert raw["tunnel_director"]["tunnels"]["wgc2"]["clients"] == ["192.168.50.20"]
    assert raw["paused_clients"] == ["192.168.50.24", "192.168.50.23", "192.168.50.10"]
    # outside every list: direct already
    assert "already goes direct" in edit(path, clients.route_device("10.1.2.3", "direct")).notes[-1]
    assert edit(path, clients.route_device("192.168.50.20", "wgc2")).summary == ""
    with pytest.raises(OpsError, match="unknown tunnel 'wgc9'"):
        edit(path, clients.route_device("192.168.50.30", "wgc9"))


def test_a_trace_source_is_one_device(conf):
    cfg = config.load(conf(base(names={"192.168.50.40": "printer", "192.168.50.64/27": "kids"})))
    assert names.source("192.168.50.40", cfg) == ("192.168.50.40", None)
    assert names.source("printer", cfg) == ("192.168.50.40", "printer is 192.168.50.40 (names)")
    assert names.source("AA-BB-CC-DD-EE-01", cfg)[0] == "192.168.50.23"
    assert names.source("annas-phone", cfg)[0] == "192.168.50.23"
    for token, message in (("kids", "is a subnet"), ("192.168.50.0/24", "is a subnet"),
                           ("kitchen-tv", "no device of that name or MAC")):
        with pytest.raises(OpsError, match=message):
            names.source(token, cfg)
