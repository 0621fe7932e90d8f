"""Kill switch with real packets: a tunnel that goes down must not send its clients to the WAN.

Every test counts what arrives at the WAN namespace (a raw-table counter per client source),
and checks the positive control first: the same probes take the tunnel while it is up.
"""

import json
import time

import pytest

from vpn_director.lab import PORT

pytestmark = pytest.mark.kernel

WGC1_CLIENT, OVPN_CLIENT, MAIN_CLIENT = "192.168.50.20", "192.168.50.22", "192.168.50.40"
CONFIG = {
    "xray": {"clients": [], "exclude_sets": []},
    "tunnel_director": {"tunnels": {
        "wgc1": {"clients": [WGC1_CLIENT], "exclude": ["ru"]},
        "ovpnc1": {"clients": [OVPN_CLIENT]},
    }},
}
DST = "8.8.8.8"
PROBES = [{"dst": DST, "port": PORT, "proto": p} for p in ("tcp", "udp", "icmp")]


def up(lab, raw=CONFIG, topology=None):
    lab.up(raw, topology=topology)
    count_at_wan(lab)
    assert lab.apply().returncode == 0


def count_at_wan(lab):
    """A counter per client in the WAN namespace; ICMP echo errors not rate-limited per peer."""
    lab._run(lab._agent("sysctl", "net.ipv4.icmp_ratelimit=0"), ns=lab.router, env=lab.env())
    for client in lab.clients:
        lab._run(["iptables-%s" % lab.backend, "-t", "raw", "-A", "PREROUTING", "-s", client], ns=lab.wan)


def at_wan(lab, client):
    """Packets from `client` that reached the WAN namespace so far."""
    out = lab._run(["iptables-%s" % lab.backend, "-t", "raw", "-L", "PREROUTING", "-v", "-x", "-n"],
                   ns=lab.wan).stdout
    for line in out.splitlines():
        f = line.split()
        if f and f[0].isdigit() and client in f[2:]:
            return int(f[0])
    raise AssertionError("no counter for %s in the WAN namespace:\n%s" % (client, out))


def answers(lab, client):
    return lab.probe(client, PROBES)


def tunnel_states(lab):
    p = lab.vpd("status", "--json")
    assert p.returncode in (0, 3), p.stderr
    return {t["tunnel"]: t for t in json.loads(p.stdout)["tunnels"]}


def rules(lab):
    return lab._run(["ip", "-N", "rule", "show"], ns=lab.router).stdout


def assert_through_tunnel(lab, client, tunnel):
    before = at_wan(lab, client)
    got = answers(lab, client)
    assert [a.split()[0] for a in got[:2]] == [tunnel, tunnel], got
    assert got[2] == "echo-reply", got
    assert at_wan(lab, client) == before  # the echo went to the tunnel side, not the WAN


def assert_refused(lab, client, fast=False):
    """0 packets at the WAN. With `fast`, also the refusal the client sees at once: the kernel
    answers a routing failure with at most 5 ICMP errors in a burst, then one a second, per
    client (net.ipv4.route.error_cost/error_burst), so only a first refusal is sure to be seen."""
    before = at_wan(lab, client)
    got = answers(lab, client)
    assert at_wan(lab, client) == before, got  # not one packet at the WAN
    assert not any(a.startswith("wan") for a in got), got
    if fast:  # refused by the guard: TCP's connect fails, the echo gets the router's unreachable
        assert got[0] == "error Network is unreachable", got
        assert got[2].startswith("unreachable"), got


def break_tunnel(lab, how, name="wgc1"):
    r = lab.router
    if how == "link down":
        lab._ip(r, "link", "set", name, "down")
    elif how == "table flushed":  # what the firmware does on every tunnel restart
        lab._ip(r, "route", "flush", "table", str(lab.tables[name]))
    elif how == "interface deleted":
        lab._ip(r, "link", "del", name)
    else:
        raise ValueError(how)


def restore_tunnel(lab, how, name="wgc1"):
    r, ns, table = lab.router, lab.tunnels[name], str(lab.tables[name])
    i = list(lab.tables).index(name) + 1
    near, far = "10.201.%d.1" % i, "10.201.%d.2" % i
    if how == "link down":
        lab._ip(r, "link", "set", name, "up")
    elif how == "interface deleted":  # the firmware brings up a new interface of the same name
        lab._ip(r, "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", ns)
        lab._ip(r, "addr", "add", near + "/30", "dev", name)
        lab._ip(r, "link", "set", name, "up")
        lab._ip(ns, "addr", "add", far + "/30", "dev", "eth0")
        lab._ip(ns, "link", "set", "eth0", "up")
        lab._ip(ns, "route", "replace", "default", "via", near)
    lab._ip(r, "route", "replace", "default", "via", far, "dev", name, "table", table)


