"""The web UI's edits that need no kernel: importing share links, subscriptions (add, list, update,
remove) against a local subscription server, and "route this device via..." — each through the
same functions as the command line (xray.actions, ops.clients.route_device). Xray itself is not
needed: no device uses it here, so a server change applies nothing."""

import base64
import json
import os
import time

import pytest

from test_xray_commands import DATA, TOKEN, Panel
from vpn_director import config
from vpn_director.ops import history, txn
from vpn_director.xray import Skip, links as xlinks
from webtest import Client, serve

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the web UI's Xray edits need root, as the CLI's do")


@pytest.fixture
def web(tmp_path):
    (tmp_path / "rt_tables").write_text("111 wgc1\n")
    (tmp_path / "leases").write_text("0 aa:bb:cc:dd:ee:24 192.168.50.24 tv *\n")
    raw = {"data_dir": str(tmp_path / "data"),
           "tunnel_director": {"tunnels": {"wgc1": {"clients": ["192.168.50.0/24"]}}},
           "advanced": {"state_dir": str(tmp_path / "state"), "rt_tables": str(tmp_path / "rt_tables"),
                        "leases_file": str(tmp_path / "leases"), "lock_timeout": 5, "log": {"syslog": False}}}
    e = serve(tmp_path, raw)
    e.client = Client(e.port, cafile=e.cafile)
    assert e.client.login()[0] == 200
    e.texts = []  # every answer body, searched for the subscription token at the end
    yield e
    e.stop()


@pytest.fixture
def panel():
    p = Panel()
    yield p
    p.server.shutdown()


def call(web, method, path, body=None):
    status, obj, _, text = web.client.request(method, "/api/v1" + path, body)
    web.texts.append(text.decode())
    return status, obj


def finished(web, job):
    """Poll a job until it ends."""
    deadline = time.time() + 60
    while job["state"] == "running" and time.time() < deadline:
        time.sleep(0.1)
        status, job = call(web, "GET", "/jobs/%s" % job["id"])
        assert status == 200
    return job


def usable_links():
    out = []
    for ln in open(os.path.join(DATA, "sub50.txt"), encoding="utf-8-sig").read().splitlines():
        try:
            xlinks.parse(ln)
            out.append(ln)
        except Skip:
            continue
    return out


def test_import_share_links(web):
    links = usable_links()
    status, job = call(web, "POST", "/servers/import", {"text": "\n".join(links[:5] + ["vless://broken"])})
    assert status == 200 and job["state"] in ("running", "done")
    result = finished(web, job)["result"]
    assert result == {"counts": "stored 5, invalid 1", "stored": 5, "added": 5, "known": 0}
    status, obj = call(web, "GET", "/servers")
    assert status == 200 and len(obj["servers"]) == 5 and all("outbound" not in s for s in obj["servers"])
    result = finished(web, call(web, "POST", "/servers/import", {"text": links[0]})[1])["result"]
    assert (result["added"], result["known"]) == (0, 1)
    status, obj = call(web, "POST", "/servers/import", {"text": "https://panel.example/sub/%s" % TOKEN})
    assert status == 400 and "is a subscription address" in obj["error"]
    for body in ({"text": "  "}, {"text": 5}, {}):
        assert call(web, "POST", "/servers/import", body)[0] == 400
    assert not any(TOKEN in t for t in web.texts)


