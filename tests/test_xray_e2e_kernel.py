"""End to end on the kernel, real Xray-core on both sides, under each iptables backend.

LAN client namespace → our TPROXY rules → the router's Xray, generated, tested and started by
`xray import` + `xray use` → VLESS+REALITY+Vision (then Trojan+WS+TLS) → a real Xray server in
the WAN namespace → a far host that only that server reaches (tests/xraylab.py). The proxy
server's address is in no config list: the server store puts it into XRAY_SERVERS, so a client
talking to that address directly goes direct instead of into the proxy (no loop)."""

import json
import shutil
import time

import pytest

import xraylab
from vpn_director.xray import embedded
from xrayproc import xray_command

pytestmark = [pytest.mark.kernel,
              pytest.mark.skipif(not embedded.available(), reason="the Xray-core package is not installed"),
              pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the lab's keys")]

CLIENT = "192.168.50.10"
SERVER = "203.0.113.10"  # the proxy server: in no config list
RAW = {"xray": {"clients": [CLIENT], "exclude_sets": []}}


def kernel_state(lab):
    save = lab._run(["iptables-%s-save" % lab.backend, "-t", "mangle"], ns=lab.router).stdout
    rules = [ln for ln in save.splitlines() if ln.startswith(("-A", "-N", ":XRAY", ":TUN"))]
    return rules, lab._run(["ip", "rule", "show"], ns=lab.router).stdout


def vpd(lab, *args):
    p = lab.vpd(*args)
    assert p.returncode == 0, "%s: exit %d\n%s\n%s" % (args, p.returncode, p.stdout, p.stderr)
    return p.stdout


def test_clients_reach_the_far_host_only_through_real_proxies(make_lab, tmp_path, request):
    lab = make_lab()
    raw = json.loads(json.dumps(RAW))
    raw["advanced"] = {"xray": {"service": "managed", "binary": xray_command(tmp_path),
                                "probe_url": "http://1.1.1.1/generate_204"}}
    lab.up(raw)
    assert lab.apply().returncode == 0
    far = xraylab.FarHost(lab.wan, str(tmp_path / "far"))
    request.addfinalizer(far.stop)
    far.start()
    server = xraylab.XrayServer(lab.wan, str(tmp_path / "server"), SERVER)
    request.addfinalizer(server.stop)
    server.start()
    lab.stop_xray()  # the stand-in gives the TPROXY port to the real Xray
    client_ns = lab.clients[CLIENT]

    # negative control: neither the router nor the client reaches the far host directly
    direct = xraylab.probe(lab.router, [{"proto": "tcp", "dst": far.address, "port": far.tcp_port}], timeout=1.5)
    assert not direct[0]["ok"]

    for name in ("reality", "trojan-ws"):
        vpd(lab, "xray", "import", server.link(name))
    members = lab._run(["ipset", "list", "XRAY_SERVERS"], ns=lab.router).stdout
    assert SERVER in members.split("Members:")[1]  # from the store, not from the config
    before = kernel_state(lab)

    out = vpd(lab, "xray", "use", "reality")
    assert "now using 'reality'" in out and "vless·reality·vision" in out
    n = len(server.accepted())
    got = xraylab.probe(client_ns, [{"proto": "tcp", "dst": far.address, "port": far.tcp_port, "path": "/e2e"},
                                    {"proto": "udp", "dst": far.address, "port": far.udp_port, "data": "e2e-udp"}])
    assert [g["ok"] for g in got] == [True, True], got
    assert "far %s:80 /e2e from %s" % (far.address, far.gateway) in got[0]["body"]
    lines = server.accepted(n)
    assert any("tcp:%s:80 [reality" % far.address in ln for ln in lines), lines
    assert any("udp:%s:%d [reality" % (far.address, far.udp_port) in ln for ln in lines), lines
    assert {s["src"] for s in far.seen()} == {far.gateway}

    # no loop: the proxy server's own address, asked for by a proxied client, goes direct
    n = len(server.accepted())
    answers = lab.probe(CLIENT, [{"dst": SERVER, "port": 7000, "proto": p} for p in ("tcp", "udp")])
    assert answers == ["wan %s:7000" % SERVER] * 2
    assert not [ln for ln in server.accepted(n) if SERVER in ln.split("accepted", 1)[1]]

    # xray use B while the client loops UDP requests to the far host
    outfile, stopfile = str(tmp_path / "watch.jsonl"), str(tmp_path / "watch.stop")
    watcher = lab.watch(CLIENT, [{"dst": far.address, "port": far.udp_port, "proto": "udp"}], outfile, stopfile)
    request.addfinalizer(lambda: watcher.poll() is None and watcher.kill())
    time.sleep(1.0)
    n = len(server.accepted())
    t_switch = time.time()
    vpd(lab, "xray", "use", "trojan-ws")
    t_done = time.time()
    time.sleep(1.5)
    open(stopfile, "w").close()
    watcher.wait(15)
    probes = [json.loads(ln) for ln in open(outfile)]
    ok = [p for p in probes if p["answer"] == "probe"]
    assert [p for p in ok if p["t"] < t_switch] and [p for p in ok if p["t1"] > t_done]
    # every answer came from the far host, which only the proxy server reaches
    seen_udp = [s for s in far.seen() if s["proto"] == "udp" and s.get("data") == "probe"]
    assert len(seen_udp) >= len(ok) and {s["src"] for s in far.seen()} == {far.gateway}
    after = server.accepted(n)
    assert any("[trojan-ws" in ln for ln in after) and not any(
        "[reality" in ln for ln in after if _when(ln) > t_done + 0.2)
    assert kernel_state(lab) == before  # chains, sets' rules and ip rules untouched by the restarts

    vpd(lab, "apply")  # the client's MAC, first seen by this traffic, joins its IPv6 block
    st = lab.vpd("status")
    assert st.returncode == 0, st.stdout
    st = json.loads(vpd(lab, "xray", "status", "--json"))
    assert st["ok"] and st["active"]["name"] == "trojan-ws" and st["config"] == "matches"


def _when(line):
    """An access-log line's time (Xray writes local time: 2026/12/01 17:14:04.564030 from ...)."""
    try:
        return time.mktime(time.strptime(line[:19], "%Y/%m/%d %H:%M:%S")) + float("0" + line[19:26])
    except ValueError:
        return 0.0


