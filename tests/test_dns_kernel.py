"""DNS follows the route, with real queries: a logging resolver in the WAN namespace (which also
catches every port-53 packet reaching the WAN), one per tunnel, and the router's own resolver, a
forwarder that re-sends each query from the router's WAN address (vpn_director.lab start_dns).

Every probe has a query name of its own; every negative check follows a positive control, and
"never seen by the WAN" is read from the WAN resolver's log of names, which sees a leak whatever
its source address (the router's re-sent query has the router's address, not the client's).
"""

import itertools
import json
import os

import pytest

from vpn_director.lab import INTERNET

pytestmark = pytest.mark.kernel

WGC1_CLIENT, OVPN_CLIENT, XRAY_CLIENT, OTHER = "192.168.50.20", "192.168.50.22", "192.168.50.10", "192.168.50.200"
ROUTER = "192.168.50.1"
_names = itertools.count()


def qname(case):
    """A query name no other probe uses."""
    return "%s-%d-%d.leak.test" % (case, os.getpid(), next(_names))


def config(wgc1_dns="router", xray_dns=None, **adv):
    raw = {"xray": {"clients": [], "exclude_sets": []},
           "tunnel_director": {"tunnels": {
               "wgc1": {"clients": [WGC1_CLIENT], "exclude": ["ru"], "dns": wgc1_dns},
               "ovpnc1": {"clients": [OVPN_CLIENT]},
           }}}
    if xray_dns:
        raw["xray"] = {"clients": [XRAY_CLIENT], "exclude_sets": [], "dns": xray_dns}
    if adv:
        raw["advanced"] = adv
    return raw


def up(lab, raw, topology=None):
    lab.up(raw, topology=topology)
    # the kill switch's refusals come back as ICMP errors: not rate-limited per peer here
    lab._run(lab._agent("sysctl", "net.ipv4.icmp_ratelimit=0"), ns=lab.router, env=lab.env())
    lab.start_dns()
    p = lab.apply()
    assert p.returncode == 0, p.stderr


def apply(lab, raw):
    p = lab.apply(raw)
    assert p.returncode == 0, p.stderr


def look(lab, client, server, case, proto="udp"):
    """(answer, resolver behind it, resolvers whose log has the name)."""
    name = qname(case)
    answer, who = lab.lookup(client, server, name, proto)
    return answer, who, lab.dns_where(name)


def nat_rules(lab):
    out = lab._run(["iptables-%s-save" % lab.backend, "-t", "nat"], ns=lab.router).stdout
    return [l for l in out.splitlines() if l.startswith("-A")]


def test_a_tunnel_clients_dns_goes_through_its_tunnel_and_fails_closed(lab):
    up(lab, config(), topology=config(xray_dns="router"))
    # positive control: with dns "router" the router's resolver re-sends the name to the WAN
    answer, who, where = look(lab, WGC1_CLIENT, ROUTER, "control")
    assert (who, where) == ("wan", ["router", "wan"]), answer
    assert {q["src"] for q in lab.dns_seen("wan")} == {"100.64.0.1"}  # the router's address, not the client's
    assert not [l for l in nat_rules(lab) if "VPD_DNS" in l]

    apply(lab, config(wgc1_dns=[lab.tunnel_dns("wgc1")]))
    for proto in ("udp", "tcp"):
        answer, who, where = look(lab, WGC1_CLIENT, ROUTER, "tunnel", proto)
        assert (who, where) == ("wgc1", ["wgc1"]), (proto, answer)
    assert {q["src"] for q in lab.dns_seen("wgc1")} == {WGC1_CLIENT}
    # a hard-coded public resolver goes through the tunnel by routing alone
    answer, who, where = look(lab, WGC1_CLIENT, INTERNET[0], "hardcoded")
    assert (who, where) == ("wgc1", ["wgc1"]), answer
    # a tunnel with no resolver known keeps the router's (the leak `check` warns about)
    answer, who, where = look(lab, OVPN_CLIENT, ROUTER, "unknown")
    assert (who, where) == ("wan", ["router", "wan"]), answer
    # a client in no list is untouched
    answer, who, where = look(lab, OTHER, ROUTER, "other")
    assert who == "wan", answer

    # the tunnel goes down (its table flushed): the lookup is refused at once, nothing reaches the WAN
    lab._ip(lab.router, "route", "flush", "table", str(lab.tables["wgc1"]))
    for proto, error in (("udp", "error Network is unreachable"), ("tcp", "error Network is unreachable")):
        answer, who, where = look(lab, WGC1_CLIENT, ROUTER, "down", proto)
        assert (answer, where) == (error, []), (proto, answer, where)
    answer, who, where = look(lab, WGC1_CLIENT, INTERNET[0], "down-hardcoded")
    assert where == [] and answer.startswith("error"), answer

    # stop removes the nat objects: the router's resolver answers again
    assert lab.vpd("stop").returncode == 0
    assert not [l for l in nat_rules(lab) if "VPD_DNS" in l]
    answer, who, where = look(lab, WGC1_CLIENT, ROUTER, "stopped")
    assert who == "wan", answer