@pytest.mark.parametrize("how", ["link down", "table flushed", "interface deleted"])
def test_a_tunnel_that_goes_down_fails_closed_and_comes_back_by_itself(lab, how):
    up(lab)
    assert_through_tunnel(lab, WGC1_CLIENT, "wgc1")  # positive control
    assert tunnel_states(lab)["wgc1"]["state"] == "UP"

    break_tunnel(lab, how)
    assert_refused(lab, WGC1_CLIENT, fast=True)
    s = tunnel_states(lab)["wgc1"]
    assert (s["state"], s["guard"]) == ("DOWN → BLOCKED", True), s
    assert_through_tunnel(lab, OVPN_CLIENT, "ovpnc1")  # the other tunnel is untouched
    p = lab.vpd("trace", WGC1_CLIENT, DST, "--live", "--json")
    seen = json.loads(p.stdout)
    assert seen["route"] == "blocked" and "kill switch" in seen["steps"][-1], seen
    assert seen["kernel"] == "refused: Network is unreachable"

    restore_tunnel(lab, how)  # no re-apply: the guard never stood in the way of the lookup
    assert_through_tunnel(lab, WGC1_CLIENT, "wgc1")
    assert tunnel_states(lab)["wgc1"]["state"] == "UP"


@pytest.mark.parametrize("action,tcp_error", [("prohibit", "error No route to host"), ("blackhole", "timeout")])
def test_other_guard_actions_refuse_too(lab, action, tcp_error):
    raw = dict(CONFIG, advanced={"kill_switch": {"action": action}})
    up(lab, raw)
    assert_through_tunnel(lab, WGC1_CLIENT, "wgc1")
    break_tunnel(lab, "table flushed")
    before = at_wan(lab, WGC1_CLIENT)
    got = answers(lab, WGC1_CLIENT)
    assert at_wan(lab, WGC1_CLIENT) == before, got
    assert got[0] == tcp_error, got
    assert tunnel_states(lab)["wgc1"]["state"] == "DOWN → BLOCKED"


def test_without_a_guard_the_leak_is_visible_and_status_says_leaking(lab):
    raw = {"xray": {"clients": [], "exclude_sets": []},
           "tunnel_director": {"tunnels": {
               "wgc1": {"clients": [WGC1_CLIENT], "kill_switch": False},
               "ovpnc1": {"clients": [OVPN_CLIENT]},
               "main": {"clients": [MAIN_CLIENT]}}}}
    up(lab, raw)
    text = rules(lab)
    # one guard only: ovpnc1 (slot 2); none for wgc1 (turned off) nor for main (slot 3)
    assert [l.split(":")[0] for l in text.splitlines() if l.split(":")[0].startswith("166")] == ["16641"], text
    assert_through_tunnel(lab, WGC1_CLIENT, "wgc1")
    break_tunnel(lab, "table flushed")
    before = at_wan(lab, WGC1_CLIENT)
    got = answers(lab, WGC1_CLIENT)
    assert [a.split()[0] for a in got[:2]] == ["wan", "wan"], got  # the leak the guard prevents
    assert at_wan(lab, WGC1_CLIENT) >= before + 3
    states = tunnel_states(lab)
    assert states["wgc1"]["state"] == "DOWN → LEAKING" and states["wgc1"]["kill_switch"] is False
    assert states["ovpnc1"]["state"] == "UP" and "main" not in states
    p = lab.vpd("status")
    assert "DOWN → LEAKING   tunnel wgc1" in p.stdout, p.stdout


def test_guards_survive_firmware_churn_and_the_firewall_restart_hook(lab):
    up(lab)
    guards_before = [l for l in rules(lab).splitlines() if l.startswith(("16640:", "16641:"))]
    assert len(guards_before) == 2
    t = str(lab.tables["wgc1"])
    for round_ in range(3):
        # Merlin's VPN Director: rules in its own band come and go, tunnel tables are flushed
        for pref in (10210, 11210, 12210, 12215, 12220):
            lab._ip(lab.router, "rule", "add", "pref", str(pref), "from", "192.168.50.99", "lookup", t)
        lab._ip(lab.router, "route", "flush", "table", t)
        for pref in (10210, 11210, 12210, 12215, 12220):
            lab._ip(lab.router, "rule", "del", "pref", str(pref))
        assert_refused(lab, WGC1_CLIENT)
        restore_tunnel(lab, "table flushed")
        assert_through_tunnel(lab, WGC1_CLIENT, "wgc1")
    # A firewall restart rewrites the mangle table; the firewall-start hook runs apply again.
    ipt = "iptables-%s" % lab.backend
    lab._run([ipt, "-t", "mangle", "-F"], ns=lab.router)
    lab._run([ipt, "-t", "mangle", "-X"], ns=lab.router)
    assert [l for l in rules(lab).splitlines() if l.startswith(("16640:", "16641:"))] == guards_before
    p = lab.vpd("apply")
    assert p.returncode == 0, p.stderr
    assert [l for l in rules(lab).splitlines() if l.startswith(("16640:", "16641:"))] == guards_before
    break_tunnel(lab, "table flushed")
    assert_refused(lab, WGC1_CLIENT)


