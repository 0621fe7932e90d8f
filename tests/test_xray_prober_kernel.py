"""`xray test` through the prober (vpn_director.xray.prober) with a real Xray-core, in a namespace of
the test's own: ten servers with known fates, a refused outbound, and the prober's isolation from
the live Xray (`pidof`, killing one leaves the other).

The servers: three Shadowsocks-2022 inbounds of one real Xray, one Trojan+WS+TLS with the right
certificate pin, two ports nobody listens on, one address whose packets vanish (a veth peer
that drops them), one inbound whose exit is a captive portal (HTTP 200 on /generate_204), one
VMess+WS+TLS pinned to another certificate, one Shadowsocks-2022 with the wrong key."""

import base64
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse

import pytest

import xraylab
from netns import Netns
from vpn_director.xray import embedded
from xrayproc import FarHost, XrayProcess, ss_key, vpd_in, wait_port, xray_command

pytestmark = [pytest.mark.kernel,
              pytest.mark.skipif(not embedded.available(), reason="the Xray-core package is not installed"),
              pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the TLS server's keys")]

SS = "10.77.0.1"  # the Shadowsocks server
TLS = "10.77.0.2"  # the Trojan/VMess TLS server
SILENT = "10.77.5.9"  # routed to a veth whose peer drops everything: connects time out
PORTAL = "8.8.4.4"  # answers 200 everywhere; the "portal" inbound's freedom is redirected there
TPROXY, SOCKS = 23461, 23462
TIMEOUT = 5  # seconds per server for `xray test`
METHOD = "2022-blake3-aes-128-gcm"

# name -> (ok, reason prefix)
EXPECTED = {
    "ss-a": (True, ""), "ss-b": (True, ""), "ss-c": (True, ""), "trojan-tls": (True, ""),
    "dead-1": (False, "connection refused"), "dead-2": (False, "connection refused"),
    "silent": (False, "timeout"), "portal": (False, "HTTP 200 (not 204)"),
    "tls-mismatch": (False, "TLS: peer cert is unrecognized"), "wrong-key": (False, "connection closed"),
}


def ss_link(address, port, key, name):
    return "ss://%s:%s@%s:%d#%s" % (METHOD, urllib.parse.quote(key, safe=""), address, port, name)


def kill_in(ns):
    """Kill the processes of this namespace only (pkill would reach every namespace's)."""
    for pid in ns.run(["ip", "netns", "pids", ns.name], check=False).stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (OSError, ValueError):
            pass


@pytest.fixture(scope="module")
def world(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prober")
    ns = Netns(request.addfinalizer, prefix="vxp")
    request.addfinalizer(lambda: kill_in(ns))
    ns.sh("ip addr add %s/32 dev lo && ip link add vp0 type veth peer name vp1 && "
          "ip addr add 10.77.5.1/24 dev vp0 && ip link set vp0 up && ip link set vp1 up && "
          "ip neigh add %s lladdr 02:00:00:00:00:09 dev vp0" % (SS, SILENT))
    far = FarHost(request.addfinalizer, ns, tmp)
    FarHost(request.addfinalizer, ns, tmp, address=PORTAL, status=200)
    keys = {n: ss_key(i) for i, n in enumerate(("ss-a", "ss-b", "ss-c", "portal"), start=1)}
    ports = {"ss-a": 24001, "ss-b": 24002, "ss-c": 24003, "portal": 24004}
    cfg = {"inbounds": [{"tag": n, "listen": SS, "port": ports[n], "protocol": "shadowsocks",
                         "settings": {"method": METHOD, "password": keys[n], "network": "tcp"}} for n in ports],
           "outbounds": [{"tag": "direct", "protocol": "freedom", "settings": {}},
                         {"tag": "to-portal", "protocol": "freedom", "settings": {"redirect": PORTAL + ":80"}}],
           "routing": {"rules": [{"type": "field", "inboundTag": ["portal"], "outboundTag": "to-portal"}]}}
    ss = XrayProcess(request.addfinalizer, ns, tmp, "ss-server", cfg)
    for p in ports.values():
        wait_port(ns, p)
    tls = xraylab.XrayServer(ns.name, str(tmp / "tls"), TLS, names=("trojan-ws", "vmess-ws"))
    request.addfinalizer(tls.stop)
    tls.start(timeout=60)
    other = xraylab.Pki(str(tmp / "other-pki"), ips=[TLS])
    vmess = json.loads(base64.b64decode(tls.link("vmess-ws")[len("vmess://"):]))
    vmess.update(ps="tls-mismatch", pcs=other.cert_sha256)
    links = [ss_link(SS, ports[n], keys[n], n) for n in ("ss-a", "ss-b", "ss-c")]
    links += [tls.link("trojan-ws").rsplit("#", 1)[0] + "#trojan-tls",
              ss_link(SS, 24009, ss_key(9), "dead-1"), ss_link(SS, 24010, ss_key(10), "dead-2"),
              ss_link(SILENT, 24001, keys["ss-a"], "silent"), ss_link(SS, ports["portal"], keys["portal"], "portal"),
              "vmess://" + base64.b64encode(json.dumps(vmess).encode()).decode(),
              ss_link(SS, ports["ss-a"], ss_key(11), "wrong-key")]
    raw = {"data_dir": str(tmp / "data"),
           "advanced": {"state_dir": str(tmp / "state"), "lock_timeout": 60, "rt_tables": str(tmp / "rt_tables"),
                        "xray": {"tproxy_port": TPROXY, "socks_port": SOCKS, "service": "managed",
                                 "binary": xray_command(tmp), "start_timeout": 60,
                                 "probe_url": "http://%s/generate_204" % far.address}}}
    (tmp / "rt_tables").write_text("")
    (tmp / "vpn-director.json").write_text(json.dumps(raw, indent=2) + "\n")

    class World:
        pass
    w = World()
    w.ns, w.tmp, w.ss, w.tls, w.far, w.links = ns, tmp, ss, tls, far, links
    w.config = str(tmp / "vpn-director.json")

    w.vpd = vpd = vpd_in(ns, w.config)
    out = vpd("xray", "import", "-", input="\n".join(links) + "\n", check=0).stdout
    assert "stored 10" in out, out
    return w


def test_all_verdicts(world):
    w = world
    p = w.vpd("xray", "test", "--all", "--json", "--timeout", str(TIMEOUT), check=1)
    rep = json.loads(p.stdout)
    got = {r["name"]: r for r in rep["results"]}
    assert sorted(got) == sorted(EXPECTED)
    for name, (ok, reason) in EXPECTED.items():
        r = got[name]
        assert r["ok"] is ok and r["reason"].startswith(reason), (name, r)
        assert (r["latency_ms"] is not None) is ok, (name, r)
    assert rep["passed"] == 4 and rep["tested"] == 10
    # the 204s came through the proxies, not around them
    for tag in ("ss-a", "ss-b", "ss-c"):
        assert any("[%s >> direct]" % tag in ln for ln in w.ss.accepted()), tag
    # the results are recorded in the store; the text form says the same
    servers = {s["name"]: s for s in json.loads(w.vpd("xray", "servers", "--json", check=0).stdout)["servers"]}
    assert servers["ss-a"]["latency_ms"] is not None and servers["ss-a"]["error"] == ""
    assert servers["silent"]["latency_ms"] is None and servers["silent"]["error"] == "timeout"
    text = w.vpd("xray", "test", "ss-a", "#10", check=1).stdout
    assert "ss-a" in text and "failed: connection closed" in text and "1 of 2 passed" in text
    assert w.vpd("xray", "test", "ss-b", "trojan-tls", check=0).returncode == 0
    # the prober is gone after each run
    assert not os.path.exists(str(w.tmp / "state" / "probe" / "prober.pid"))
    assert not ours(w.ns, pidof("vpd-xray-probe"))

    single = json.loads(w.vpd("xray", "test", "silent", "--json", "--timeout", str(TIMEOUT), check=1).stdout)
    fast = json.loads(w.vpd("xray", "test", "ss-a", "--json", check=0).stdout)
    print("\nxray test --all (10 servers, --timeout %d): %d ms; the slowest alone (silent): %d ms; "
          "one fast server alone: %d ms" % (TIMEOUT, rep["elapsed_ms"], single["elapsed_ms"], fast["elapsed_ms"]))


def test_refused_outbound_is_named_by_id(world):
    """An outbound the real Xray refuses (a cipher it does not have) is found by bisection and
    reported by its id; the others still get their verdicts."""
    w = world
    path = w.tmp / "data" / "servers.json"
    saved = path.read_bytes()
    data = json.loads(saved)
    broken = [s for s in data["servers"] if s["name"] == "ss-b"][0]
    broken["outbound"]["settings"]["servers"][0]["method"] = "rc4-md5"
    path.write_text(json.dumps(data))
    try:
        rep = json.loads(w.vpd("xray", "test", "--all", "--json", "--timeout", str(TIMEOUT), check=1).stdout)
    finally:
        path.write_bytes(saved)
    got = {r["id"]: r for r in rep["results"]}
    assert got[broken["id"]]["reason"].startswith("refused by Xray"), got[broken["id"]]
    for r in rep["results"]:
        if r["id"] != broken["id"]:
            ok, reason = EXPECTED[r["name"]]
            assert r["ok"] is ok and r["reason"].startswith(reason), r


HOLD = r"""
import json, sys
from vpn_director import config
from vpn_director.xray import generate, prober, store
cfg = config.load(sys.argv[1])
servers = store.load(cfg.data_dir).servers[:2]
with prober.Prober(cfg, {n: generate.proxy_outbound(s) for n, s in enumerate(servers)}) as p:
    print(json.dumps({"pid": p.proc.pid, "ports": [p.ports[n] for n in sorted(p.ports)]}), flush=True)
    sys.stdin.readline()
"""

GET = r"""
import sys
from vpn_director.xray import socks
try:
    print(socks.http_get(int(sys.argv[1]), sys.argv[2], 10)[0])
except socks.SocksError as e:
    print("error: %s" % e)
"""


def pidof(name):
    p = subprocess.run(["pidof", name], stdout=subprocess.PIPE, universal_newlines=True)
    return {int(x) for x in p.stdout.split()}


def ours(ns, pids):
    """The pids of `pids` that run in namespace `ns` (another test run's Xrays may be named xray too)."""
    mine = {int(x) for x in ns.run(["ip", "netns", "pids", ns.name], check=False).stdout.split()}
    return pids & mine


def children(pid):
    out = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.add(int(d))
            except (OSError, IndexError, ValueError):
                continue
    return out


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def wait_gone(pid, timeout=30):
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


def get(w, port):
    return w.ns.run([sys.executable, "-c", GET, str(port), "http://%s/generate_204" % w.far.address]).stdout.strip()


class Holder:
    """A prober kept up by a script in the namespace until close()."""

    def __init__(self, w):
        self.proc = subprocess.Popen(["ip", "netns", "exec", w.ns.name, sys.executable, "-c", HOLD, w.config],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     universal_newlines=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 90)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            code = self.close()
            raise AssertionError("the prober did not come up (exit %s): %s" % (code, self.err))
        info = json.loads(line)
        self.pid, self.ports = info["pid"], info["ports"]
        self.child = wait_child(self.pid)

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.err = self.proc.stderr.read()
        return self.proc.returncode


def wait_child(pid, timeout=30):
    """The embedded Xray's instance process under `pid` (the command's process)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = children(pid)
        if kids:
            return kids.pop()
        time.sleep(0.05)
    raise AssertionError("no Xray instance under pid %d" % pid)


def live_child(w):
    return wait_child(int((w.tmp / "state" / "xray.pid").read_text()))


def test_prober_is_isolated_from_the_live_xray(world):
    w = world
    w.vpd("xray", "use", "ss-a", check=0)
    binary = w.tmp / "vpd-xray-probe"  # beside the xray command it links

    hold = Holder(w)
    try:
        assert os.path.samefile(str(binary), str(w.tmp / "xray"))  # a hard link, not a symlink
        live, probe = live_child(w), hold.child
        named_xray, named_probe = pidof("xray"), pidof("vpd-xray-probe")
        assert live in named_xray and probe not in named_xray
        assert probe in named_probe and live not in named_probe
        assert get(w, hold.ports[0]) == "204" and get(w, SOCKS) == "204"

        # what Entware's `killall xray` does to the live Xray (the test's proxy servers, also
        # named xray here, are spared): the prober stays
        os.kill(live, signal.SIGKILL)
        assert wait_gone(live)
        assert alive(probe) and get(w, hold.ports[0]) == "204" and get(w, hold.ports[1]) == "204"
        assert "error" in get(w, SOCKS)
    finally:
        assert hold.close() == 0, hold.err
    assert not alive(probe) and not os.path.exists(str(w.tmp / "state" / "probe" / "prober.pid"))

    # and the other way round: the prober killed, the live Xray serves on
    w.vpd("xray", "restart", check=0)
    hold = Holder(w)
    try:
        live, probe = live_child(w), hold.child
        assert ours(w.ns, pidof("vpd-xray-probe")) == {probe}
        os.kill(probe, signal.SIGKILL)
        assert wait_gone(probe) and wait_gone(hold.pid)
        assert alive(live) and get(w, SOCKS) == "204"
    finally:
        assert hold.close() == 0, hold.err  # stopping a prober that is already gone is fine
    assert alive(live) and get(w, SOCKS) == "204"
