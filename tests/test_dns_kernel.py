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
import shutil

import pytest

import xraylab
from vpn_director.lab import INTERNET
from vpn_director.xray import embedded
from xrayproc import xray_command

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


DOCUMENT_CHAIN = [  # the document's XRAY_TPROXY for this config, written out by hand
    "-m set ! --match-set XRAY_CLIENTS src -j RETURN",
    "-m set --match-set XRAY_SERVERS dst -j RETURN",
    "-d 127.0.0.0/8 -j RETURN", "-d 10.0.0.0/8 -j RETURN", "-d 172.16.0.0/12 -j RETURN",
    "-d 192.168.0.0/16 -j RETURN", "-d 169.254.0.0/16 -j RETURN", "-d 224.0.0.0/4 -j RETURN",
    "-d 255.255.255.255/32 -j RETURN",
    "-p tcp -j TPROXY --on-port 12345 --on-ip 0.0.0.0 --tproxy-mark 0x100/0x100",
    "-p udp -j TPROXY --on-port 12345 --on-ip 0.0.0.0 --tproxy-mark 0x100/0x100",
]
XRAY_DNS_RULES = ["-p %s -m %s --dport 53 -j TPROXY --on-port 12345 --on-ip 0.0.0.0 --tproxy-mark 0x100/0x100"
                  % (p, p) for p in ("udp", "tcp")]


def mangle_chain(lab, name):
    out = lab._run(["iptables-%s-save" % lab.backend, "-t", "mangle"], ns=lab.router).stdout
    return [l[len("-A %s " % name):] for l in out.splitlines() if l.startswith("-A %s " % name)]


def test_an_xray_clients_dns_goes_to_xray_only_when_asked(lab):
    up(lab, config(xray_dns="router"))
    # "router" (the default): the document's chain, byte for byte; DNS to the router leaks by the WAN
    assert mangle_chain(lab, "XRAY_TPROXY") == DOCUMENT_CHAIN
    for proto in ("udp", "tcp"):
        answer, who, where = look(lab, XRAY_CLIENT, ROUTER, "xray-router", proto)
        assert (who, where) == ("wan", ["router", "wan"]), (proto, answer)

    apply(lab, config(xray_dns="xray"))
    assert mangle_chain(lab, "XRAY_TPROXY") == DOCUMENT_CHAIN[:1] + XRAY_DNS_RULES + DOCUMENT_CHAIN[1:]
    for server in (ROUTER, INTERNET[0]):  # the router's address, and a hard-coded public resolver
        for proto in ("udp", "tcp"):
            answer, who, where = look(lab, XRAY_CLIENT, server, "xray", proto)
            assert (who, where) == ("xray", []), (server, proto, answer, where)  # the TPROXY listener answered
    # the tunnel client is untouched by xray.dns
    answer, who, where = look(lab, WGC1_CLIENT, ROUTER, "tunnel-router")
    assert who == "wan", answer

    # Xray down: the query is dropped by TPROXY, nothing reaches the router's resolver or the WAN
    lab.stop_xray()
    answer, who, where = look(lab, XRAY_CLIENT, ROUTER, "xray-down")
    assert (answer, where) == ("timeout", []), answer

    # back to "router": the document's chain again
    lab.start_xray()
    apply(lab, config(xray_dns="router"))
    assert mangle_chain(lab, "XRAY_TPROXY") == DOCUMENT_CHAIN


@pytest.mark.skipif(not embedded.available(), reason="the Xray-core package is not installed")
@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the lab's keys")
def test_real_xray_answers_an_xray_clients_dns_through_the_proxy(lab, tmp_path, request):
    """xray import + xray use configure a real Xray-core on the router; its DNS asks 1.1.1.1, a
    resolver in a namespace only the proxy server reaches, through a Shadowsocks-2022 server."""
    raw = config(xray_dns="xray")
    raw["xray"]["dns_servers"] = ["1.1.1.1"]
    raw["advanced"] = {"xray": {"service": "managed", "binary": xray_command(tmp_path),
                                "probe_url": "http://1.1.1.1/generate_204"}}
    up(lab, raw)
    far = xraylab.FarHost(lab.wan, str(tmp_path / "far"))
    request.addfinalizer(far.stop)
    far.start()
    lab._resolver(far.ns, "far", "192.0.2.200")  # the upstream resolver, behind the proxy server only
    server = xraylab.XrayServer(lab.wan, str(tmp_path / "server"), "203.0.113.10", names=("ss2022",))
    request.addfinalizer(server.stop)
    server.start()
    # controls: the far resolver answers the proxy server's namespace; the router asking 1.1.1.1
    # itself is caught by the WAN resolver (the catch-all), the far one never sees it
    near = qname("far-near")
    assert lab._run(lab._agent("dnsq", "1.1.1.1", near, "udp"), ns=lab.wan, env=lab.env()).stdout.strip() == \
        "A 192.0.2.200"
    direct = qname("far-direct")
    assert lab._run(lab._agent("dnsq", "1.1.1.1", direct, "udp"), ns=lab.router, env=lab.env()).stdout.strip() == \
        "A 192.0.2.1"
    assert lab.dns_where(direct) == ["wan"] and lab.dns_where(near) == ["far"]
    lab.stop_xray()  # the stand-in gives the TPROXY port to the real Xray
    for args in (("import", server.link("ss2022")), ("use", "ss2022")):
        p = lab.vpd("xray", *args)
        assert p.returncode == 0, p.stdout + p.stderr

    for server_addr in (ROUTER, INTERNET[0]):
        for proto in ("udp", "tcp"):
            name = qname("real-xray")
            answer, who = lab.lookup(XRAY_CLIENT, server_addr, name, proto, timeout=5.0)
            assert (answer, who) == ("A 192.0.2.200", "far"), (server_addr, proto, answer)
            assert lab.dns_where(name) == ["far"]  # never the router's resolver, never the WAN's
    assert {q["src"] for q in lab.dns_seen("far")} == {far.gateway}  # sent by the proxy server
    assert [q["qname"] for q in lab.dns_seen("wan")] == [direct]  # the control only
    assert lab.dns_seen("router") == []


