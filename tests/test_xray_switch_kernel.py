"""`xray import`, `xray use`, `xray status` with a real Xray-core, in a namespace of the test's own.

The router side's Xray is started and restarted by vpn-director itself (service "managed"), the
servers are real Shadowsocks-2022 servers (another Xray), and the probe target is a far HTTP host
that only a proxy server reaches through its freedom outbound."""

import json
import os
import urllib.parse

import pytest

from netns import Netns
from vpn_director.xray import embedded
from xrayproc import FarHost, ss_key, ss_server, vpd_in, xray_command

pytestmark = [pytest.mark.kernel,
              pytest.mark.skipif(not embedded.available(), reason="the Xray-core package is not installed")]

SERVER_ADDR = "10.77.0.1"  # the proxy servers' address, on the namespace's loopback
TPROXY, SOCKS = 23451, 23452


def ss_link(port, key, name):
    return "ss://2022-blake3-aes-128-gcm:%s@%s:%d#%s" % (urllib.parse.quote(key, safe=""), SERVER_ADDR, port,
                                                         urllib.parse.quote(name))


@pytest.fixture(scope="module")
def world(request, tmp_path_factory):
    """One namespace with two proxy servers (A, B), a far host, and a config whose Xray we manage."""
    tmp = tmp_path_factory.mktemp("xrayswitch")
    ns = Netns(request.addfinalizer, prefix="vxs")
    ns.sh("ip addr add %s/32 dev lo" % SERVER_ADDR)
    far = FarHost(request.addfinalizer, ns, tmp)
    keys = {"a": ss_key(1), "b": ss_key(2)}
    server = ss_server(request.addfinalizer, ns, tmp, SERVER_ADDR, [("in-a", 24001, keys["a"]), ("in-b", 24002, keys["b"])])
    links = {"a": ss_link(24001, keys["a"], "Server A"), "b": ss_link(24002, keys["b"], "Server B"),
             "dead": ss_link(24009, ss_key(3), "Nobody home")}
    raw = {"data_dir": str(tmp / "data"),
           "advanced": {"state_dir": str(tmp / "state"), "lock_timeout": 30,
                        "rt_tables": str(tmp / "rt_tables"),
                        "xray": {"tproxy_port": TPROXY, "socks_port": SOCKS, "service": "managed",
                                 "binary": xray_command(tmp), "probe_url": "http://%s/generate_204" % far.address}}}
    (tmp / "rt_tables").write_text("")
    path = tmp / "vpn-director.json"
    path.write_text(json.dumps(raw, indent=2) + "\n")

    class World:
        pass
    w = World()
    w.ns, w.far, w.server, w.links, w.config, w.tmp = ns, far, server, links, str(path), tmp

    w.vpd = vpd_in(ns, w.config)
    request.addfinalizer(lambda: kill_in(ns))  # the Xray that vpn-director started (managed)
    return w


def kill_in(ns):
    """Kill the processes of this namespace only (pkill would reach every namespace's)."""
    for pid in ns.run(["ip", "netns", "pids", ns.name], check=False).stdout.split():
        try:
            os.kill(int(pid), 9)
        except (OSError, ValueError):
            pass


def xray_file(w):
    return w.tmp / "data" / "xray" / "config.json"


def servers(w):
    return json.loads(w.vpd("xray", "servers", "--json", check=0).stdout)["servers"]


def test_import_use_switch_and_refusals(world):
    w = world
    out = w.vpd("xray", "import", "-", input="\n".join(w.links.values()) + "\nvless://broken\n", check=0).stdout
    assert "stored 3" in out and "invalid 1" in out and "3 new" in out
    rows = servers(w)
    assert [r["name"] for r in rows] == ["Server A", "Server B", "Nobody home"]
    assert all(r["ips"] == [SERVER_ADDR] and r["label"].startswith("ss") for r in rows)
    assert oct(os.stat(str(w.tmp / "data" / "servers.json")).st_mode & 0o777) == "0o600"

    # use A: the far host is reached through server A's inbound
    seen = len(w.far.seen())
    out = w.vpd("xray", "use", "Server A", check=0).stdout
    assert "now using 'Server A'" in out
    assert len(w.far.seen()) == seen + 1
    assert any("in-a" in ln for ln in w.server.accepted())
    assert json.loads(open(w.config).read())["xray"]["active_server"] == rows[0]["id"]
    st = json.loads(w.vpd("xray", "status", "--json", check=0).stdout)
    assert st["running"] and st["config"] == "matches" and st["version"].startswith("26.")
    assert st["active"]["id"] == rows[0]["id"] and all(st["listening"].values())
    assert "password" not in json.dumps(st) and "2022-blake3" not in json.dumps(st)

    # use B by number: B receives the probe
    b_before = sum("in-b" in ln for ln in w.server.accepted())
    w.vpd("xray", "use", "#2", check=0)
    assert sum("in-b" in ln for ln in w.server.accepted()) == b_before + 1
    good = xray_file(w).read_bytes()
    assert rows[1]["id"] == json.loads(open(w.config).read())["xray"]["active_server"]
    assert sorted(os.listdir(str(xray_file(w).parent))) == ["config.json", "config.json.prev"]

    # a server that does not answer: Xray starts, the probe fails, B's config comes back byte for byte
    p = w.vpd("xray", "use", rows[2]["id"], check=1)
    assert "the probe through the proxy failed" in p.stderr and "previous config is back" in p.stderr
    assert xray_file(w).read_bytes() == good
    assert json.loads(open(w.config).read())["xray"]["active_server"] == rows[1]["id"]
    w.vpd("xray", "restart", check=0)  # B serves again
    dead = [r for r in servers(w) if r["id"] == rows[2]["id"]][0]
    assert dead["error"] and "probe" in dead["error"]

    # a config the real Xray refuses (a cipher Xray does not have): nothing changes, Xray keeps running
    store_path = w.tmp / "data" / "servers.json"
    data = json.loads(store_path.read_text())
    data["servers"][0]["outbound"]["settings"]["servers"][0]["method"] = "rc4-md5"
    store_path.write_text(json.dumps(data))
    pid_before = (w.tmp / "state" / "xray.pid").read_text()
    p = w.vpd("xray", "use", "#1", check=1)
    assert "Xray refused the config" in p.stderr and "nothing changed" in p.stderr
    assert xray_file(w).read_bytes() == good and (w.tmp / "state" / "xray.pid").read_text() == pid_before
    assert sorted(os.listdir(str(xray_file(w).parent))) == ["config.json", "config.json.prev"]
    w.vpd("xray", "status", check=0)
