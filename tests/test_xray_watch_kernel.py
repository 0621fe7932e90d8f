"""The watch daemon on the kernel with real Xray-core: failover, the WAN rule, the return to the
preferred server, the hourly limit, and all-down with block and with direct.

The lab (vpn_director.lab.Lab): a LAN client whose traffic our TPROXY rules hand to the router's
Xray (managed by vpn-director), two real Shadowsocks-2022 proxy servers A and B on two addresses
in the WAN namespace, and a far host (1.1.1.1, 204 on /generate_204) that only those servers
reach. The daemon itself runs (`vpn-director watch`, with the real prober) with a 1 s interval, a threshold
of 2, a 3 s hold before the return and at most 3 switches an hour; the test changes the world
(kills and restarts servers, takes the WAN link down) and waits for the daemon's events.

A counter rule in the WAN namespace counts every packet arriving with the client's own address:
a packet that left the router directly. It must stay at 0 through every switch, the WAN outage
and all-down with "block", and grow only with "direct".
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import xraylab
from fakesyslog import Syslog
from vpn_director.xray import embedded
from xrayproc import xray_command

pytestmark = [pytest.mark.kernel, pytest.mark.timeout(900),
              pytest.mark.skipif(not embedded.available(), reason="the Xray-core package is not installed"),
              pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the lab's keys")]

CLIENT = "192.168.50.10"
ADDR = {"A": "203.0.113.10", "B": "203.0.113.11"}  # the proxy servers: in no config list
MAX_SWITCHES = 3


def vpd(lab, *args):
    p = lab.vpd(*args)
    assert p.returncode == 0, "%s: exit %d\n%s\n%s" % (args, p.returncode, p.stdout, p.stderr)
    return p.stdout


class Watched:
    """The lab, its servers and the running daemon, with what the test reads from them."""

    def __init__(self, lab, tmp, request):
        self.lab, self.tmp = lab, tmp
        self.state_dir = os.path.join(lab.workdir, "state")
        self.far = xraylab.FarHost(lab.wan, str(tmp / "far"))
        request.addfinalizer(self.far.stop)
        self.far.start()
        self.servers = {}
        for name, addr in ADDR.items():
            # the address stays when the server is killed: a dead proxy on a live host refuses
            lab._run(["ip", "addr", "add", addr + "/32", "dev", "lo"], ns=lab.wan)
            srv = xraylab.XrayServer(lab.wan, str(tmp / name), addr, names=("ss2022",))
            request.addfinalizer(srv.stop)
            srv.start()
            self.servers[name] = srv
        self.iptables = "iptables-%s" % lab.backend
        lab._run([self.iptables, "-t", "raw", "-I", "PREROUTING", "-s", CLIENT], ns=lab.wan)
        self.daemon = None

    def direct_packets(self):
        """Packets that reached the WAN namespace with the client's address (sent by the router as is)."""
        save = self.lab._run([self.iptables + "-save", "-c", "-t", "raw"], ns=self.lab.wan).stdout
        line = next(ln for ln in save.splitlines() if "-A PREROUTING -s %s/32" % CLIENT in ln)
        return int(line.split("]")[0].lstrip("[").split(":")[0])

    def start_daemon(self, syslog):
        env = dict(self.lab.env(), VPD_SYSLOG=syslog)
        self.out = open(str(self.tmp / "watchd.out"), "w")
        self.daemon = subprocess.Popen(["ip", "netns", "exec", self.lab.router, sys.executable, "-m", "vpn_director",
                                        "-c", self.lab.config_path, "watch"],
                                       env=env, stdout=self.out, stderr=subprocess.STDOUT)

    def stop_daemon(self):
        if self.daemon and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            return self.daemon.wait(120)
        return None

    def output(self):
        with open(str(self.tmp / "watchd.out")) as f:
            return f.read()

    def events(self, kind=None):
        try:
            with open(os.path.join(self.state_dir, "events.jsonl")) as f:
                evs = [json.loads(ln) for ln in f if ln.strip()]
        except FileNotFoundError:
            return []
        return [e for e in evs if kind is None or e["kind"] == kind]

    def health(self):
        with open(os.path.join(self.state_dir, "xray-health.json")) as f:
            return json.load(f)

    def wait_event(self, kind, count=1, timeout=60):
        xraylab.wait_for(lambda: len(self.events(kind)) >= count or self.daemon.poll() is not None, timeout)
        assert len(self.events(kind)) >= count, "no %s event in %ds: %s\n%s" % (kind, timeout, self.events(),
                                                                                 self.output()[-3000:])
        return self.events(kind)[count - 1]

    def client(self, path="/w"):
        """One HTTP GET of the far host from the LAN client: (ok, body)."""
        got = xraylab.probe(self.lab.clients[CLIENT], [{"proto": "tcp", "dst": self.far.address,
                                                        "port": self.far.tcp_port, "path": path}], timeout=3)[0]
        return got["ok"], got.get("body", "")

    def client_wan(self):
        """The client's request to a WAN endpoint it may reach directly (8.8.8.8:7000): who answered."""
        return self.lab.probe(CLIENT, [{"dst": "8.8.8.8", "port": 7000, "proto": "tcp"}], timeout=2)[0]

    def served(self, name, since):
        """The client's far-host requests that server `name` carried since access-log line `since`."""
        return [ln for ln in self.servers[name].accepted(since) if "tcp:%s:80" % self.far.address in ln]

    def edit(self, change):
        with open(self.lab.config_path) as f:
            raw = json.load(f)
        change(raw["xray"])
        tmp = self.lab.config_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(raw, f, indent=1)
        os.replace(tmp, self.lab.config_path)


