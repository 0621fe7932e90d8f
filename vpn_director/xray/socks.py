"""A minimal SOCKS5 client (RFC 1928, no authentication): one TCP CONNECT, then plain HTTP.

Enough for the end-to-end probe through Xray's SOCKS inbound: `http_get(port, url)` sends one
GET through 127.0.0.1:port and returns the HTTP status and the time to the response;
`http_get_direct(url)` sends the same GET without the proxy (the watch daemon's WAN check).
Standard library only, so it runs on the router.
"""

import ipaddress
import socket
import struct
import time
import urllib.parse

REPLIES = {1: "general failure", 2: "not allowed by ruleset", 3: "network unreachable", 4: "host unreachable",
           5: "connection refused", 6: "TTL expired", 7: "command not supported", 8: "address type not supported"}


class SocksError(Exception):
    """The proxy or the target did not answer as expected; the message says which step failed."""


class SocksTimeout(SocksError):
    """No answer within the timeout (the prober tells a timeout from a closed connection)."""


def recv_exact(sock, n, error=SocksError):
    """Exactly n bytes from sock; `error` (SocksError here; OSError for the lab's own probes)
    when the peer closes first."""
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise error("connection closed by the peer")
        data += chunk
    return data


def connect(proxy_port, host, port, timeout=10.0, proxy_host="127.0.0.1"):
    """A socket connected through the SOCKS5 proxy to host:port."""
    try:
        s = socket.create_connection((proxy_host, proxy_port), timeout=timeout)
    except OSError as e:
        raise SocksError("SOCKS inbound %s:%d: %s" % (proxy_host, proxy_port, e.strerror or e))
    try:
        s.sendall(b"\x05\x01\x00")
        if recv_exact(s, 2) != b"\x05\x00":
            raise SocksError("the proxy refused the no-authentication method")
        try:
            addr = b"\x01" + ipaddress.IPv4Address(host).packed
        except ValueError:
            name = host.encode("idna")
            addr = b"\x03" + bytes([len(name)]) + name
        s.sendall(b"\x05\x01\x00" + addr + struct.pack("!H", port))
        head = recv_exact(s, 4)
        if head[1] != 0:
            raise SocksError("CONNECT %s:%d: %s" % (host, port, REPLIES.get(head[1], "error %d" % head[1])))
        bound = {1: 4, 4: 16}.get(head[3])  # the bound address that follows: IPv4, IPv6 or a name
        recv_exact(s, (bound if bound else recv_exact(s, 1)[0]) + 2)
        return s
    except (OSError, SocksError) as e:
        s.close()
        if isinstance(e, socket.timeout):
            raise SocksTimeout("timed out after %gs" % timeout)
        if isinstance(e, OSError):
            raise SocksError(e.strerror or str(e))
        raise


def http_get(proxy_port, url, timeout=10.0):
    """(HTTP status, milliseconds to the status line) of GET url through the proxy."""
    u = _split(url)
    start = time.monotonic()
    return _status(connect(proxy_port, u.hostname, u.port or 80, timeout), u, timeout, start, "through the proxy")


def http_get_direct(url, timeout=10.0):
    """The same GET without the proxy, from this host's own address: the WAN check."""
    u = _split(url)
    start = time.monotonic()
    try:
        s = socket.create_connection((u.hostname, u.port or 80), timeout=timeout)
    except socket.timeout:
        raise SocksError("%s: no connection within %gs" % (u.netloc, timeout))
    except OSError as e:
        raise SocksError("%s: %s" % (u.netloc, e.strerror or e))
    return _status(s, u, timeout, start, "from %s" % u.netloc)


def _split(url):
    u = urllib.parse.urlsplit(url)
    if u.scheme != "http" or not u.hostname:
        raise SocksError("only plain http:// URLs can be probed: %s" % url)
    return u


def _status(s, u, timeout, start, where):
    """Send the GET on connected socket s (closed here) and read the status line."""
    try:
        path = (u.path or "/") + ("?" + u.query if u.query else "")
        s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: vpn-director\r\nConnection: close\r\n\r\n"
                   % (path, u.netloc)).encode("ascii"))
        line = b""
        while b"\r\n" not in line and len(line) < 4096:
            chunk = s.recv(1024)
            if not chunk:
                break
            line += chunk
    except socket.timeout:
        raise SocksTimeout("no answer from %s within %gs" % (u.netloc, timeout))
    except OSError as e:
        raise SocksError(e.strerror or str(e))
    finally:
        s.close()
    elapsed = int((time.monotonic() - start) * 1000)
    first = line.split(b"\r\n", 1)[0].decode("latin-1")
    parts = first.split()
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise SocksError("no HTTP answer %s (connection closed)" % where if not first
                         else "not an HTTP answer: %r" % first[:60])
    return int(parts[1]), elapsed
