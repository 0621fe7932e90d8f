"""The watch daemon's two checks: the active path through the live Xray, and the WAN without it.

check_active(cfg, urls, timeout) -> (ok, latency_ms, reason)
    A GET of each health URL in turn through Xray's SOCKS inbound on 127.0.0.1 (the same path a
    client's connection takes out of Xray); the first HTTP 204 passes. A second URL keeps one
    site's outage from looking like a dead server.

check_wan(cfg, servers, timeout, exclude) -> (up, how)
    Whether the router's own uplink works, tested without the proxy, so that a WAN outage is
    never taken for a dead server. Two kinds of direct attempt run in parallel, and the first
    answer wins:
      * a TCP connect to other stored servers' address:port (their resolved IPv4s, so no DNS
        is needed; the failing server's addresses are left out: its own silence is in
        question). An accepted connection, and also a refused one (a TCP reset), proves that
        packets crossed the WAN both ways: a dead proxy process on a live host refuses.
      * a direct HTTP GET of the health URLs: any HTTP answer, whatever its status, means the
        WAN works (a captive page or a censor's block page still came over the WAN).
    Server endpoints need no DNS and are what the router must reach anyway; the URLs cover a
    store with a single server. Timeouts, "network
    unreachable", ICMP errors and DNS failures count as no answer: when in doubt the WAN is
    "down" and nothing is switched.
"""

import errno
import ipaddress
import queue
import socket
import threading
import time

from . import socks

MAX_WAN_TARGETS = 6  # server endpoints tried per WAN check


def check_active(cfg, urls, timeout):
    """(ok, latency ms or None, reason) of the active path through the live Xray's SOCKS inbound."""
    reasons = []
    for url in urls:
        try:
            status, ms = socks.http_get(cfg.xray.side.socks_port, url, timeout)
        except socks.SocksError as e:
            reasons.append(str(e))
            continue
        if status == 204:
            return True, ms, "HTTP 204 from %s" % _host(url)
        reasons.append("HTTP %d instead of 204 from %s" % (status, _host(url)))
    return False, None, "; ".join(reasons) or "no health URL"


def wan_targets(servers, exclude=None, limit=MAX_WAN_TARGETS):
    """(ip, port) of stored servers to connect to, distinct, without the excluded server's IPs."""
    skip = set()
    for s in servers:
        if s.get("id") == exclude:
            skip.update(s.get("ips") or [])
    out = []
    for s in servers:
        if s.get("id") == exclude or not isinstance(s.get("port"), int):
            continue
        for ip in s.get("ips") or []:
            if ip in skip or (ip, s["port"]) in out:
                continue
            try:
                ipaddress.IPv4Address(ip)
            except ValueError:
                continue
            out.append((ip, s["port"]))
            break
        if len(out) >= limit:
            break
    return out


def check_wan(cfg, servers, timeout, exclude=None, urls=None, connect=None, get=None):
    """(up, how): a direct answer from beyond the router, see the module text."""
    urls = cfg.xray.side.health.urls if urls is None else urls
    connect = connect or _connect
    get = get or socks.http_get_direct
    jobs = [("%s:%d" % t, lambda t=t: connect(t, timeout)) for t in wan_targets(servers, exclude)]
    jobs += [(url, lambda url=url: "HTTP %d" % get(url, timeout)[0]) for url in urls]
    if not jobs:
        return False, "nothing to try"
    results = queue.Queue()
    for name, job in jobs:
        threading.Thread(target=_attempt, args=(name, job, results), daemon=True).start()
    misses = []
    deadline = time.monotonic() + timeout + 1
    while len(misses) < len(jobs):
        try:
            name, ok, text = results.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        if ok:
            return True, "%s answered directly (%s)" % (name, text)
        misses.append("%s: %s" % (name, text))
    return False, "no direct answer: " + "; ".join(misses or ["timed out"])


def _attempt(name, job, results):
    try:
        results.put((name, True, job()))
    except (OSError, socks.SocksError) as e:
        results.put((name, False, str(e)))


def _connect(target, timeout):
    """'connected' or 'refused' (both are answers from the far end); OSError otherwise."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(target)
        return "connected"
    except socket.timeout:
        raise OSError("no answer within %gs" % timeout)
    except OSError as e:
        if e.errno == errno.ECONNREFUSED:
            return "refused"
        raise OSError(e.strerror or str(e))
    finally:
        s.close()


def _host(url):
    return url.split("://", 1)[-1].split("/", 1)[0]
