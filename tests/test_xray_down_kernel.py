"""Xray down and protocols TPROXY cannot take, with real packets through the lab's virtual router.

Packets are counted where a leak would show: at the WAN namespace, by iptables counters on its
raw PREROUTING (one rule per protocol, source = the Xray client). Every negative is preceded by
a positive control that shows the same counter counting, or the same path working.
"""

import json
import re

import pytest

from vpn_director.lab import PORT

pytestmark = pytest.mark.kernel

XC = "192.168.50.10"  # the Xray client
OTHER = "192.168.50.200"  # a client in no list (the lab adds one)
US, RU = "8.8.8.8", "77.88.8.8"  # proxied; excluded by the "ru" country list
CONFIG = {"xray": {"clients": [XC], "servers": ["203.0.113.10"], "exclude_sets": ["ru"]}}


def with_other_protocols(value):
    return dict(CONFIG, xray=dict(CONFIG["xray"], other_protocols=value))


def tcp_udp(dst):
    return [{"dst": dst, "port": PORT, "proto": p} for p in ("tcp", "udp")]


class WanCounter:
    """Packets from one source that arrive at the WAN namespace, per protocol."""

    PROTOS = ("tcp", "udp", "icmp")

    def __init__(self, lab, backend, src):
        self.lab, self.src = lab, src
        self.ipt = "iptables-%s" % backend
        for proto in self.PROTOS:
            self._ipt("-t", "raw", "-A", "PREROUTING", "-s", src, "-p", proto)

    def _ipt(self, *args):
        return self.lab._run([self.ipt] + list(args), ns=self.lab.wan).stdout

    def read(self):
        counts = {}
        for line in self._ipt("-t", "raw", "-S", "PREROUTING", "-v").splitlines():
            m = re.search(r"-s %s/32 -p (\w+) -c (\d+) \d+" % re.escape(self.src), line)
            if m:
                counts[m.group(1)] = int(m.group(2))
        assert set(counts) == set(self.PROTOS), counts
        return counts

    def zero(self):
        self._ipt("-t", "raw", "-Z", "PREROUTING")


def status_rule(lab, spec):
    """(the XRAY_TPROXY chain's status, the rule `spec`) as `status --json` reports them. (The exit
    code can be 3 meanwhile: a client's MAC learnt since the apply wants its IPv6 block.)"""
    p = lab.vpd("status", "--json")
    for obj in json.loads(p.stdout)["objects"]:
        if obj["kind"] == "chain" and obj["name"] == "XRAY_TPROXY":
            return obj["status"], [r for r in obj["rules"] if r["rule"] == spec][0]
    raise AssertionError(p.stdout + p.stderr)


TPROXY_TCP = "-p tcp -j TPROXY --on-port 12345 --on-ip 0.0.0.0 --tproxy-mark 0x100/0x100"


def test_tcp_udp_of_xray_clients_are_dropped_not_leaked_while_xray_is_down(lab, backend):
    lab.up(CONFIG)
    assert lab.apply().returncode == 0
    wan = WanCounter(lab, backend, XC)
    # Control: with Xray listening, TCP and UDP reach it with their original destination...
    assert lab.probe(XC, tcp_udp(US)) == ["xray %s:%d" % (US, PORT)] * 2
    # ...and the WAN counters count: the same client's traffic to an excluded country goes direct.
    assert lab.probe(XC, tcp_udp(RU)) == ["wan %s:%d" % (RU, PORT)] * 2
    seen = wan.read()
    assert seen["tcp"] >= 3 and seen["udp"] == 1  # SYN, ACK, FIN... ; one datagram
    wan.zero()
    assert wan.read() == {"tcp": 0, "udp": 0, "icmp": 0}
    _, before = status_rule(lab, TPROXY_TCP)

    lab.stop_xray()
    # Nothing listens on the TPROXY port: the kernel's TPROXY target drops; nothing answers...
    assert lab.probe(XC, tcp_udp(US) * 3) == ["timeout"] * 6
    # ...and nothing leaves by the WAN.
    assert wan.read() == {"tcp": 0, "udp": 0, "icmp": 0}
    code, after = status_rule(lab, TPROXY_TCP)
    assert code == "OK" and after["packets"] >= before["packets"] + 3  # the SYNs met TPROXY and stopped there

    # Xray back: traffic flows again, with no re-apply.
    lab.start_xray()
    assert lab.probe(XC, tcp_udp(US)) == ["xray %s:%d" % (US, PORT)] * 2
    assert wan.read() == {"tcp": 0, "udp": 0, "icmp": 0}


