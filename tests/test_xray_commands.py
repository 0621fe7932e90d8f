"""The `xray` commands end to end through the command line, against a local subscription server:
counts per skip reason, a refresh that fails or returns nothing keeps the previous list, the
subscription address never printed, `--due`, remove, import from a file and stdin."""

import base64
import http.server
import io
import json
import os
import threading

import pytest

from vpn_director import cli
from vpn_director.xray import Skip
from vpn_director.xray import links as xlinks

DATA = os.path.join(os.path.dirname(__file__), "data", "xray_links")
TOKEN = "s3cr3t-t0ken-4242"
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the xray commands that change things need root")


class Panel:
    """A subscription server on 127.0.0.1: answers what `body`/`status` say, counts requests."""

    def __init__(self):
        self.body, self.status, self.hits = b"", 200, 0
        panel = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                panel.hits += 1
                self.send_response(panel.status)
                self.send_header("subscription-userinfo", "upload=1; download=2; total=100; expire=2000000000")
                self.end_headers()
                self.wfile.write(panel.body)

            def log_message(self, *a):
                pass
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = "http://127.0.0.1:%d/sub/%s?token=%s" % (self.server.server_port, TOKEN, TOKEN)


@pytest.fixture
def panel():
    p = Panel()
    yield p
    p.server.shutdown()


@pytest.fixture
def vpd(tmp_path, capsys, monkeypatch):
    (tmp_path / "rt").write_text("")
    path = tmp_path / "vpn-director.json"
    path.write_text(json.dumps({"data_dir": str(tmp_path / "data"),
                                "advanced": {"state_dir": str(tmp_path / "state"), "rt_tables": str(tmp_path / "rt"),
                                             "lock_timeout": 5, "log": {"syslog": False}}}, indent=2))

    def run(*args, stdin=None):
        if stdin is not None:
            monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = cli.main(["-c", str(path)] + list(args))
        out = capsys.readouterr()
        return code, out.out, out.err
    run.path = path
    run.data = tmp_path / "data"
    return run


def servers(vpd):
    code, out, _ = vpd("xray", "servers", "--json")
    assert code == 0
    return json.loads(out)["servers"]


def test_subscription_of_fifty_with_broken_entries(vpd, panel):
    sub50 = open(os.path.join(DATA, "sub50.txt"), "rb").read()
    panel.body = base64.b64encode(sub50)
    code, out, err = vpd("xray", "sub", "add", "main", panel.url)
    assert code == 0, err
    assert ("subscription main: stored 30, unsupported 4, invalid 5, insecure 3, plaintext 2, removed-transport 3, "
            "placeholder 3; 30 new, 0 gone") in out
    first = servers(vpd)
    assert len(first) == 30 and {s["source"] for s in first} == {"sub:main"}
    assert all("outbound" not in s for s in first)  # no credentials in the listing
    code, out, err = vpd("xray", "sub", "list", "--json")
    row = json.loads(out)["subscriptions"][0]
    assert row["servers"] == 30 and row["userinfo"]["total"] == 100 and TOKEN not in out

    # failures keep the previous list: an HTTP error, an empty body, a web page, nothing usable
    for status, body in ((500, b"oops"), (200, b""), (200, b"<!DOCTYPE html><html>login</html>"),
                         (200, b"vless://broken\nss://nothing\n")):
        panel.status, panel.body = status, body
        code, out, err = vpd("xray", "sub", "update")
        assert code == 1 and "its previous list is kept" in err, (status, body, err)
        assert TOKEN not in out + err
        assert [s["id"] for s in servers(vpd)] == [s["id"] for s in first]
    code, out, _ = vpd("xray", "sub", "list")
    assert "last error" in out and TOKEN not in out

    # a refresh with fewer servers: the ones gone are removed, the rest keep their ids
    panel.status = 200
    lines = [ln for ln in sub50.decode("utf-8-sig").splitlines() if "://" in ln]
    panel.body = "\n".join(lines[:10]).encode()
    code, out, err = vpd("xray", "sub", "update", "main")
    assert code == 0, err
    now = servers(vpd)
    assert 0 < len(now) < 30 and {s["id"] for s in now} <= {s["id"] for s in first}

    # --due: just updated, so nothing is fetched
    hits = panel.hits
    assert vpd("xray", "sub", "update", "--due")[0] == 0 and panel.hits == hits

    store_text = (vpd.data / "servers.json").read_text()
    assert TOKEN not in store_text and oct(os.stat(str(vpd.data / "servers.json")).st_mode & 0o777) == "0o600"
    code, out, _ = vpd("xray", "sub", "remove", "main")
    assert code == 0 and "server(s) forgotten" in out and servers(vpd) == []
    assert "subscriptions" not in json.loads(vpd.path.read_text())["xray"] or \
        json.loads(vpd.path.read_text())["xray"]["subscriptions"] == []


def test_import_from_a_link_a_file_and_stdin(vpd, tmp_path):
    links = []
    for ln in open(os.path.join(DATA, "sub50.txt"), encoding="utf-8-sig").read().splitlines():
        try:
            xlinks.parse(ln)
            links.append(ln)
        except Skip:
            continue
    code, out, _ = vpd("xray", "import", links[0])
    assert code == 0 and "stored 1" in out and "1 new" in out
    f = tmp_path / "links.txt"
    f.write_text("\n".join(links[:5]) + "\n")
    code, out, _ = vpd("xray", "import", str(f))
    assert code == 0 and "1 already stored" in out
    code, out, _ = vpd("xray", "import", "-", stdin="\n".join(links[5:8]))
    assert code == 0
    assert len(servers(vpd)) == len({s["id"] for s in servers(vpd)})
    code, _, err = vpd("xray", "import", "https://panel.example/sub/%s" % TOKEN)
    assert code == 2 and "xray sub add" in err and TOKEN not in err
    code, out, err = vpd("xray", "import", "-", stdin="vless://nothing-here\n")
    assert code == 1 and "invalid 1" in out
    code, _, err = vpd("xray", "use", "nope")
    assert code == 2 and "no server 'nope'" in err
