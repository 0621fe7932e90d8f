"""The `telegram` config section: read by config.validate through check(c, section).

Imported on every run that loads the config, so it imports only `re`, `os` and the error
types: no dataclasses, typing, sockets or TLS. The token is a secret: no message here ever
includes it.
"""

import os
import re

from . import BotError

KNOWN = {"enabled", "token", "token_file", "admins", "allowed_users", "proxy", "api_base", "language", "alerts",
         "ip_url"}
KNOWN_ALERTS = {"enabled", "interval_s", "flap_changes", "flap_window_s", "list_max_age_h"}
LANGUAGES = ("en", "ru")
DEFAULT_API = "https://api.telegram.org"
DEFAULT_IP_URL = "http://api.ipify.org"
TOKEN_RE = re.compile(r"^\d{1,20}:[A-Za-z0-9_-]{20,100}$")
USERNAME_RE = re.compile(r"^@?[A-Za-z0-9_]{4,32}$")
SOCKS_RE = re.compile(r"^socks5h?://(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|localhost):(\d{1,5})/?$")
URL_RE = re.compile(r"^(https?)://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:\d{1,5})?(/[A-Za-z0-9._~/-]*)?$")
LOOPBACK = ("localhost", "127.0.0.1", "[::1]")
MAX_ADMINS = 50


class Alerts:
    """telegram.alerts: what the bot watches for its messages, and how it damps a flapping state."""

    def __init__(self):
        self.enabled = True
        self.interval_s = 60  # seconds between two looks at the state files and the tunnels
        self.flap_changes = 3  # more changes of one subject than this within flap_window_s: "flapping"
        self.flap_window_s = 600
        self.list_max_age_h = 48  # a country list older than this: its daily update failed


class Telegram:
    """The bot's settings; `configured` is False when there is no token or token_file."""

    def __init__(self):
        self.enabled = True
        self.token = None  # a secret: never printed or logged
        self.token_file = None
        self.admins = []  # numeric Telegram user IDs
        self.allowed_users = []  # usernames (lower case, no @): pinned to their ID on first contact
        self.proxy = "direct"  # direct | auto | socks5://127.0.0.1:PORT
        self.api_base = DEFAULT_API
        self.language = "en"
        self.ip_url = DEFAULT_IP_URL  # answers the caller's address in plain text (/ip)
        self.alerts = Alerts()

    @property
    def configured(self):
        return bool(self.token or self.token_file)

    def socks_port(self, default_port):
        """The SOCKS port to use (None for direct): the proxy's own, or Xray's inbound for auto."""
        m = SOCKS_RE.match(self.proxy)
        if m:
            return int(m.group(2))
        return default_port if self.proxy == "auto" else None


def check(c, section):
    """The Telegram settings from the raw `telegram` object; problems go to checker c."""
    t = Telegram()
    raw = c.obj(section, "telegram")
    for key in raw:
        if key not in KNOWN:
            c.warnings.append("telegram.%s: unknown key (ignored)" % key)
    t.enabled = c.boolean(raw.get("enabled"), "telegram.enabled", True)
    token = raw.get("token")
    if token is not None:
        if not isinstance(token, str) or not TOKEN_RE.match(token):
            c.err("telegram.token", "is not a bot token (digits, a colon, then letters; from @BotFather)")
        else:
            t.token = token
    t.token_file = c.path(raw.get("token_file"), "telegram.token_file", None)
    if t.token and t.token_file:
        c.err("telegram.token_file", "give token or token_file, not both")
    for i, item in enumerate(c.lst(raw.get("admins"), "telegram.admins")):
        if isinstance(item, bool) or not isinstance(item, int) or not 0 < item < 1 << 52:
            c.err("telegram.admins[%d]" % i, "%r is not a numeric Telegram user ID" % (item,))
        elif item in t.admins:
            c.warnings.append("telegram.admins[%d]: %d listed twice" % (i, item))
        else:
            t.admins.append(item)
    if len(t.admins) > MAX_ADMINS:
        c.err("telegram.admins", "%d IDs: at most %d" % (len(t.admins), MAX_ADMINS))
    for i, item in enumerate(c.lst(raw.get("allowed_users"), "telegram.allowed_users")):
        if not isinstance(item, str) or not USERNAME_RE.match(item):
            c.err("telegram.allowed_users[%d]" % i, "%r is not a Telegram username" % (item,))
        else:
            t.allowed_users.append(item.lstrip("@").lower())
    proxy = raw.get("proxy")
    if proxy is not None:
        m = SOCKS_RE.match(proxy) if isinstance(proxy, str) else None
        if proxy not in ("direct", "auto") and not (m and 1 <= int(m.group(2)) <= 65535):
            c.err("telegram.proxy", "%r is not direct, auto or socks5://127.0.0.1:PORT" % (proxy,))
        else:
            t.proxy = proxy
    t.api_base = _url(c, raw.get("api_base"), "telegram.api_base", DEFAULT_API, https_only=True)
    t.ip_url = _url(c, raw.get("ip_url"), "telegram.ip_url", DEFAULT_IP_URL, https_only=False)
    t.language = c.choice(raw.get("language"), "telegram.language", "en", LANGUAGES)
    _alerts(c, c.obj(raw.get("alerts"), "telegram.alerts"), t.alerts)
    return t


def _url(c, raw, path, default, https_only):
    """An http(s) base URL; with https_only, plain http only to this host (a local Bot API server)."""
    if raw is None:
        return default
    m = URL_RE.match(raw) if isinstance(raw, str) else None
    if not m or (m.group(3) and not 1 <= int(m.group(3)[1:]) <= 65535):
        c.err(path, "%r is not an http:// or https:// address" % (raw,))
        return default
    if https_only and m.group(1) == "http" and m.group(2) not in LOOPBACK:
        c.err(path, "plain http only to this router (127.0.0.1); use https://")
        return default
    return raw.rstrip("/")


def _alerts(c, raw, a):
    p = "telegram.alerts"
    for key in raw:
        if key not in KNOWN_ALERTS:
            c.warnings.append("%s.%s: unknown key (ignored)" % (p, key))
    a.enabled = c.boolean(raw.get("enabled"), p + ".enabled", True)
    a.interval_s = c.integer(raw.get("interval_s"), p + ".interval_s", 60, 10, 3600)
    a.flap_changes = c.integer(raw.get("flap_changes"), p + ".flap_changes", 3, 1, 100)
    a.flap_window_s = c.integer(raw.get("flap_window_s"), p + ".flap_window_s", 600, 60, 86400)
    a.list_max_age_h = c.integer(raw.get("list_max_age_h"), p + ".list_max_age_h", 48, 2, 24 * 90)


def read_token(t):
    """The token: from the config, or from token_file, which must be a regular file of mode 0600
    (or stricter) owned by this user. BotError names the file, never its content."""
    if t.token:
        return t.token
    path = t.token_file
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        raise BotError("telegram.token_file %s: %s" % (path, e.strerror or e))
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if st.st_mode & 0o077:
            raise BotError("telegram.token_file %s has mode %03o: others can read the token (chmod 600 %s)"
                           % (path, st.st_mode & 0o777, path))
        if st.st_uid != os.geteuid():
            raise BotError("telegram.token_file %s belongs to uid %d, not to this user" % (path, st.st_uid))
        text = fh.read(4096).decode("utf-8", "replace").strip()
    if not TOKEN_RE.match(text):
        raise BotError("telegram.token_file %s does not hold a bot token (digits, a colon, then letters)" % path)
    return text
