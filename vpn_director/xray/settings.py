"""The config keys of the Xray side: subscriptions, the active and preferred server, health checks
and failover (the watch daemon), Xray's own ports and files.

Read by config.validate through `check(c, xr, ax, cfg)`, which reports problems on the shared
checker (every problem with its JSON path) and returns one XraySide. Where the Xray process is
controlled and where its config lives depend on the platform; "auto" is resolved at use time
by the service module, not here, so validation reads no files.
"""

from __future__ import annotations

import re

from ..record import Record, factory
from ..patterns import compiled

SUB_ID_RE = compiled(r"^[a-z0-9][a-z0-9_-]{0,31}$")
SERVER_ID_RE = compiled(r"^[0-9a-f]{12}$")
SERVICES = ("auto", "entware", "systemd", "managed")
BITTORRENT = ("block", "direct", "proxy")
DEFAULT_UA = "vpn-director"
ON_ALL_DOWN = ("block", "direct")
DEFAULT_HEALTH_URLS = ("http://www.gstatic.com/generate_204", "http://cp.cloudflare.com/generate_204")
HTTP_URL_RE = compiled(r"^http://[A-Za-z0-9.-]+(:\d+)?(/\S*)?$")  # what the SOCKS probe can fetch


class Subscription(Record):
    id: str
    url: str  # a secret: never printed or logged whole (subscription.redact)
    enabled: bool = True
    interval_h: int = 12
    user_agent: str = DEFAULT_UA


class Health(Record):
    """xray.health: the watch daemon's check of the active server through Xray's SOCKS inbound."""
    enabled: bool = True
    interval_s: int = 30
    timeout_s: int = 10
    fail_threshold: int = 3  # consecutive failures before the server counts as dead
    urls: list[str] = factory(lambda: list(DEFAULT_HEALTH_URLS))  # success: HTTP 204
    require_wan: bool = True  # a dead server needs a passing direct WAN check too


class Failover(Record):
    """xray.failover: what the watch daemon does about a dead server."""
    enabled: bool = True
    max_switches_per_hour: int = 5
    return_to_preferred: bool = True
    return_hold_s: int = 300  # the preferred server must pass this long before the switch back
    on_all_down: str = "block"  # block: TPROXY stays (fail closed); direct: the Xray jump is removed


class XraySide(Record):
    subscriptions: list[Subscription] = factory(list)
    active_server: str | None = None  # a server id from the store
    preferred_server: str | None = None  # the one failover returns to
    health: Health = factory(Health)
    failover: Failover = factory(Failover)
    bittorrent: str = "block"
    socks_port: int = 12346  # 127.0.0.1 only: the end-to-end probe and the bot use it
    binary: str = "xray"
    service: str = "auto"
    config_path: str | None = None  # None: the platform's (service.default_config_path)
    error_log: str | None = None  # None: <state_dir>/xray-error.log
    probe_url: str = "http://www.gstatic.com/generate_204"
    start_timeout: int = 15  # seconds for Xray to listen after a restart


KNOWN_XRAY = {"subscriptions", "active_server", "preferred_server", "bittorrent", "health", "failover"}
KNOWN_ADVANCED = {"socks_port", "binary", "service", "config_path", "error_log", "probe_url", "start_timeout"}
KNOWN_SUB = {"id", "url", "enabled", "interval_h", "user_agent"}
KNOWN_HEALTH = {"enabled", "interval_s", "timeout_s", "fail_threshold", "urls", "require_wan"}
KNOWN_FAILOVER = {"enabled", "max_switches_per_hour", "return_to_preferred", "return_hold_s", "on_all_down"}


def check(c, xr, ax, tproxy_port):
    """The XraySide from the raw `xray` and `advanced.xray` objects; problems go to checker c."""
    side = XraySide()
    side.subscriptions = _subscriptions(c, xr.get("subscriptions"))
    side.active_server = _server_id(c, xr.get("active_server"), "xray.active_server")
    side.preferred_server = _server_id(c, xr.get("preferred_server"), "xray.preferred_server")
    side.health = _health(c, c.obj(xr.get("health"), "xray.health"))
    side.failover = _failover(c, c.obj(xr.get("failover"), "xray.failover"))
    side.bittorrent = c.choice(xr.get("bittorrent"), "xray.bittorrent", "block", BITTORRENT)
    side.socks_port = c.integer(ax.get("socks_port"), "advanced.xray.socks_port", 12346, 1, 65535)
    if side.socks_port == tproxy_port:
        c.err("advanced.xray.socks_port", "%d is the TPROXY port (advanced.xray.tproxy_port)" % tproxy_port)
    binary = ax.get("binary")
    if binary is not None and (not isinstance(binary, str) or not re.match(r"^(/[^\0]+|[A-Za-z0-9_.+-]+)$", binary)):
        c.err("advanced.xray.binary", "%r is neither an absolute path nor a command name" % (binary,))
    elif binary is not None:
        side.binary = binary
    side.service = c.choice(ax.get("service"), "advanced.xray.service", "auto", SERVICES)
    side.config_path = c.path(ax.get("config_path"), "advanced.xray.config_path", None)
    if side.config_path is not None and not side.config_path.endswith(".json"):
        c.err("advanced.xray.config_path", "must end in .json (Xray reads the format from the name)")
    side.error_log = c.path(ax.get("error_log"), "advanced.xray.error_log", None)
    url = ax.get("probe_url")
    if url is not None and (not isinstance(url, str) or not HTTP_URL_RE.match(url)):
        c.err("advanced.xray.probe_url", "%r is not a plain http:// URL (the probe speaks HTTP through SOCKS)" % (url,))
    elif url is not None:
        side.probe_url = url
    side.start_timeout = c.integer(ax.get("start_timeout"), "advanced.xray.start_timeout", 15, 1, 300)
    return side


