"""IPv6 of routed clients with real packets, under both iptables backends.

Topology: the router namespace (br0 192.168.50.1/24 + fd00:50::1/64, IPv6 forwarding on, wan0
fd00:99::1/64 with the IPv6 default route) and, on br0, three clients with fixed MACs:
  .10 an Xray client, .20 a wgc1 client, .30 in no list
each with 192.168.50.N/24 and fd00:50::N/64. The WAN namespace owns 2001:db8:ff::1, answers on
port 7000 and counts, per client source, the packets arriving (a raw PREROUTING counter) and
what its sockets receive. The router answers on 53 (its DNS) and 7001 (another service), client
.30 on 7002. Every negative check follows a positive control.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from netns import Netns, Router

pytestmark = pytest.mark.kernel

AGENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "v6agent.py")
WAN6 = "2001:db8:ff::1"
MAC = {n: "02:00:00:00:50:%s" % n for n in ("10", "20", "30")}
V6 = {n: "fd00:50::%s" % n for n in MAC}
CFG = {"xray": {"clients": ["192.168.50.10"], "servers": ["203.0.113.10"], "exclude_sets": []},
       "tunnel_director": {"tunnels": {"wgc1": {"clients": ["192.168.50.20"]}}},
       "advanced": {"watchdog": {"min_interval": 0}}}
REJECT = "-m mac --mac-source %s -j REJECT --reject-with icmp6-adm-prohibited"
# What the client sees of icmp6-adm-prohibited: UDP at once; TCP when its SYN is retransmitted
# (about a second: the kernel takes the first ICMP error of a connect as a soft one).
BLOCKED = "error EACCES"


def sysctl(ns, *pairs):
    for pair in pairs:
        key, value = pair.split("=")
        path = "/proc/sys/" + key.replace(".", "/")
        ns.sh("[ ! -e %s ] || echo %s > %s" % (path, value, path))


class Net:
    def __init__(self, request, backend, tmp_path):
        self.procs = []
        request.addfinalizer(self._kill)
        self.tmp = tmp_path
        self.backend = backend
        self.router = Router(request.addfinalizer, backend, tmp_path)
        r = self.r = self.router.ns
        self.wan = Netns(request.addfinalizer)
        sysctl(r, "net.ipv6.conf.all.forwarding=1", "net.ipv6.conf.default.accept_dad=0",
               "net.ipv6.conf.br0.accept_dad=0",
               # with br_netfilter, frames bridged between LAN clients pass ip6tables too
               "net.bridge.bridge-nf-call-ip6tables=1", "net.bridge.bridge-nf-call-iptables=0")
        sysctl(self.wan, "net.ipv6.conf.default.accept_dad=0")
        r.sh("ip addr add 192.168.50.1/24 dev br0 && ip addr add fd00:50::1/64 dev br0 nodad")
        r.run(["ip", "link", "add", "wan0", "type", "veth", "peer", "name", "eth0", "netns", self.wan.name])
        r.sh("ip addr add fd00:99::1/64 dev wan0 nodad && ip link set wan0 up && "
             "ip -6 route add default via fd00:99::2")
        self.wan.sh("ip addr add fd00:99::2/64 dev eth0 nodad && ip link set eth0 up && "
                    "ip addr add %s/128 dev lo && ip -6 route add fd00:50::/64 via fd00:99::1" % WAN6)
        self.clients = {}
        for n in MAC:
            c = self.clients[n] = Netns(request.addfinalizer)
            sysctl(c, "net.ipv6.conf.default.accept_dad=0")
            r.run(["ip", "link", "add", "vl" + n, "type", "veth", "peer", "name", "eth0", "netns", c.name])
            r.run(["ip", "link", "set", "vl" + n, "master", "br0", "up"])
            c.sh("ip link set eth0 address %s && ip addr add 192.168.50.%s/24 dev eth0 && "
                 "ip addr add %s/64 dev eth0 nodad && ip link set eth0 up && "
                 "ip route add default via 192.168.50.1 && ip -6 route add default via fd00:50::1"
                 % (MAC[n], n, V6[n]))
        for n in self.counted():
            self.wan.run([self.ip6t(), "-t", "raw", "-A", "PREROUTING", "-s", V6[n]])
        self.logs = {}
        self.serve(self.wan, "wan", WAN6, 7000)
        self.serve(r, "router", "::", 53, 7001)
        self.serve(self.clients["30"], "c30", "::", 7002)
        self.cfg = self.router.config(dict(CFG, advanced=dict(CFG["advanced"],
                                                              leases_file=str(tmp_path / "no-leases"))))
        self.link_local = self._link_local()

    def counted(self):
        return sorted(MAC)

    def ip6t(self):
        return "ip6tables-%s" % self.backend

    def _kill(self):
        for p in self.procs:
            p.kill()
            p.wait()

    def serve(self, ns, name, addr, *ports):
        log = self.logs[name] = str(self.tmp / ("%s.log" % name))
        p = subprocess.Popen(["ip", "netns", "exec", ns.name, sys.executable, AGENT, "serve", name, log, addr]
                             + [str(x) for x in ports], stdout=subprocess.PIPE, universal_newlines=True)
        self.procs.append(p)
        assert p.stdout.readline().strip() == "ready"

    def _link_local(self):
        for _ in range(50):  # br0 gets its link-local address once a port is up
            out = self.r.run(["ip", "-6", "-o", "addr", "show", "dev", "br0", "scope", "link"]).stdout
            m = re.search(r"inet6 (fe80::[0-9a-f:]+)/64", out)
            if m and "tentative" not in out:
                return m.group(1)
            time.sleep(0.1)
        raise AssertionError("br0 has no link-local address: %s" % out)

    # --- traffic ------------------------------------------------------------------------------
    def probe(self, n, *targets):
        out = self.clients[n].run([sys.executable, AGENT, "probe", json.dumps(list(targets))]).stdout
        return json.loads(out)

    def to_wan(self, n):
        return self.probe(n, ["tcp", WAN6, 7000], ["udp", WAN6, 7000])

    def talk_ipv4(self, n):
        """Client n talks to the router over IPv4: the router's neighbour table learns its MAC."""
        assert self.probe(n, ["tcp", "192.168.50.1", 7001]) == ["answer router"]

    def arp(self):
        return self.r.run(["cat", "/proc/net/arp"]).stdout

    def forget_arp(self):
        self.r.run(["ip", "neigh", "flush", "dev", "br0"])
        assert not [l for l in self.arp().splitlines()[1:] if " 0x2 " in l], self.arp()

    # --- what arrived --------------------------------------------------------------------------
    def wan_packets(self):
        """{client: packets from its IPv6 address counted at the WAN's raw PREROUTING}."""
        out = self.wan.run(["%s-save" % self.ip6t(), "-c", "-t", "raw"]).stdout
        got = {}
        for line in out.splitlines():
            m = re.match(r"\[(\d+):\d+\] -A PREROUTING -s (\S+)/128$", line)
            if m:
                got[[n for n in V6 if V6[n] == m.group(2)][0]] = int(m.group(1))
        return got

    def zero_wan(self):
        self.wan.run([self.ip6t(), "-t", "raw", "-Z"])
        assert set(self.wan_packets().values()) == {0}

    def seen(self, name):
        """[(proto, source, port)] the endpoint's sockets received."""
        try:
            with open(self.logs[name]) as fh:
                return [tuple(l.split()) for l in fh.read().splitlines()]
        except FileNotFoundError:
            return []

    def filter6(self):
        out = self.r.run(["%s-save" % self.ip6t(), "-t", "filter"]).stdout
        # policy counters move with the namespace's own IPv6 traffic (router solicitations, MLD)
        return [re.sub(r"^(:\S+ \S+) \[\d+:\d+\]$", r"\1 [0:0]", l) for l in out.splitlines()
                if not l.startswith("#")]

    def vpd(self, *args, check=0, env=None):
        return self.router.vpd(*args, config=self.cfg, check=check, env=env)