def test_watch_daemon_fails_over_returns_and_handles_all_down(make_lab, tmp_path, request):
    began = time.monotonic()
    lab = make_lab()
    raw = {"xray": {"clients": [CLIENT], "exclude_sets": [],
                    "health": {"interval_s": 1, "timeout_s": 2, "fail_threshold": 2,
                               "urls": ["http://1.1.1.1/generate_204"]},
                    "failover": {"return_hold_s": 3, "max_switches_per_hour": MAX_SWITCHES}},
           "advanced": {"xray": {"service": "managed", "binary": xray_command(tmp_path), "start_timeout": 60,
                                 "probe_url": "http://1.1.1.1/generate_204"}, "lock_timeout": 300}}
    lab.up(raw)
    assert lab.apply().returncode == 0
    w = Watched(lab, tmp_path, request)
    lab.stop_xray()  # the stand-in gives the TPROXY port to the real Xray
    for name, srv in w.servers.items():
        vpd(lab, "xray", "import", srv.link("ss2022").replace("#ss2022", "#" + name))
    ids = {r["name"]: r["id"] for r in json.loads(vpd(lab, "xray", "servers", "--json"))["servers"]}
    t0 = time.monotonic()
    vpd(lab, "xray", "use", "A")
    use_s = time.monotonic() - t0  # what one switch costs here: render, test, restart, probe
    w.edit(lambda x: x.update(preferred_server=ids["A"]))
    n = len(w.servers["A"].accepted())
    assert w.client() == (True, "far %s:80 /w from %s\n" % (w.far.address, w.far.gateway))
    assert w.served("A", n)

    syslog = Syslog(tmp_path / "log.sock")
    request.addfinalizer(syslog.close)
    w.start_daemon(str(tmp_path / "log.sock"))
    request.addfinalizer(lambda: w.stop_daemon())
    xraylab.wait_for(lambda: os.path.exists(os.path.join(w.state_dir, "xray-health.json")), 30)
    xraylab.wait_for(lambda: (w.health().get("last_check") or {}).get("ok"), 30)
    assert w.health()["active"] == ids["A"] and w.health()["wan"] == "up"

    # 1. kill A while the client keeps asking: the daemon switches to B, the client gets through B
    watch_out, stop_file = str(tmp_path / "client.jsonl"), str(tmp_path / "client.stop")
    loop = lab.watch(CLIENT, [{"dst": w.far.address, "port": w.far.udp_port, "proto": "udp"}], watch_out, stop_file)
    request.addfinalizer(lambda: loop.poll() is None and loop.kill())
    n_b = len(w.servers["B"].accepted())
    killed = time.time()
    w.servers["A"].stop()
    ev = w.wait_event("switch")
    assert (ev["from"], ev["to"]) == (ids["A"], ids["B"])
    assert "'A' (%s) failed 2 check(s) in a row" % ids["A"] in ev["reason"] and "WAN up" in ev["reason"]
    checks = w.health()["last_switch"]
    assert checks["to"] == ids["B"]
    detected = ev["time"] - killed
    # decided at the second failed check in a row (the reason says so), i.e. within fail_threshold x
    # interval plus the rounds' own time; then the candidates' test and the switch itself (loose:
    # the machine may be busy)
    assert detected <= 2 * 1 + 10 + 2 * use_s, (detected, use_s)
    time.sleep(1.5)
    open(stop_file, "w").close()
    loop.wait(20)
    answers = [json.loads(ln) for ln in open(watch_out)]
    assert [a for a in answers if a["answer"] == "probe" and a["t"] > ev["time"]]  # through B after the switch
    assert w.client()[0] and w.served("B", n_b)
    assert w.direct_packets() == 0  # nothing of the client's went out directly, during the switch or after
    assert {s["src"] for s in w.far.seen()} == {w.far.gateway}  # the far host saw the proxies only
    assert any("xray switch %s -> %s" % (ids["A"], ids["B"]) in m for m in syslog.messages())

    # 2. the WAN link goes down: B fails, but nothing switches; the state says WAN down
    lab._run(["ip", "link", "set", "wan0", "down"], ns=lab.router)
    w.wait_event("wan-down", timeout=30)
    time.sleep(4)
    st = w.health()
    assert st["wan"] == "down" and st["note"] == "WAN down: no switch" and st["active"] == ids["B"]
    assert st["consecutive_failures"] >= 2 and len(w.events("switch")) == 1
    status = lab.vpd("xray", "status").stdout
    assert "WAN DOWN: no direct answer" in status and "health: WAN down: no switch" in status
    lab._run(["ip", "link", "set", "wan0", "up"], ns=lab.router)
    lab._run(["ip", "route", "replace", "default", "via", lab.wan_address], ns=lab.router)
    w.wait_event("wan-up", timeout=30)
    assert len(w.events("switch")) == 1 and w.direct_packets() == 0

    # 3. A comes back: the return to the preferred A comes only after 3 s of passing checks
    back = time.time()  # before the start: A cannot pass a check before this
    w.servers["A"].start()
    ev = w.wait_event("return")
    assert (ev["from"], ev["to"]) == (ids["B"], ids["A"]) and ev["time"] - back >= 3
    assert "passed every check for" in ev["reason"]
    n = len(w.servers["A"].accepted())
    assert w.client()[0] and w.served("A", n)

    # 4. flapping A: the third switch is the hour's last; then a wanted return is held back
    w.servers["A"].stop()
    w.wait_event("switch", count=2)
    for _ in range(2):
        w.servers["A"].start()
        time.sleep(2)
        w.servers["A"].stop()
        time.sleep(2)
    w.servers["A"].start()
    limit = w.wait_event("limit", timeout=60)
    assert "max_switches_per_hour" in limit["reason"]
    time.sleep(3)
    assert len(w.events("switch")) + len(w.events("return")) == MAX_SWITCHES
    assert w.health()["active"] == ids["B"] and w.direct_packets() == 0

    # 5. every server dead, on_all_down block: TPROXY stays, the client gets nowhere, nothing leaves directly
    w.servers["A"].stop()
    w.servers["B"].stop()
    ev = w.wait_event("all-down")
    assert "clients' proxied traffic stops" in ev["reason"]
    assert w.health()["mode"] == "blocked"
    assert not w.client()[0] and not w.client_wan().startswith("wan")
    assert w.direct_packets() == 0
    w.servers["B"].start()
    w.wait_event("recovery")
    assert w.health()["mode"] == "proxy" and w.client()[0]

    # 6. on_all_down direct: the Xray part goes, the client goes out directly; a server back: the proxy again
    w.edit(lambda x: x["failover"].update(on_all_down="direct"))
    time.sleep(2)  # the daemon reads the edited config in its next round
    w.servers["B"].stop()
    ev = w.wait_event("all-down", count=2)
    assert "clients go direct until a server is back" in ev["reason"]
    xraylab.wait_for(lambda: w.health()["mode"] == "direct", 30)
    assert w.client_wan() == "wan 8.8.8.8:7000" and w.direct_packets() > 0
    assert "XRAY_TPROXY" not in lab._run(["iptables-%s-save" % lab.backend, "-t", "mangle"], ns=lab.router).stdout
    w.servers["A"].start()
    ev = w.wait_event("recovery", count=2)
    assert ev["to"] == ids["A"]  # A is alive, B is not: a switch out of all-down, past the hourly limit
    assert w.health()["mode"] == "proxy"
    assert "XRAY_TPROXY" in lab._run(["iptables-%s-save" % lab.backend, "-t", "mangle"], ns=lab.router).stdout
    direct = w.direct_packets()
    n = len(w.servers["A"].accepted())
    assert w.client()[0] and w.served("A", n)
    assert w.client_wan() == "wan 8.8.8.8:7000" and w.direct_packets() == direct  # answered through A now

    assert w.stop_daemon() == 0
    assert "watch: stopped" in w.output()
    print("watch kernel test (%s): switched %.1fs after the kill (one `xray use` takes %.1fs here); %.0fs in all"
          % (lab.backend, detected, use_s, time.monotonic() - began))