def test_stop_removes_guards_after_the_marks_and_apply_adds_them_before(lab):
    up(lab)
    p = lab.vpd("stop", "--dry-run")
    text = p.stdout
    assert text.index("TUN_DIR") < text.index("16640"), text  # marks out first, then the guards
    assert lab.vpd("stop").returncode == 0
    assert "16640:" not in rules(lab)
    p = lab.vpd("apply", "--dry-run")
    text = p.stdout
    assert text.index("16640") < text.index("TUN_DIR"), text  # guards in before any packet is marked


def test_guarded_clients_keep_reaching_the_routers_lan_subnets_while_down(lab):
    lab.up(CONFIG)
    r = lab.router
    # a second subnet on the LAN bridge, with a host on it
    lab._ip(r, "addr", "add", "192.168.60.1/24", "dev", "br0")
    ns = lab.prefix + "-lan2"
    lab._ns(ns)
    lab._ip(r, "link", "add", "vlan2", "type", "veth", "peer", "name", "eth0", "netns", ns)
    lab._ip(r, "link", "set", "vlan2", "master", "br0", "up")
    lab._ip(ns, "addr", "add", "192.168.60.10/24", "dev", "eth0")
    lab._ip(ns, "link", "set", "eth0", "up")
    lab._ip(ns, "route", "add", "default", "via", "192.168.60.1")
    lab._serve(ns, "lan2", PORT)
    count_at_wan(lab)
    assert lab.apply().returncode == 0
    lan2 = [{"dst": "192.168.60.10", "port": PORT, "proto": p} for p in ("tcp", "udp")]
    assert [a.split()[0] for a in lab.probe(WGC1_CLIENT, lan2)] == ["lan2", "lan2"]
    break_tunnel(lab, "table flushed")
    assert_refused(lab, WGC1_CLIENT)  # the internet is refused...
    assert [a.split()[0] for a in lab.probe(WGC1_CLIENT, lan2)] == ["lan2", "lan2"]  # ...the LAN is not
    # control: without the LAN exceptions the guard refuses the LAN subnet too
    ipt = "iptables-%s" % lab.backend
    for net in ("192.168.50.0/24", "192.168.60.0/24"):
        lab._run([ipt, "-t", "mangle", "-D", "TUN_DIR", "-d", net, "-j", "RETURN"], ns=r)
    got = lab.probe(WGC1_CLIENT, lan2)
    assert not any(a.startswith("lan2") for a in got), got


WATCH = [{"dst": DST, "port": PORT, "proto": "tcp"}, {"dst": DST, "port": PORT, "proto": "udp"}]


def test_no_leak_while_reapplying_with_a_tunnel_going_down_and_up(lab, tmp_path):
    """Config edits (tunnels reordered: marks remapped through temporary ones) under continuous
    probes, with wgc1's table flushed for a while in the middle: no probe answered by the WAN."""
    import copy
    base = copy.deepcopy(CONFIG)
    extra = "192.168.50.41"
    topology = copy.deepcopy(base)
    topology["tunnel_director"]["tunnels"]["wgc1"]["clients"].append(extra)
    up(lab, base, topology=topology)
    stop = str(tmp_path / "stop")
    watchers = {}
    for client in (WGC1_CLIENT, OVPN_CLIENT):
        out = str(tmp_path / ("watch-%s.jsonl" % client))
        watchers[client] = (out, lab.watch(client, WATCH, out, stop))
    cur = base
    down_at, up_at = 8, 16
    try:
        time.sleep(0.3)
        for i in range(24):
            cur = copy.deepcopy(cur)
            tuns = cur["tunnel_director"]["tunnels"]
            if i % 3 == 0:
                cur["tunnel_director"]["tunnels"] = dict(reversed(list(tuns.items())))
            elif i % 3 == 1:
                wg = tuns["wgc1"]["clients"]
                wg.remove(extra) if extra in wg else wg.append(extra)
            else:
                tuns["wgc1"]["exclude"] = [] if tuns["wgc1"].get("exclude") else ["ru"]
            if i == down_at:
                break_tunnel(lab, "table flushed")
            if i == up_at:
                restore_tunnel(lab, "table flushed")
            lab.write_config(cur)
            p = lab.vpd("apply")
            assert p.returncode == 0, p.stderr
            time.sleep(0.1)
    finally:
        open(stop, "w").close()
        for _, proc in watchers.values():
            proc.wait(timeout=30)
    seen = {}
    for client, (out, _) in watchers.items():
        for line in open(out):
            who = json.loads(line)["answer"].split()[0]
            seen.setdefault(client, {}).setdefault(who, 0)
            seen[client][who] += 1
    print("\nanswers per client: %s" % seen)
    assert seen[WGC1_CLIENT].get("wgc1", 0) > 50 and seen[OVPN_CLIENT].get("ovpnc1", 0) > 50
    refused = seen[WGC1_CLIENT].get("error", 0) + seen[WGC1_CLIENT].get("timeout", 0)
    assert refused >= 3  # wgc1 was down for a while, and its client was refused meanwhile
    assert all("wan" not in s for s in seen.values()), seen
