"""The HTTPS server: stdlib ThreadingHTTPServer + ssl, one server per listen address.

The TLS handshake runs in each connection's own thread (wrapping the listening socket would let
one idle client stall everyone). Connections are bounded and time out; the Host header must be
one of ours (421 otherwise: DNS rebinding); bodies over 64 KiB are refused before they are read
(413); every answer, errors and static files included, carries the security headers, and none
carries Access-Control-Allow-*. Requests are turned into api.Request and answered by api.App.
"""

import ipaddress
import json
import os
import pkgutil
import re
import signal
import socket
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from .. import __version__, log
from . import WebError, api

MAX_BODY = 64 * 1024
MAX_CONNECTIONS = 32
SOCKET_TIMEOUT = 15  # seconds: handshake, headers, body, and between keep-alive requests
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'")
HEADERS = (("Content-Security-Policy", CSP), ("X-Frame-Options", "DENY"), ("X-Content-Type-Options", "nosniff"),
           ("Referrer-Policy", "no-referrer"), ("Cross-Origin-Opener-Policy", "same-origin"),
           ("Cross-Origin-Resource-Policy", "same-origin"),
           ("Permissions-Policy", "camera=(), microphone=(), geolocation=()"), ("Cache-Control", "no-store"))
TYPES = {"html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8",
         "svg": "image/svg+xml", "txt": "text/plain; charset=utf-8"}
STATIC_RE = re.compile(r"^/static/([a-z0-9][a-z0-9_-]*\.(html|js|css|svg|txt))$")


def static_file(name):
    """A file of static/ as bytes (from the package or the .pyz), or None."""
    try:
        return pkgutil.get_data(__package__, "static/" + name)
    except OSError:
        return None


class TLSServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address, app, ctx, max_connections=MAX_CONNECTIONS, timeout=SOCKET_TIMEOUT):
        self.app, self.ctx, self.conn_timeout = app, ctx, timeout
        self.slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, Handler)

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):  # full: this one is closed at once
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def finish_request(self, request, client_address):
        """In the connection's thread: the handshake, then the requests."""
        request.settimeout(self.conn_timeout)
        try:
            tls = self.ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        except (ssl.SSLError, OSError):
            pass
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        log.warning("web: %s: %s" % (client_address[0], sys.exc_info()[1]))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.1"  # an unparsable request line still gets status line and headers
    def version_string(self):
        return "vpn-director"

    def log_message(self, format, *args):
        pass  # no access log: the API logs what changes

    def end_headers(self):
        for name, value in HEADERS:
            self.send_header(name, value)
        super().end_headers()

    def send_error(self, code, message=None, explain=None):
        """http.server's own errors (bad request line, unknown method) as JSON too."""
        self.close_connection = True
        self._send(code, {"error": message or self.responses.get(code, ("error",))[0]})

    def _send(self, status, obj=None, body=None, ctype="application/json", headers=()):
        if body is None:
            body = (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _any(self):
        host = (self.headers.get("Host") or "").strip().lower()
        if not self.server.app.host_ok(host):
            self.close_connection = True
            return self._send(421, {"error": "unknown host name: open the address the web UI listens on"})
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            return self._send(411, {"error": "send a Content-Length"})
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            return self._send(400, {"error": "bad Content-Length"})
        if length > MAX_BODY:
            self.close_connection = True  # the body is never read
            return self._send(413, {"error": "request body over %d bytes" % MAX_BODY})
        body = self.rfile.read(length) if length else b""
        path = urlsplit(self.path)
        if not path.path.startswith("/api/"):
            return self._static(path.path)
        req = api.Request(self.command, path.path, path.query, self.headers, body, self.client_address[0], host)
        res = self.server.app.handle(req)
        self._send(res.status, res.obj, headers=res.headers)

    def _static(self, path):
        if self.command not in ("GET", "HEAD"):
            return self._send(405, {"error": "method not allowed"}, headers=[("Allow", "GET")])
        m = STATIC_RE.match(path)
        name = "index.html" if path in ("/", "/index.html") else m.group(1) if m else None
        data = static_file(name) if name else None
        if data is None:
            return self._send(404, {"error": "not found"})
        self._send(200, body=data, ctype=TYPES[name.rsplit(".", 1)[1]])

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = do_HEAD = _any


def listen_addresses(cfg, interface_address=None, wan_address=None):
    """The addresses to bind: webui.listen, or the LAN interface's and 127.0.0.1; never the WAN's."""
    from .. import lint
    lan = (interface_address or lint.interface_address)(cfg.lan_interface)
    wanted = list(cfg.webui.listen) if cfg.webui.listen is not None else [a for a in (lan, "127.0.0.1") if a]
    wan = (wan_address or default_route_address)()
    for a in wanted:
        if wan and a == wan:
            raise WebError("webui.listen: %s is the WAN address; the web UI is for the LAN only" % a)
        if ipaddress.IPv4Address(a).is_unspecified:
            raise WebError("webui.listen: %s would listen on every interface" % a)
    return wanted


def default_route_address(route_file="/proc/net/route"):
    """The address of the interface the default route leaves by (the WAN), or None."""
    from .. import lint
    try:
        with open(route_file) as fh:
            for line in fh.read().splitlines()[1:]:
                f = line.split()
                if len(f) > 7 and f[1] == "00000000" and f[7] == "00000000":
                    return lint.interface_address(f[0])
    except OSError:
        pass
    return None


def host_names(addresses, extra=()):
    """Host header values the UI answers to: its addresses, localhost, this host's names."""
    names = set(addresses) | {"localhost", "127.0.0.1"} | set(extra)
    for n in (socket.gethostname(), socket.getfqdn()):
        if n:
            names.update({n.lower(), n.lower().split(".")[0]})
    return names


def start(app, addresses, port, ctx):
    """One server thread per address; returns the servers (each `.server_address`)."""
    servers = []
    try:
        for a in addresses:
            servers.append(TLSServer((a, port), app, ctx))
    except OSError as e:
        for s in servers:
            s.server_close()
        raise WebError("cannot listen on %s port %d: %s" % (a, port, e.strerror or e))
    for s in servers:
        threading.Thread(target=s.serve_forever, name="web %s" % s.server_address[0], daemon=True).start()
    return servers


def stop(servers):
    for s in servers:
        s.shutdown()
        s.server_close()


def run(cfg, out):
    """`vpn-director web`: serve until SIGTERM or SIGINT."""
    from . import cert
    threading.stack_size(512 * 1024)
    settings = cfg.webui
    addresses = listen_addresses(cfg)
    if settings.listen is None and addresses == ["127.0.0.1"]:
        addresses = _wait_for_lan(cfg, out)
    names = host_names(addresses, settings.hosts)
    cert_path, key_path = settings.cert_path(cfg.data_dir), settings.key_path(cfg.data_dir)
    if cert.ensure(cert_path, key_path, addresses, sorted(n for n in names if not _is_ip(n))):
        out.note("web: made a self-signed certificate %s" % cert_path)
    ctx = cert.context(cert_path, key_path)
    app = api.App(cfg.path, names, settings.shadow_file)
    servers = start(app, addresses, settings.port, ctx)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    out.note("web: vpn-director %s listening on %s; certificate SHA-256 %s" % (
        __version__, ", ".join("https://%s:%d/" % (a, settings.port) for a in addresses), cert.fingerprint(cert_path)))
    while not done.wait(3600):
        pass
    stop(servers)
    out.note("web: stopped (pid %d)" % os.getpid())
    return 0


def _wait_for_lan(cfg, out, sleep=None):
    """At boot the LAN bridge may not have its address yet: wait up to advanced.boot.interface_wait."""
    import time
    for _ in range(max(0, cfg.boot_interface_wait)):
        (sleep or time.sleep)(1)
        addresses = listen_addresses(cfg)
        if addresses != ["127.0.0.1"]:
            return addresses
    out.warn("web: %s has no IPv4 address: listening on 127.0.0.1 only (restart the web UI once it has one)"
             % cfg.lan_interface)
    return ["127.0.0.1"]


def _is_ip(text):
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False
