"""Helpers of the web UI tests: a test config with a password file and a stored server, an HTTPS
client that keeps the session cookie and CSRF token, and connections into a network namespace."""

import ctypes
import http.client
import json
import os
import socket
import ssl
import subprocess
import threading

from relay import splice

PASSWORD = "correct horse"
SECRET_UUID = "0b1e7d6c-1111-4222-8333-944455556666"
SECRET_PASSWORD = "TrojanSecretPw123"
SECRET_SUB = "https://panel.example.net/sub/SubscriptionToken987"
COOKIE = "__Host-vd_session"


def openssl_hash(password, scheme="-6"):
    return subprocess.run(["openssl", "passwd", scheme, "-stdin"], input=password + "\n", stdout=subprocess.PIPE,
                          check=True, universal_newlines=True).stdout.strip()


def write_shadow(path, password=PASSWORD, user="admin", scheme="-6"):
    lines = ["root:*:19000:0:99999:7:::", "%s:%s:19000:0:99999:7:::" % (user, openssl_hash(password, scheme)),
             "locked:!%s:19000::::::" % openssl_hash(password), "nobody:*:19000::::::"]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def store_servers(data_dir):
    """Two stored servers whose credentials must never reach the browser."""
    from vpn_director.xray import links, store
    servers = [links.parse("vless://%s@198.51.100.20:443?security=tls&sni=example.com&type=tcp#First" % SECRET_UUID),
               links.parse("trojan://%s@198.51.100.21:443?security=tls&sni=example.org#Second" % SECRET_PASSWORD)]
    st = store.Store({"servers": [dict(s, source="manual", ips=[s["address"]]) for s in servers]})
    store.save(str(data_dir), st)
    return [s["id"] for s in servers]


class Env:
    pass


def serve(d, raw):
    """The web UI on 127.0.0.1 over TLS for the config `raw` (written to d/vpn-director.json with a
    password file d/shadow): an Env with dir, path, shadow, cafile, app, port and stop()."""
    from vpn_director import config
    from vpn_director.web import api, cert, server
    raw = dict(raw, webui=dict(raw.get("webui") or {}, listen=["127.0.0.1"], shadow_file=write_shadow(d / "shadow")))
    path = d / "vpn-director.json"
    path.write_text(json.dumps(raw, indent=1))
    e = Env()
    e.dir, e.path, e.shadow = d, str(path), d / "shadow"
    cfg = config.load(e.path)
    e.cafile, key = cfg.webui.cert_path(cfg.data_dir), cfg.webui.key_path(cfg.data_dir)
    assert cert.ensure(e.cafile, key, ["127.0.0.1"], ["localhost"])
    e.app = api.App(e.path, server.host_names(["127.0.0.1"]), cfg.webui.shadow_file)
    servers = server.start(e.app, ["127.0.0.1"], 0, cert.context(e.cafile, key))
    e.port = servers[0].server_address[1]
    e.stop = lambda: server.stop(servers)
    return e


class Client:
    """HTTPS to the web UI, trusting its certificate, as a same-origin page would call it."""

    def __init__(self, port, cafile=None, host="127.0.0.1", connect=None):
        self.port, self.host, self.connect = port, host, connect
        self.ctx = ssl.create_default_context(cafile=cafile) if cafile else ssl._create_unverified_context()
        self.cookie = None
        self.csrf = None

    def conn(self):
        c = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=30)
        if self.connect:
            raw = self.connect((self.host, self.port))
            c.sock = self.ctx.wrap_socket(raw, server_hostname=self.host)
        return c

    def request(self, method, path, body=None, headers=None, raw=None):
        h = {"Origin": "https://%s:%d" % (self.host, self.port)}
        if self.cookie:
            h["Cookie"] = "%s=%s" % (COOKIE, self.cookie)
        if method != "GET":
            h["Content-Type"] = "application/json"
            if self.csrf:
                h["X-CSRF-Token"] = self.csrf
        h.update(headers or {})
        h = {k: v for k, v in h.items() if v is not None}
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"{}" if method != "GET" else None)
        c = self.conn()
        try:
            c.request(method, path, body=data, headers=h)
            r = c.getresponse()
            text = r.read()
        finally:
            c.close()
        for value in r.headers.get_all("Set-Cookie") or []:
            if value.startswith(COOKIE + "="):
                self.cookie = value.split(";")[0].split("=", 1)[1] or None
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        return r.status, obj, r.headers, text

    def login(self, user="admin", password=PASSWORD):
        status, obj, _, _ = self.request("POST", "/api/v1/login", {"username": user, "password": password})
        if status == 200:
            self.csrf = obj["csrf"]
        return status, obj


# --- a namespace's sockets from this process ----------------------------------------------------

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def ns_connect(ns_name, address, timeout=10):
    """A TCP connection made inside network namespace `ns_name` (the socket keeps its namespace;
    only a short-lived thread of this process enters it)."""
    box = {}

    def work():
        try:
            fd = os.open("/var/run/netns/%s" % ns_name, os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
            finally:
                os.close(fd)
            box["sock"] = socket.create_connection(address, timeout=timeout)
        except OSError as e:
            box["error"] = e
    t = threading.Thread(target=work)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["sock"]


class Forward:
    """127.0.0.1:port of this namespace forwarded to an address inside `ns_name` (for a browser)."""

    def __init__(self, ns_name, target):
        self.ns, self.target = ns_name, target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = ns_connect(self.ns, self.target)
            except OSError:
                client.close()
                continue
            splice(client, upstream)

    def close(self):
        self.closed = True
        self.listener.close()