@pytest.fixture
def net(request, backend, tmp_path):
    return Net(request, backend, tmp_path)


def test_routed_clients_ipv6_is_rejected_and_never_reaches_the_wan(net):
    for n in MAC:
        net.talk_ipv4(n)
    # control: before apply every client's IPv6 reaches the WAN, TCP and UDP
    for n in MAC:
        assert net.to_wan(n) == ["answer wan", "answer wan"], n
        assert {("tcp", V6[n], "7000"), ("udp", V6[n], "7000")} <= set(net.seen("wan"))
    assert all(v >= 2 for v in net.wan_packets().values()), net.wan_packets()

    net.vpd("apply")
    rules = net.filter6()
    assert "-A VPD6_XRAY " + REJECT % MAC["10"] in rules and "-A VPD6_TUN " + REJECT % MAC["20"] in rules
    assert [l for l in rules if l.startswith("-A FORWARD")] == ["-A FORWARD -i br0 ! -o br0 -j VPD6_XRAY",
                                                                "-A FORWARD -i br0 ! -o br0 -j VPD6_TUN"]
    st = net.vpd("status", check=0).stdout
    assert "OK       chain    VPD6_XRAY" in st and "OK       jump     FORWARD -> VPD6_TUN" in st
    assert "UNPROTECTED" not in st

    net.zero_wan()
    seen_before = len(net.seen("wan"))
    for n in ("10", "20"):
        assert net.to_wan(n) == [BLOCKED, BLOCKED], n
    assert net.wan_packets()["10"] == 0 and net.wan_packets()["20"] == 0
    assert net.seen("wan")[seen_before:] == []
    # a client in no list keeps its IPv6
    assert net.to_wan("30") == ["answer wan", "answer wan"]
    assert net.wan_packets()["30"] >= 2

    # the router itself still answers the routed client over IPv6: global and link-local
    # addresses, neighbour discovery both ways
    ll = "%s%%eth0" % net.link_local
    assert net.probe("10", ["tcp", "fd00:50::1", 7001], ["udp", "fd00:50::1", 7001], ["tcp", ll, 7001]) == \
        ["answer router"] * 3
    assert "%s lladdr %s" % (V6["10"], MAC["10"]) in net.r.run(["ip", "-6", "neigh", "show", "dev", "br0"]).stdout
    br0 = net.r.run(["cat", "/sys/class/net/br0/address"]).stdout.strip()
    neigh = net.clients["10"].run(["ip", "-6", "neigh", "show", "dev", "eth0"]).stdout
    assert "fd00:50::1 lladdr %s router" % br0 in neigh and "%s lladdr %s router" % (net.link_local, br0) in neigh
    # ...and a LAN neighbour, even with bridged frames passing ip6tables
    assert net.probe("10", ["tcp", V6["30"], 7002], ["udp", V6["30"], 7002]) == ["answer c30", "answer c30"]

    # DNS to the router over IPv6: rejected for routed clients, answered for the others
    dns = [["udp", "fd00:50::1", 53], ["tcp", "fd00:50::1", 53]]
    assert net.probe("30", *dns) == ["answer router", "answer router"]
    for n in ("10", "20"):
        assert net.probe(n, *dns) == [BLOCKED, BLOCKED], n
    assert {(p, s) for p, s, port in net.seen("router") if port == "53"} == {("udp", V6["30"]), ("tcp", V6["30"])}
    assert net.probe("10", ["udp", "192.168.50.1", 53]) == ["answer router"]  # IPv4 DNS is not ours to touch

    # stop removes every IPv6 object, and the control works again
    net.vpd("stop")
    assert not [l for l in net.filter6() if "VPD6" in l]
    assert net.to_wan("10") == ["answer wan", "answer wan"]
    assert net.probe("20", *dns) == ["answer router", "answer router"]


