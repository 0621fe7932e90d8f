"""How the bot's HTTPS requests reach the Bot API: direct, through a SOCKS5 proxy (Xray's inbound
where Telegram is blocked), or `auto` (direct, then SOCKS).

Through SOCKS the host name goes to the proxy (xray.socks.connect sends ATYP 3), so the router
does no DNS lookup for api.telegram.org. TLS is verified end to end against the host name of
api_base, through either path. `auto` falls back only when a connection cannot be made
(refused, timed out, SOCKS refusal, TLS handshake): a request already written is never sent
again on the other path. The working path is kept; the preferred one is tried again after
REPROBE_S.
"""

import http.client
import socket
import ssl
import time
import urllib.parse

from ..xray import socks
from . import BotError

CONNECT_TIMEOUT = 10.0
REPROBE_S = 600
DIRECT, SOCKS = "direct", "socks"


class Unreachable(BotError):
    """No answer from the Bot API; `written` is True when the request may have reached it. The
    poller backs off; a handler never answers it with "failed" (that answer would not get through
    either)."""

    def __init__(self, message, written=False):
        super().__init__(message)
        self.written = written


class _ConnectFailed(Exception):
    pass


class _Conn(http.client.HTTPSConnection):
    """An HTTP(S) connection whose socket comes from `opener(host, port, timeout)`."""

    def __init__(self, host, port, opener, context, timeout):
        super().__init__(host, port, timeout=timeout, context=context)
        self._opener = opener
        self._tls = context is not None

    def connect(self):
        sock = self._opener(self.host, self.port, CONNECT_TIMEOUT)
        if self._tls:
            sock = self._context.wrap_socket(sock, server_hostname=self.host)
        sock.settimeout(self.timeout)
        self.sock = sock


class Transport:
    """request(path, body, content_type, timeout) -> (HTTP status, body bytes) to api_base."""

    def __init__(self, base, mode=DIRECT, socks_port=None, cafile=None, direct_connect=None, socks_connect=None,
                 clock=time.monotonic, log=None):
        u = urllib.parse.urlsplit(base)
        self.host, self.tls = u.hostname, u.scheme == "https"
        self.port = u.port or (443 if self.tls else 80)
        self.prefix = u.path.rstrip("/")
        self.paths = {"direct": [DIRECT], "socks": [SOCKS], "auto": [DIRECT, SOCKS]}[mode]
        self.socks_port = socks_port
        self.context = ssl.create_default_context(cafile=cafile) if self.tls else None
        self._direct = direct_connect or (lambda host, port, timeout: socket.create_connection((host, port), timeout))
        self._socks = socks_connect or (lambda host, port, timeout: socks.connect(self.socks_port, host, port, timeout))
        self.clock, self.log = clock, log or (lambda msg: None)
        self.current, self.since = self.paths[0], clock()
        self.used = []  # the path of every request made (tests, status)

    def _order(self):
        if self.current != self.paths[0] and self.clock() - self.since >= REPROBE_S:
            return list(self.paths)  # time to try the preferred path again
        return [self.current] + [p for p in self.paths if p != self.current]

    def _open(self, path, timeout):
        opener = self._direct if path == DIRECT else self._socks
        conn = _Conn(self.host, self.port, opener, self.context, timeout)
        try:
            conn.connect()
        except (OSError, socks.SocksError, ssl.SSLError) as e:
            conn.close()
            raise _ConnectFailed("%s: %s" % (path, _reason(e)))
        return conn

    def request(self, path, body, content_type, timeout):
        errors = []
        for way in self._order():
            try:
                conn = self._open(way, timeout)
            except _ConnectFailed as e:
                errors.append(str(e))
                continue
            if way != self.current:
                self.log("bot: the Bot API is reachable %s now%s" % (
                    "directly" if way == DIRECT else "through the SOCKS proxy",
                    " (%s)" % "; ".join(errors) if errors else ""))
                self.current, self.since = way, self.clock()
            self.used.append(way)
            try:
                conn.request("POST", self.prefix + path, body=body, headers={"Content-Type": content_type,
                                                                            "Connection": "close"})
                resp = conn.getresponse()
                return resp.status, resp.read(4 << 20)
            except (OSError, http.client.HTTPException) as e:
                raise Unreachable("%s: %s" % (way, _reason(e)), written=True)
            finally:
                conn.close()
        raise Unreachable("; ".join(errors))


def _reason(e):
    if isinstance(e, socket.timeout):
        return "timed out"
    if isinstance(e, ssl.SSLCertVerificationError):
        return "TLS certificate not trusted (%s)" % e.verify_message
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__