def _server_id(c, raw, path):
    if raw is not None and (not isinstance(raw, str) or not SERVER_ID_RE.match(raw)):
        c.err(path, "%r is not a server id (12 hex digits; see `xray servers`)" % (raw,))
        return None
    return raw


def _unknown(c, raw, path, known):
    for key in raw:
        if key not in known:
            c.warnings.append("%s.%s: unknown key (ignored)" % (path, key))


def _health(c, raw):
    p = "xray.health"
    _unknown(c, raw, p, KNOWN_HEALTH)
    h = Health(enabled=c.boolean(raw.get("enabled"), p + ".enabled", True),
               interval_s=c.integer(raw.get("interval_s"), p + ".interval_s", 30, 1, 86400),
               timeout_s=c.integer(raw.get("timeout_s"), p + ".timeout_s", 10, 1, 120),
               fail_threshold=c.integer(raw.get("fail_threshold"), p + ".fail_threshold", 3, 1, 100),
               require_wan=c.boolean(raw.get("require_wan"), p + ".require_wan", True))
    if "urls" in raw:
        urls = c.lst(raw["urls"], p + ".urls")
        bad = False
        for i, url in enumerate(urls):
            if not isinstance(url, str) or not HTTP_URL_RE.match(url):
                c.err("%s.urls[%d]" % (p, i), "%r is not a plain http:// URL (the check speaks HTTP through "
                      "SOCKS and wants status 204)" % (url,))
                bad = True
        if isinstance(raw["urls"], list) and not urls:
            c.err(p + ".urls", "must name at least one URL")
        elif len(urls) > 8:
            c.err(p + ".urls", "%d URLs: at most 8" % len(urls))
        elif urls and not bad:
            h.urls = list(urls)
    return h


def _failover(c, raw):
    p = "xray.failover"
    _unknown(c, raw, p, KNOWN_FAILOVER)
    return Failover(enabled=c.boolean(raw.get("enabled"), p + ".enabled", True),
                    max_switches_per_hour=c.integer(raw.get("max_switches_per_hour"), p + ".max_switches_per_hour",
                                                    5, 1, 60),
                    return_to_preferred=c.boolean(raw.get("return_to_preferred"), p + ".return_to_preferred", True),
                    return_hold_s=c.integer(raw.get("return_hold_s"), p + ".return_hold_s", 300, 0, 86400),
                    on_all_down=c.choice(raw.get("on_all_down"), p + ".on_all_down", "block", ON_ALL_DOWN))


def _subscriptions(c, raw):
    out = []
    for i, item in enumerate(c.lst(raw, "xray.subscriptions")):
        p = "xray.subscriptions[%d]" % i
        item = c.obj(item, p)
        _unknown(c, item, p, KNOWN_SUB)
        sid, url = item.get("id"), item.get("url")
        if not isinstance(sid, str) or not SUB_ID_RE.match(sid):
            c.err(p + ".id", "%r is not an id (1-32 of a-z 0-9 _ -, starting with a letter or digit)" % (sid,))
            continue
        if any(s.id == sid for s in out):
            c.err(p + ".id", "%r is used twice" % sid)
            continue
        if not isinstance(url, str) or not re.match(r"^https?://[^\s/]+", url):
            # the URL itself is a secret: say what is wrong without printing it
            c.err(p + ".url", "must be an http:// or https:// URL")
            continue
        ua = item.get("user_agent", DEFAULT_UA)
        if not isinstance(ua, str) or not ua or len(ua) > 128 or any(ord(ch) < 32 for ch in ua):
            c.err(p + ".user_agent", "must be a short single-line string")
            ua = DEFAULT_UA
        out.append(Subscription(sid, url, c.boolean(item.get("enabled"), p + ".enabled", True),
                                c.integer(item.get("interval_h"), p + ".interval_h", 12, 1, 24 * 30), ua))
    return out
