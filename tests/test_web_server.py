"""The web UI's HTTPS server on real sockets over TLS: concurrency, limits, Host allow-list, the
CSRF matrix, headers on every answer, logins, sessions, and that no secret reaches the browser."""

import json
import socket
import ssl
import subprocess
import sys
import threading
import time
import zipfile
import io

import pytest

from vpn_director import config, reports
from vpn_director.web import sessions
from webtest import (COOKIE, PASSWORD, SECRET_PASSWORD, SECRET_SUB, SECRET_UUID, Client, serve, store_servers,
                     write_shadow)

SECURITY_HEADERS = {
    "Content-Security-Policy": "frame-ancestors 'none'", "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY", "Cache-Control": "no-store",
}


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    d = tmp_path_factory.mktemp("web")
    (d / "rt_tables").write_text("111 wgc1\n")
    (d / "leases").write_text("0 aa:bb:cc:dd:ee:01 192.168.50.10 laptop *\n0 aa:bb:cc:dd:ee:02 192.168.50.77 tv *\n")
    (d / "data" / "ipsets").mkdir(parents=True)
    (d / "data" / "ipsets" / "ru.zone").write_text("77.88.0.0/16\n")
    (d / "vpd.log").write_text("2026-01-01 00:00:00,000 INFO [1] client 192.168.50.10: added to xray\n")
    raw = {"data_dir": str(d / "data"),
           "xray": {"clients": ["192.168.50.10"], "servers": ["203.0.113.10"],
                    "subscriptions": [{"id": "main", "url": SECRET_SUB}]},
           "tunnel_director": {"tunnels": {"wgc1": {"clients": ["192.168.50.20"], "exclude": ["ru"]}}},
           "names": {"192.168.50.20": "phone"},
           "advanced": {"state_dir": str(d / "state"), "rt_tables": str(d / "rt_tables"),
                        "leases_file": str(d / "leases"), "log": {"file": str(d / "vpd.log")}}}
    e = serve(d, raw)
    e.server_ids = store_servers(d / "data")
    yield e
    e.stop()


def client(web, login=True):
    c = Client(web.port, cafile=web.cafile)
    if login:
        assert c.login()[0] == 200
    return c


def raw_tls(web, data):
    """Send raw bytes over TLS; the whole answer."""
    ctx = ssl.create_default_context(cafile=web.cafile)
    with socket.create_connection(("127.0.0.1", web.port), timeout=30) as s:
        with ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
            t.sendall(data)
            out = b""
            while True:
                chunk = t.recv(65536)
                if not chunk:
                    return out
                out += chunk


def headers_ok(headers):
    for name, part in SECURITY_HEADERS.items():
        assert part in (headers.get(name) or ""), (name, headers.get(name))
    assert not any(k.lower().startswith("access-control-") for k in headers.keys()), headers


def test_idle_connection_does_not_hold_up_another_client(web):
    idle = [socket.create_connection(("127.0.0.1", web.port)) for _ in range(3)]  # no TLS hello, ever
    try:
        status, obj, _, _ = client(web, login=False).request("GET", "/api/v1/session")
        assert status == 200 and obj["user"] is None
        for s in idle:  # still waiting for their handshakes: the answer did not wait for them
            s.setblocking(False)
            with pytest.raises(BlockingIOError):
                s.recv(1, socket.MSG_PEEK)
    finally:
        for s in idle:
            s.close()


def test_body_over_64_kib_is_refused_unread(web):
    answer = raw_tls(web, b"POST /api/v1/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 65537\r\n\r\n")
    head = answer.split(b"\r\n\r\n")[0].decode()
    assert head.startswith("HTTP/1.1 413") and "Connection: close" in head
    status, _, _, _ = client(web, login=False).request("POST", "/api/v1/login", raw=b"{" + b" " * 60000 + b"}")
    assert status == 401  # a body under the cap is read


@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1.evil.example", "", "192.168.1.1"])
def test_unknown_host_421(web, host):
    c = client(web, login=False)
    for path in ("/", "/api/v1/session", "/static/app.js"):
        status, _, headers, _ = c.request("GET", path, headers={"Host": host})
        assert status == 421, (host, path)
        headers_ok(headers)
    assert c.request("GET", "/", headers={"Host": "localhost:8444"})[0] == 200