def test_status_trace_check_render_and_drift_repair_cover_the_nat_objects(lab):
    wgc1_dns = "10.64.1.1"  # lab.tunnel_dns("wgc1"): the first tunnel's resolver
    up(lab, config(wgc1_dns=[wgc1_dns]))
    assert lab.tunnel_dns("wgc1") == wgc1_dns
    st = lab.vpd("status")
    assert st.returncode == 0, st.stdout + st.stderr
    assert "OK       chain    VPD_DNS_TUN  (nat)" in st.stdout
    assert st.stdout.count("OK       jump     PREROUTING -> VPD_DNS_TUN  (nat)") == 2
    assert "tunnel wgc1 clients → %s through wgc1" % wgc1_dns in st.stdout
    assert "tunnel ovpnc1 clients → the router's resolver" in st.stdout
    p = lab.vpd("trace", WGC1_CLIENT, ROUTER, "--dport", "53", "--proto", "udp", "--live", "--json")
    seen = json.loads(p.stdout)
    assert (seen["route"], seen["table"], seen["differs"]) == ("tunnel", "wgc1", ""), seen
    assert any("DNAT to %s:53" % wgc1_dns in s for s in seen["steps"]), seen["steps"]
    p = lab.vpd("trace", WGC1_CLIENT, ROUTER, "--dport", "53", "--proto", "udp")
    assert "nat VPD_DNS_TUN: src=192.168.50.20, DNS to the router → DNAT to %s:53" % wgc1_dns in p.stdout
    p = lab.vpd("check")
    assert p.returncode == 0 and "tunnel ovpnc1: no DNS server known for its clients" in p.stderr
    assert "### iptables-restore --noflush (nat)" in lab.vpd("render").stdout

    # the firmware puts its own DNS redirection at the top of nat PREROUTING (Merlin's DNSVPN/DNSFilter)
    ipt = "iptables-%s" % lab.backend
    firmware = ["-i", "br0", "-p", "udp", "-m", "udp", "--dport", "53", "-j", "DNAT", "--to-destination", ROUTER]
    lab._run([ipt, "-t", "nat", "-I", "PREROUTING", "1"] + firmware, ns=lab.router)
    assert lab.vpd("status").returncode == 3
    out = lab.vpd("apply", "--if-changed", "-v").stdout
    assert "drift repaired" in out and "nat jump: -I PREROUTING 1" in out
    pre = [l for l in nat_rules(lab) if l.startswith("-A PREROUTING")]
    assert [("VPD_DNS_TUN" in l) for l in pre] == [True, True, False], pre  # ours first again, theirs kept
    answer, who, where = look(lab, WGC1_CLIENT, ROUTER, "after-firmware")
    assert (who, where) == ("wgc1", ["wgc1"]), answer

    # our chain flushed behind our back: the query leaks (control), the watchdog's apply repairs it
    lab._run([ipt, "-t", "nat", "-F", "VPD_DNS_TUN"], ns=lab.router)
    answer, who, where = look(lab, WGC1_CLIENT, ROUTER, "flushed")
    assert who == "wan", answer
    out = lab.vpd("apply", "--if-changed", "-v").stdout
    assert "nat chain VPD_DNS_TUN: rebuilt" in out
    answer, who, where = look(lab, WGC1_CLIENT, ROUTER, "repaired")
    assert (who, where) == ("wgc1", ["wgc1"]), answer
    assert lab.vpd("status").returncode == 0

    # stop tunnel takes the nat objects out with TUN_DIR; the firmware's rule stays
    assert lab.vpd("stop", "tunnel").returncode == 0
    assert [l for l in nat_rules(lab) if l.startswith("-A PREROUTING")] == ["-A PREROUTING " + " ".join(firmware)]


def test_block_dot_rejects_dns_over_tls_from_routed_clients(lab):
    raw = config(xray_dns="router")
    up(lab, raw)
    lab._serve(lab.tunnels["wgc1"], "wgc1-dot", 853)
    dot = [{"dst": INTERNET[0], "port": 853, "proto": "tcp"}]
    # control: DoT goes through the tunnel, and an Xray client's to the proxy
    assert lab.probe(WGC1_CLIENT, dot) == ["wgc1-dot %s:853" % INTERNET[0]]
    assert lab.probe(XRAY_CLIENT, dot) == ["xray %s:853" % INTERNET[0]]
    raw["advanced"] = {"dns": {"block_dot": True}}
    apply(lab, raw)
    for client in (WGC1_CLIENT, XRAY_CLIENT, OVPN_CLIENT):
        assert lab.probe(client, dot) == ["error Connection refused"], client  # a reset at once
    apply(lab, raw)  # (the IPv6 block learns the MACs the traffic showed)
    st = lab.vpd("status")
    assert st.returncode == 0, st.stdout
    assert "OK       chain    VPD_DOT_TUN  (filter)" in st.stdout and "OK       chain    VPD_DOT_XRAY  (filter)" in st.stdout
    raw["advanced"] = {}
    apply(lab, raw)
    assert lab.probe(WGC1_CLIENT, dot) == ["wgc1-dot %s:853" % INTERNET[0]]
    out = lab._run(["iptables-%s-save" % lab.backend, "-t", "filter"], ns=lab.router).stdout
    assert "VPD_DOT" not in out