def test_subscriptions(web, panel):
    panel.body = base64.b64encode(open(os.path.join(DATA, "sub50.txt"), "rb").read())
    status, obj = call(web, "POST", "/subscriptions", {"id": "main", "url": panel.url, "interval_h": 6})
    assert status == 200 and obj["summary"] == "xray: subscription main added" and obj["changed"]
    result = finished(web, obj["job"])
    assert result["state"] == "done" and result["result"]["added"] == 30, result
    assert result["result"]["counts"].startswith("stored 30, unsupported 4")
    assert json.load(open(web.path))["xray"]["subscriptions"] == [{"id": "main", "url": panel.url, "interval_h": 6}]
    assert history.versions(config.load(web.path).data_dir)[-1].summary == "xray: subscription main added"

    status, obj = call(web, "GET", "/subscriptions")
    port = panel.server.server_port
    assert status == 200 and obj["subscriptions"] == [{
        "id": "main", "url": "http://127.0.0.1:%d/…" % port, "enabled": True, "interval_h": 6, "servers": 30,
        "updated": obj["subscriptions"][0]["updated"], "error": "",
        "userinfo": {"upload": 1, "download": 2, "total": 100, "expire": 2000000000}}]
    assert obj["subscriptions"][0]["updated"] > 0
    assert len(call(web, "GET", "/servers")[1]["servers"]) == 30

    # bad input: 400, nothing changed, and the address is never said back
    before = open(web.path, "rb").read()
    for body, message in (({"id": "main", "url": panel.url}, "subscription 'main' exists"),
                          ({"id": "Bad Id", "url": panel.url}, "is not an id"),
                          ({"id": "other", "url": "ftp://x/%s" % TOKEN}, "invalid"),
                          ({"id": "other", "url": panel.url, "interval_h": "6"}, "interval_h"),
                          ({"id": "other", "url": panel.url, "interval_h": 0}, "invalid"),
                          ({"id": "other"}, "url: give")):
        status, obj = call(web, "POST", "/subscriptions", body)
        assert status == 400 and message in json.dumps(obj), (body, obj)
    assert open(web.path, "rb").read() == before

    # a failed refresh keeps the list; its error names the host only
    panel.status = 500
    status, job = call(web, "POST", "/subscriptions/main/update", {})
    job = finished(web, job)
    assert job["state"] == "failed" and "its previous list is kept" in job["result"]["error"]
    assert call(web, "GET", "/subscriptions")[1]["subscriptions"][0]["error"].endswith("answered HTTP 500")
    panel.status = 200
    job = finished(web, call(web, "POST", "/subscriptions/main/update", {})[1])
    assert job["state"] == "done" and (job["result"]["added"], job["result"]["removed"]) == (0, 0)
    status, obj = call(web, "POST", "/subscriptions/nope/update", {})
    assert status == 400 and "no subscription 'nope'" in obj["error"]

    status, obj = call(web, "DELETE", "/subscriptions", {"id": "main"})
    assert status == 200 and obj["summary"] == "xray: subscription main removed" and obj["forgotten"] == 30
    assert call(web, "GET", "/servers")[1]["servers"] == [] and call(web, "GET", "/subscriptions")[1] == {
        "subscriptions": []}
    assert call(web, "DELETE", "/subscriptions", {"id": "main"})[0] == 400
    assert not any(TOKEN in t for t in web.texts)


def test_route_a_device_decided_by_the_operations_layer(web, monkeypatch):
    real = txn.run
    monkeypatch.setattr(txn, "run", lambda path, change, **kw: real(path, change, **dict(kw, apply=False)))
    status, obj = call(web, "POST", "/devices/tv/route", {"via": "direct"})  # inside wgc1's /24: a pause
    assert status == 200, obj
    assert obj["summary"] == "client 192.168.50.24 (tv): paused (it is inside 192.168.50.0/24 of wgc1)"
    assert (obj["address"], obj["route"]) == ("192.168.50.24", "direct")
    device = next(d for d in call(web, "GET", "/devices")[1]["devices"] if d["address"] == "192.168.50.24")
    assert (device["via"], device["paused"], device["mac"]) == ("direct", True, "aa:bb:cc:dd:ee:24")
    status, obj = call(web, "POST", "/devices/192.168.50.24/route", {"via": "direct"})
    assert status == 200 and not obj["changed"] and "already goes direct" in obj["notes"][-1]
    status, obj = call(web, "POST", "/devices/192.168.50.30/route", {"via": "xray"})
    assert status == 200 and obj["summary"] == "client 192.168.50.30: added to xray"
    assert call(web, "POST", "/devices/192.168.50.30/route", {"via": "wgc9"})[0] == 400