def test_csrf_matrix(web):
    c = client(web)
    body = {"source": "192.168.50.10", "destination": "8.8.8.8"}
    origin = "https://127.0.0.1:%d" % web.port
    cases = [
        ({"Content-Type": "text/plain"}, 415),
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
        ({"Origin": "https://evil.example"}, 403),
        ({"Origin": "https://127.0.0.1:8443"}, 403),  # the firmware's own UI: same site, other origin
        ({"Sec-Fetch-Site": "same-site"}, 403),
        ({"Sec-Fetch-Site": "cross-site"}, 403),
        ({"Origin": None}, 403),  # neither Origin nor Sec-Fetch-Site
        ({"X-CSRF-Token": None}, 403),
        ({"X-CSRF-Token": "not-the-token"}, 403),
        ({"Origin": None, "Sec-Fetch-Site": "same-origin"}, 200),
        ({"Origin": origin, "Sec-Fetch-Site": "same-origin"}, 200),
        ({}, 200),
    ]
    for headers, want in cases:
        status, obj, got, _ = c.request("POST", "/api/v1/trace", body, headers=headers)
        assert status == want, (headers, status, obj)
        assert "error" in obj if want != 200 else obj["route"] == "xray"
        headers_ok(got)
    stranger = client(web, login=False)
    assert stranger.request("POST", "/api/v1/trace", body)[0] == 401
    assert c.request("POST", "/api/v1/logout", headers={"X-CSRF-Token": None})[0] == 403
    assert c.request("POST", "/api/v1/logout")[0] == 200


def test_headers_on_every_answer(web):
    c = client(web)
    seen = []
    for method, path, body in (("GET", "/", None), ("GET", "/static/app.js", None), ("GET", "/static/style.css", None),
                               ("GET", "/static/icon.svg", None), ("GET", "/static/nope.js", None),
                               ("GET", "/static/../api.py", None), ("GET", "/api/v1/nope", None),
                               ("GET", "/api/v1/devices", None), ("POST", "/api/v1/devices", {}),
                               ("DELETE", "/api/v1/session", None), ("POST", "/", {}),
                               ("POST", "/api/v1/clients", {"address": "no such device", "via": "xray"})):
        status, _, headers, _ = c.request(method, path, body)
        seen.append(status)
        headers_ok(headers)
    assert seen == [200, 200, 200, 200, 404, 404, 404, 200, 405, 405, 405, 400]
    for raw in (b"GARBAGE\r\n\r\n", b"OPTIONS / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"):
        head = raw_tls(web, raw).split(b"\r\n\r\n")[0].decode()
        assert head.split()[1] in ("400", "411", "501"), head
        got = dict(line.split(": ", 1) for line in head.splitlines()[1:])
        headers_ok(got)
    status, _, headers, text = c.request("GET", "/static/app.js")
    assert headers["Content-Type"].startswith("text/javascript") and b"import" in text


def test_login_rate_limit(web):
    c = client(web, login=False)
    for _ in range(5):
        assert c.login(password="wrong")[0] == 401
    status, obj, headers, _ = c.request("POST", "/api/v1/login", {"username": "admin", "password": PASSWORD})
    assert status == 429 and int(headers["Retry-After"]) > 0 and "try again" in obj["error"]
    headers_ok(headers)
    web.app.limiter.succeeded("127.0.0.1")
    assert c.login()[0] == 200


