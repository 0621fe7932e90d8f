"""The config keys of the Xray side: subscriptions, the active server, Xray's own ports and files.

Read by config.validate through `check(c, xr, ax, cfg)`, which reports problems on the shared
checker (every problem with its JSON path) and returns one XraySide. Where the Xray process is
controlled and where its config lives depend on the platform; "auto" is resolved at use time
by the service module, not here, so validation reads no files.
"""

import re
from dataclasses import dataclass, field
from typing import List, Optional

SUB_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
SERVER_ID_RE = re.compile(r"^[0-9a-f]{12}$")
SERVICES = ("auto", "entware", "systemd", "managed")
BITTORRENT = ("block", "direct", "proxy")
DEFAULT_UA = "vpn-director"


@dataclass
class Subscription:
    id: str
    url: str  # a secret: never printed or logged whole (subscription.redact)
    enabled: bool = True
    interval_h: int = 12
    user_agent: str = DEFAULT_UA


@dataclass
class XraySide:
    subscriptions: List[Subscription] = field(default_factory=list)
    active_server: Optional[str] = None  # a server id from the store
    bittorrent: str = "block"
    socks_port: int = 12346  # 127.0.0.1 only: the end-to-end probe and the bot use it
    binary: str = "xray"
    service: str = "auto"
    config_path: Optional[str] = None  # None: the platform's (service.default_config_path)
    error_log: Optional[str] = None  # None: <state_dir>/xray-error.log
    probe_url: str = "http://www.gstatic.com/generate_204"
    start_timeout: int = 15  # seconds for Xray to listen after a restart


KNOWN_XRAY = {"subscriptions", "active_server", "bittorrent"}
KNOWN_ADVANCED = {"socks_port", "binary", "service", "config_path", "error_log", "probe_url", "start_timeout"}
KNOWN_SUB = {"id", "url", "enabled", "interval_h", "user_agent"}


def check(c, xr, ax, tproxy_port):
    """The XraySide from the raw `xray` and `advanced.xray` objects; problems go to checker c."""
    side = XraySide()
    side.subscriptions = _subscriptions(c, xr.get("subscriptions"))
    act = xr.get("active_server")
    if act is not None and (not isinstance(act, str) or not SERVER_ID_RE.match(act)):
        c.err("xray.active_server", "%r is not a server id (12 hex digits; see `xray servers`)" % (act,))
    else:
        side.active_server = act
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
    if url is not None and (not isinstance(url, str) or not re.match(r"^http://[A-Za-z0-9.-]+(:\d+)?(/\S*)?$", url)):
        c.err("advanced.xray.probe_url", "%r is not a plain http:// URL (the probe speaks HTTP through SOCKS)" % (url,))
    elif url is not None:
        side.probe_url = url
    side.start_timeout = c.integer(ax.get("start_timeout"), "advanced.xray.start_timeout", 15, 1, 300)
    return side


def _subscriptions(c, raw):
    out = []
    for i, item in enumerate(c.lst(raw, "xray.subscriptions")):
        p = "xray.subscriptions[%d]" % i
        item = c.obj(item, p)
        for key in item:
            if key not in KNOWN_SUB:
                c.warnings.append("%s.%s: unknown key (ignored)" % (p, key))
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