def test_icmp_of_xray_clients_goes_direct_by_default_and_is_dropped_with_other_protocols_drop(lab, backend):
    lab.up(CONFIG)
    assert lab.apply().returncode == 0
    wan = WanCounter(lab, backend, XC)
    # direct (the default): TPROXY cannot take ICMP, so the echo goes out by the WAN and is answered.
    assert lab.ping(XC, US, 3) == {"sent": 3, "answered": 3}
    assert wan.read()["icmp"] == 3
    wan.zero()

    assert lab.apply(with_other_protocols("drop")).returncode == 0
    # Controls: the same client's ICMP to an excluded destination still goes direct and is counted...
    assert lab.ping(XC, RU, 2) == {"sent": 2, "answered": 2}
    assert wan.read()["icmp"] == 2
    # ...a client Xray does not handle still pings out...
    assert lab.ping(OTHER, US, 1) == {"sent": 1, "answered": 1}
    # ...and the Xray client's TCP and UDP still reach Xray.
    assert lab.probe(XC, tcp_udp(US)) == ["xray %s:%d" % (US, PORT)] * 2
    wan.zero()
    # The negative: echo to a proxied destination is dropped on the router.
    assert lab.ping(XC, US, 3) == {"sent": 3, "answered": 0}
    assert wan.read() == {"tcp": 0, "udp": 0, "icmp": 0}
    code, drop = status_rule(lab, "-j DROP")
    assert code == "OK" and drop["status"] == "OK" and drop["packets"] == 3

    # trace says the same, offline and over the live state.
    p = lab.vpd("trace", XC, US, "--proto", "icmp", "--live", "--json")
    t = json.loads(p.stdout)
    assert (t["route"], t["differs"]) == ("dropped", ""), p.stdout + p.stderr
    assert t["rules"][-1] == "-j DROP"

    # Back to direct: apply takes the DROP rule out again.
    assert lab.apply(with_other_protocols("direct")).returncode == 0
    assert lab.ping(XC, US, 2) == {"sent": 2, "answered": 2}
    assert wan.read()["icmp"] == 2
    assert "-A XRAY_TPROXY -j DROP" not in lab._run(["iptables-%s-save" % backend, "-t", "mangle"],
                                                    ns=lab.router).stdout


def test_check_live_reports_the_tproxy_listener(lab, backend):
    lab.up(CONFIG)
    assert lab.apply().returncode == 0
    wan = WanCounter(lab, backend, XC)
    # Control: Xray on 0.0.0.0 (the lab's default) works, and check --live has nothing to say about it.
    assert lab.probe(XC, tcp_udp(US)) == ["xray %s:%d" % (US, PORT)] * 2
    p = lab.vpd("check", "--live")
    assert p.returncode == 0 and "listen" not in p.stderr, p.stderr
    # Bound to the LAN interface's address: TPROXY --on-ip 0.0.0.0 looks exactly there, so it works too.
    lab.start_xray(bind="192.168.50.1")
    assert lab.probe(XC, tcp_udp(US)) == ["xray %s:%d" % (US, PORT)] * 2
    p = lab.vpd("check", "--live")
    assert p.returncode == 0 and "listen" not in p.stderr, p.stderr
    assert wan.read() == {"tcp": 0, "udp": 0, "icmp": 0}

    # Bound to 127.0.0.1: the kernel never finds it; every packet is dropped, none leaks.
    lab.start_xray(bind="127.0.0.1")
    assert lab.probe(XC, tcp_udp(US) * 2) == ["timeout"] * 4
    assert wan.read() == {"tcp": 0, "udp": 0, "icmp": 0}
    p = lab.vpd("check", "--live")
    assert p.returncode == 2, p.stdout + p.stderr
    assert ("error: Xray listens on port 12345 only at TCP 127.0.0.1; UDP 127.0.0.1, but the TPROXY rules "
            "(--on-ip 0.0.0.0) look for the listener at br0's address 192.168.50.1 or 0.0.0.0: every TCP and "
            "UDP packet from Xray clients is dropped") in p.stderr

    # Nothing listening at all: a warning (dropped, not leaked), not an error.
    lab.stop_xray()
    p = lab.vpd("check", "--live")
    assert p.returncode == 0, p.stderr
    assert ("warning: nothing listens on TCP or UDP port 12345 (advanced.xray.tproxy_port): Xray clients' "
            "TCP and UDP are dropped, not leaked") in p.stderr