def test_parallel_wrong_passwords_cannot_pass_the_rate_limit(web, monkeypatch):
    """32 logins at once: the attempts are counted before the (slow) check, so only 5 passwords
    are ever checked in the window and every other attempt gets 429 unchecked."""
    from vpn_director.web import crypt
    checked, lock = [], threading.Lock()
    real = crypt.verify

    def slow_verify(password, stored):
        with lock:
            checked.append(password)
        time.sleep(0.2)  # every request is past the rate limit check before the first check ends
        return real(password, stored)
    monkeypatch.setattr(crypt, "verify", slow_verify)
    clients = [client(web, login=False) for _ in range(32)]
    start = threading.Barrier(len(clients))
    answers = []

    def attempt(c, i):
        start.wait()
        answers.append(c.request("POST", "/api/v1/login", {"username": "admin", "password": "guess %d" % i})[0])
    threads = [threading.Thread(target=attempt, args=(c, i)) for i, c in enumerate(clients)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(checked) == 5 and sorted(answers) == [401] * 5 + [429] * 27
        assert client(web, login=False).login()[0] == 429  # the right password too, until the window ends
        assert len(checked) == 5
    finally:
        web.app.limiter.succeeded("127.0.0.1")


def test_unknown_and_locked_users_answer_like_a_wrong_password(web):
    answers = {json.dumps(client(web, login=False).login(user, pw)) for user, pw in
               (("admin", "wrong"), ("locked", PASSWORD), ("ghost", PASSWORD), ("root", ""))}
    web.app.limiter.succeeded("127.0.0.1")
    assert answers == {json.dumps([401, {"error": "wrong user name or password"}])}


def test_session_cookie_and_logout(web):
    c = Client(web.port, cafile=web.cafile)
    status, obj, headers, _ = c.request("POST", "/api/v1/login", {"username": "admin", "password": PASSWORD})
    cookie = headers["Set-Cookie"]
    assert status == 200 and cookie.startswith(COOKIE + "=")
    for attr in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/"):
        assert attr in cookie
    assert c.cookie not in json.dumps(obj)  # the session id only ever travels in the cookie
    c.csrf = obj["csrf"]
    assert c.request("GET", "/api/v1/session")[1]["user"] == "admin"
    old = c.cookie
    status, _, headers, _ = c.request("POST", "/api/v1/logout")
    assert status == 200 and "Max-Age=0" in headers["Set-Cookie"]
    c.cookie = old  # replaying the old cookie
    assert c.request("GET", "/api/v1/session")[1]["user"] is None
    assert c.request("GET", "/api/v1/devices")[0] == 401


def test_password_change_ends_the_session(web):
    c = client(web)
    assert c.request("GET", "/api/v1/devices")[0] == 200
    before = web.shadow.read_text()
    try:
        write_shadow(web.shadow, "a new password")
        assert c.request("GET", "/api/v1/devices")[0] == 401
        assert c.login(password="a new password")[0] == 200
    finally:
        web.shadow.write_text(before)
    assert c.request("GET", "/api/v1/devices")[0] == 401


def test_no_secret_reaches_the_browser(web, monkeypatch):
    from vpn_director.xray import prober
    c = client(web)
    texts = []
    for path in ("/api/v1/servers", "/api/v1/devices", "/api/v1/clients", "/api/v1/exclusions", "/api/v1/session",
                 "/api/v1/config/history", "/api/v1/logs?lines=50", "/", "/api/v1/status", "/api/v1/subscriptions"):
        status, _, _, text = c.request("GET", path)
        assert status == 200, (path, text)
        texts.append(text.decode())
    servers = json.loads(texts[0])["servers"]
    assert [s["id"] for s in servers] == web.server_ids and servers[1]["name"] == "Second"
    assert "objects" in json.loads(texts[8])
    assert [(s["id"], s["url"]) for s in json.loads(texts[9])["subscriptions"]] == [
        ("main", "https://panel.example.net/…")]
    # a server test's job, polled to its end: results name the servers, never their credentials
    monkeypatch.setattr(prober, "test", lambda cfg, chosen, timeout_s=10.0: {
        s["id"]: {"ok": s["name"] == "First", "latency_ms": 42 if s["name"] == "First" else None,
                  "reason": "" if s["name"] == "First" else "no answer"} for s in chosen})
    status, job, _, text = c.request("POST", "/api/v1/servers/test", {"all": True})
    texts.append(text.decode())
    while job["state"] == "running":
        time.sleep(0.05)
        status, job, _, text = c.request("GET", "/api/v1/jobs/" + job["id"])
        texts.append(text.decode())
    assert [(r["name"], r["ok"]) for r in job["result"]["results"]] == [("First", True), ("Second", False)]
    # the subscription endpoints' refusals do not say the address back
    for body in ({"id": "main", "url": SECRET_SUB}, {"id": "Main!", "url": SECRET_SUB},
                 {"id": "other", "url": "ftp://" + SECRET_SUB[8:]}):
        status, _, _, text = c.request("POST", "/api/v1/subscriptions", body)
        assert status == 400, text
        texts.append(text.decode())
    for secret in (SECRET_UUID, SECRET_PASSWORD, SECRET_SUB, "SubscriptionToken987", c.cookie):
        assert not any(secret in t for t in texts), secret


def test_reads_match_the_command_line_reports(web):
    c = client(web)
    cfg = config.load(web.path)
    status, got, _, _ = c.request("POST", "/api/v1/trace", {"source": "192.168.50.20", "destination": "77.88.8.8"})
    assert status == 200 and got.pop("src_name") == "phone" and got.pop("live") is False
    assert got.pop("source") == "192.168.50.20"
    assert got == reports.trace_report(cfg, "192.168.50.20", "77.88.8.8")
    # a device name or MAC is found as everywhere else (ops.names.source: config names, DHCP leases)
    for token, addr, name in (("phone", "192.168.50.20", "phone"), ("AA:BB:CC:DD:EE:02", "192.168.50.77", "tv"),
                              ("laptop", "192.168.50.10", "laptop")):
        status, obj, _, _ = c.request("POST", "/api/v1/trace", {"source": token, "destination": "77.88.8.8"})
        assert status == 200 and (obj["source"], obj["src_name"]) == (addr, name), obj
    for token, message in (("192.168.50.0/24", "is a subnet: give one device"), ("kitchen", "no device of that")):
        status, obj, _, _ = c.request("POST", "/api/v1/trace", {"source": token, "destination": "77.88.8.8"})
        assert status == 400 and message in obj["error"], obj
    status, obj, _, _ = c.request("POST", "/api/v1/trace", {"source": "192.168.50.20", "destination": "nowhere"})
    assert status == 400 and obj["error"] == "DST 'nowhere' is not an IPv4 address"
    devices = {d["address"]: d for d in c.request("GET", "/api/v1/devices")[1]["devices"]}
    assert (devices["192.168.50.10"]["via"], devices["192.168.50.10"]["name"], devices["192.168.50.10"]["mac"]) == (
        "xray", "laptop", "aa:bb:cc:dd:ee:01")
    assert (devices["192.168.50.20"]["via"], devices["192.168.50.20"]["name"]) == ("wgc1", "phone")
    assert (devices["192.168.50.77"]["via"], devices["192.168.50.77"]["client"]) == ("direct", False)
    ex = c.request("GET", "/api/v1/exclusions")[1]
    assert ex["xray"]["countries"] == ["ru"] and ex["tunnels"] == [
        {"name": "wgc1", "countries": ["ru"], "sets": []}]
    logs = c.request("GET", "/api/v1/logs?lines=5")[1]
    assert logs["lines"] == ["2026-01-01 00:00:00,000 INFO [1] client 192.168.50.10: added to xray"]
    assert c.request("GET", "/api/v1/logs?lines=x")[0] == 400


def test_bad_edits_answer_400_and_change_nothing(web):
    c = client(web)
    before = open(web.path, "rb").read()
    for body, message in (({"address": "192.168.50.30", "via": "wgc9"}, "unknown tunnel 'wgc9'"),
                          ({"address": "no such device", "via": "xray"}, "no device of that name"),
                          ({"address": "192.168.50.10", "via": "wgc1"}, "already listed in xray"),
                          ({"via": "xray"}, "address: give a short text")):
        status, obj, _, _ = c.request("POST", "/api/v1/clients", body)
        assert status == 400 and message in obj["error"], obj
    status, obj, _, _ = c.request("POST", "/api/v1/exclusions", {"target": "nowhere", "via": "xray"})
    assert status == 400 and "two-letter country code" in obj["error"]
    assert c.request("POST", "/api/v1/config/rollback", {"version": "1"})[0] == 400
    assert open(web.path, "rb").read() == before


def test_sessions_expire_idle_and_absolute():
    now = [0.0]
    s = sessions.Sessions(clock=lambda: now[0])
    a = s.create("admin", "fp")
    for _ in range(30):  # used every 25 minutes: alive until 12 h after login
        now[0] += 25 * 60
        if now[0] > sessions.ABSOLUTE:
            assert s.get(a.id, lambda u: "fp") is None
            break
        assert s.get(a.id, lambda u: "fp") is a
    b = s.create("admin", "fp")
    now[0] += sessions.IDLE + 1
    assert s.get(b.id, lambda u: "fp") is None
    c = s.create("admin", "fp")
    assert s.get(c.id, lambda u: "other") is None and s.get(c.id, lambda u: "fp") is None


def test_rate_limit_window():
    now = [0.0]
    lim = sessions.Limiter(clock=lambda: now[0])
    for _ in range(5):
        assert lim.retry_after("10.0.0.1") == 0
        assert lim.reserve("10.0.0.1") == 0  # the attempt's slot is taken before its check
        now[0] += 10
    assert lim.retry_after("10.0.0.1") == 300 - 50 and lim.retry_after("10.0.0.2") == 0
    assert lim.reserve("10.0.0.1") == 300 - 50 and lim.retry_after("10.0.0.1") == 300 - 50  # refused: no slot
    now[0] += 250
    assert lim.retry_after("10.0.0.1") == 0
    assert lim.reserve("10.0.0.1") == 0
    lim.succeeded("10.0.0.1")  # a success frees them all
    assert all(lim.reserve("10.0.0.1") == 0 for _ in range(5)) and lim.reserve("10.0.0.1") > 0


def test_static_files_are_served_from_the_pyz(tmp_path):
    from vpn_director import pyz
    data = pyz.build()
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    for f in ("index.html", "app.js", "api.js", "dom.js", "devices.js", "pages.js", "servers.js", "style.css", "icon.svg"):
        assert "vpn_director/web/static/" + f in names
    archive = tmp_path / "vpd.pyz"
    archive.write_bytes(data)
    code = "import sys; sys.path.insert(0, %r); from vpn_director.web import server; " \
           "print(len(server.static_file('app.js')), server.static_file('../api.py'))" % str(archive)
    out = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, universal_newlines=True, check=True,
                         cwd=str(tmp_path)).stdout.split()
    assert int(out[0]) > 500 and out[1] == "None"