def test_a_mac_learnt_from_arp_stays_blocked_after_the_entry_expires(net):
    net.talk_ipv4("10")
    net.vpd("apply")
    # .20 has not talked yet: no MAC known, listed as unprotected, and its IPv6 leaves
    st = net.vpd("status", check=0).stdout
    assert "UNPROTECTED client   192.168.50.20" in st and "ipv6: 1 routed client(s) with no known MAC" in st
    check = net.vpd("check", "--live", check=0)
    assert "tunnel client 192.168.50.20: no MAC known, its IPv6 is not blocked" in check.stderr
    assert net.to_wan("20") == ["answer wan", "answer wan"]
    assert net.to_wan("10") == [BLOCKED, BLOCKED]

    # once it talks, the watchdog learns its MAC and blocks it
    net.talk_ipv4("20")
    out = net.vpd("apply", "--if-changed", "-v").stdout
    assert "drift repaired" in out and "ip6 chain VPD6_TUN: rebuilt (1 rules)" in out
    assert net.to_wan("20") == [BLOCKED, BLOCKED]

    # the neighbour entries expire: apply keeps both blocks (the record remembers the MACs)
    net.forget_arp()
    assert "no changes" in net.vpd("apply", "-v").stdout
    assert "-A VPD6_XRAY " + REJECT % MAC["10"] in net.filter6()
    net.zero_wan()
    assert net.to_wan("10") == [BLOCKED, BLOCKED] and net.to_wan("20") == [BLOCKED, BLOCKED]
    assert net.wan_packets()["10"] == net.wan_packets()["20"] == 0

    # the watchdog path too: a flushed chain comes back with the remembered MAC, still no ARP entry
    net.r.run([net.ip6t(), "-F", "VPD6_XRAY"])
    assert net.to_wan("10") == ["answer wan", "answer wan"]  # control: the flush reopened the leak
    net.forget_arp()
    out = net.vpd("apply", "--if-changed", "-v").stdout
    assert "drift repaired" in out and "ip6 chain VPD6_XRAY: rebuilt (1 rules)" in out
    assert "192.168.50.10 " not in net.arp()
    net.zero_wan()
    assert net.to_wan("10") == [BLOCKED, BLOCKED]
    assert net.wan_packets()["10"] == 0
    assert "live state matches" in net.vpd("apply", "--if-changed", "-v").stdout


