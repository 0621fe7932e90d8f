"""The web UI on a real kernel: the daemon runs in the lab's router namespace, a client is added
through the API over HTTPS, and a real packet from it then leaves through wgc1; the config file
is exactly what `vpn-director client add` makes of the same file."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from test_ops_kernel import path_of, start
from webtest import Client, ns_connect, write_shadow

pytestmark = pytest.mark.kernel


@pytest.fixture
def lab(make_lab):
    return make_lab(extra_destinations=["46.4.4.4"])


def serve(lab):
    """`vpn-director web` inside the router namespace; its output goes to a file."""
    log = open(os.path.join(lab.workdir, "web.out"), "w")
    argv = ["ip", "netns", "exec", lab.router, sys.executable, "-m", "vpn_director", "-c", lab.config_path, "web"]
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=lab.env())


def wait_ready(lab, proc, cafile):
    for _ in range(300):
        assert proc.poll() is None, open(os.path.join(lab.workdir, "web.out")).read()
        if os.path.exists(cafile):
            try:
                ns_connect(lab.router, ("127.0.0.1", 8444), timeout=1).close()
                return
            except OSError:
                pass
        time.sleep(0.1)
    raise AssertionError("the web UI did not start: %s" % open(os.path.join(lab.workdir, "web.out")).read())


@pytest.mark.parametrize("backend", ["nft"])
def test_client_added_through_the_api_routes_real_packets(lab, tmp_path):
    start(lab, tmp_path)
    raw = json.load(open(lab.config_path))
    raw["webui"] = {"shadow_file": write_shadow(tmp_path / "shadow", "router-pw")}
    with open(lab.config_path, "w") as fh:
        json.dump(raw, fh, indent=1)
    assert path_of(lab, "192.168.50.30") == "wan"

    copy = tmp_path / "copy.json"
    shutil.copyfile(lab.config_path, copy)
    p = lab._run([sys.executable, "-m", "vpn_director", "-c", str(copy), "client", "add", "192.168.50.30",
                  "--via", "wgc1", "--no-apply"], env=lab.env())
    assert p.returncode == 0, p.stderr

    cafile = os.path.join(lab.workdir, "data", "web", "cert.pem")
    proc = serve(lab)
    try:
        wait_ready(lab, proc, cafile)
        c = Client(8444, cafile=cafile, connect=lambda address: ns_connect(lab.router, address))
        assert c.login(password="wrong")[0] == 401
        assert c.login(password="router-pw")[0] == 200
        status, res, _, _ = c.request("POST", "/api/v1/clients", {"address": "192.168.50.30", "via": "wgc1"})
        assert status == 200, res
        assert (res["summary"], res["route"], res["applied"]) == ("client 192.168.50.30: added to wgc1", "wgc1", "tunnel")
        assert res["changes"] and res["version"]
        assert path_of(lab, "192.168.50.30") == "wgc1"  # a real TCP connection and UDP datagram
        assert open(lab.config_path, "rb").read() == copy.read_bytes()

        status, rep, _, _ = c.request("GET", "/api/v1/status")
        assert status == 200 and rep["ok"], rep
        assert "wgc1" in [t["tunnel"] for t in rep["tunnels"]]
        status, tr, _, _ = c.request("POST", "/api/v1/trace", {"source": "192.168.50.30", "destination": "8.8.8.8",
                                                               "live": True})
        assert status == 200 and (tr["route"], tr["tunnel"], tr["differs"]) == ("tunnel", "wgc1", ""), tr
        devices = {d["address"]: d for d in c.request("GET", "/api/v1/devices")[1]["devices"]}
        assert devices["192.168.50.30"]["via"] == "wgc1"

        status, res, _, _ = c.request("POST", "/api/v1/clients/192.168.50.30/move", {"via": "direct"})
        assert status == 200 and res["route"] == "direct"
        assert path_of(lab, "192.168.50.30") == "wan"
        history = c.request("GET", "/api/v1/config/history")[1]
        assert history["versions"][0]["summary"] == "client 192.168.50.30: wgc1 → direct"
        back = [v["version"] for v in history["versions"] if v["summary"] == "client 192.168.50.30: added to wgc1"][-1]
        status, res, _, _ = c.request("POST", "/api/v1/config/rollback", {"version": back})
        assert status == 200, res
        assert path_of(lab, "192.168.50.30") == "wgc1"
        assert open(lab.config_path, "rb").read() == copy.read_bytes()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    out = open(os.path.join(lab.workdir, "web.out")).read()
    assert "certificate SHA-256" in out and "web: stopped" in out, out