def test_scoped_stop_and_apply_keep_the_other_components_block(net):
    net.talk_ipv4("20")
    net.vpd("apply")
    # .10 talks only now: an apply of the tunnel part refreshes the MACs of the running Xray block
    assert net.to_wan("10") == ["answer wan", "answer wan"]
    net.talk_ipv4("10")
    out = net.vpd("apply", "tunnel", "-v").stdout
    assert "ip6 chain VPD6_XRAY: rebuilt (1 rules)" in out
    assert net.to_wan("10") == [BLOCKED, BLOCKED]
    net.vpd("stop", "tunnel")
    rules = net.filter6()
    assert not [l for l in rules if "VPD6_TUN" in l]
    assert "-A FORWARD -i br0 ! -o br0 -j VPD6_XRAY" in rules
    assert net.to_wan("20") == ["answer wan", "answer wan"]  # the tunnel is stopped: so is its block
    assert net.to_wan("10") == [BLOCKED, BLOCKED]
    net.vpd("apply", "tunnel")
    assert net.to_wan("20") == [BLOCKED, BLOCKED]
    net.vpd("status", check=0)
    assert "no changes" in net.vpd("apply", "-v").stdout


def test_ignore_mode_touches_nothing_and_removes_an_earlier_block(net):
    net.talk_ipv4("10")
    net.vpd("apply")
    assert net.to_wan("10") == [BLOCKED, BLOCKED]
    raw = json.loads(open(net.cfg).read())
    raw["advanced"]["ipv6"] = {"mode": "ignore"}
    open(net.cfg, "w").write(json.dumps(raw))
    net.vpd("apply")
    assert not [l for l in net.filter6() if "VPD6" in l]
    assert net.to_wan("10") == ["answer wan", "answer wan"]
    assert "VPD6" not in net.vpd("status", check=0).stdout


def test_without_ip6tables_apply_warns_once_and_routes_as_before(net, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("ip", "ipset", "iptables-%s-restore" % net.backend, "iptables-legacy-save", "iptables-nft-save"):
        path = shutil.which(tool)
        if path:
            os.symlink(path, str(bindir / tool))
    env = {"PATH": str(bindir)}
    net.talk_ipv4("10")
    p = net.vpd("apply", env=env)
    assert p.stderr.count("IPv6 is not blocked") == 1, p.stderr
    assert "Traceback" not in p.stderr
    assert "ip6tables not found" in p.stderr
    assert not [l for l in net.filter6() if "VPD6" in l]
    assert "-A PREROUTING -i br0 -j XRAY_TPROXY" in net.router.iptables_save()
    st = net.vpd("status", check=0, env=env).stdout
    assert "SKIPPED  ipv6" in st


def test_a_later_failing_step_undoes_the_ipv6_step_and_a_failing_ipv6_step_changes_nothing(net, tmp_path):
    from test_faults_kernel import FAIL_WRITES, wrapper
    for n in ("10", "20"):
        net.talk_ipv4(n)
    raw = json.loads(open(net.cfg).read())
    only_xray = dict(raw, tunnel_director={"tunnels": {}})
    open(net.cfg, "w").write(json.dumps(only_xray))
    net.vpd("apply")
    before, mangle = net.filter6(), net.router.snapshot()
    assert not [l for l in before if "VPD6_TUN" in l]
    for d in ("ip-fails", "ip6-fails"):
        (tmp_path / d).mkdir()
    open(net.cfg, "w").write(json.dumps(raw))  # the tunnel client comes in: its block first
    env = wrapper(tmp_path / "ip-fails", "ip", 'if [ "$1" = "-batch" ]; then cat >/dev/null; '
                  'echo "RTNETLINK answers: Operation not permitted" >&2; echo "Command failed -:1" >&2; exit 1; fi\n'
                  'exec "$REAL" "$@"')
    err = net.vpd("apply", check=1, env=env).stderr
    assert "add ip rules and routes" in err
    assert net.filter6() == before and net.router.snapshot() == mangle
    env = wrapper(tmp_path / "ip6-fails", "ip6tables-%s-restore" % net.backend,
                  FAIL_WRITES % "ip6tables-restore: simulated failure\\n\\nError occurred at line: 2")
    err = net.vpd("apply", check=1, env=env).stderr
    assert "update ip6tables filter chains and jumps" in err and "offending line: 2: :VPD6_TUN - [0:0]" in err
    assert net.filter6() == before and net.router.snapshot() == mangle
    net.vpd("apply")
    assert net.to_wan("20") == [BLOCKED, BLOCKED]
