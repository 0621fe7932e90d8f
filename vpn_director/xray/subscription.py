"""Subscription bodies -> Servers and Skips; fetching one over HTTP(S) without leaking its URL.

A body is recognised the way v2rayN and the panels' own clients do it: Xray JSON (one config, an
array of them, or SIP008), a plain link list, or base64 of a link list. Clash YAML, sing-box JSON
and HTML pages are refused with a reason that says what to change. Every link or JSON entry becomes
either a Server dict or a Skip (one bad line never aborts an import); the JSON entries go through
the same outbound.check as links. The subscription URL carries the user's token, so messages show
redact(url) only.
"""

import base64
import binascii
import http.client
import json
import re
import socket
import urllib.error
import urllib.parse
import urllib.request

from . import SKIP_REASONS, Skip, XrayError, links

NOT_PROXIES = ("freedom", "blackhole", "dns", "loopback")
STRIPPED_SOCKOPT = ("mark", "interface", "tproxy", "customSockopt")  # the router decides these
LINK = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
CLASH = re.compile(r"^(proxies|proxy-groups|proxy-providers)\s*:", re.M)
ASK_FOR_LINKS = "ask the panel for links or Xray JSON: set the subscription's user_agent, e.g. v2rayN/7.0"
DEFAULT_USER_AGENT = "vpn-director"


def parse_body(data):
    """Subscription bytes -> [Server dict | Skip] in order; later duplicates of an id are dropped.
    XrayError when the body as a whole is empty or in a format we do not read."""
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else str(data)
    text = text.replace("\x00", "").replace("\ufeff", "").strip()
    if not text:
        raise XrayError("the subscription is empty")
    entries, seen = [], set()
    for entry in _entries(text, decoded=False):
        if isinstance(entry, dict):
            if entry["id"] in seen:
                continue
            seen.add(entry["id"])
        entries.append(entry)
    return entries


def counts(entries):
    """{"stored": n, "<skip reason>": n, ...} for printing; reasons that did not occur are left out."""
    out = {"stored": sum(1 for e in entries if isinstance(e, dict))}
    for reason in SKIP_REASONS:
        n = sum(1 for e in entries if isinstance(e, Skip) and e.reason == reason)
        if n:
            out[reason] = n
    return out


def _entries(text, decoded):
    """The entries of a non-empty body: JSON, then the refused formats, then links, then base64."""
    if text[0] in "[{":
        return _json_body(text)
    head = text[:4096].lower()
    if head.startswith("<") and ("<html" in head or head.startswith("<!doctype")):
        raise XrayError("the answer is a web page (HTML), not a subscription: check the address "
                        "(an error or login page?)")
    if CLASH.search(text):
        raise XrayError("the answer is Clash YAML, which vpn-director does not read; " + ASK_FOR_LINKS)
    if "://" in text:
        return [_link(line.strip()) for line in text.splitlines() if _is_link(line.strip())]
    if not decoded:
        plain = _base64(text)
        if plain is not None and plain.strip():
            return _entries(plain.replace("\x00", "").replace("\ufeff", "").strip(), decoded=True)
    raise XrayError("unrecognised subscription format: not links, base64 of links or Xray JSON")


def _is_link(line):
    """A share-link line: comments, notices and plain web addresses are not entries."""
    return bool(LINK.match(line)) and not line.lower().startswith(("http://", "https://"))


def _link(line):
    try:
        return links.parse(line)
    except Skip as e:
        return e


def _base64(text):
    """Base64 of either alphabet, padded or not, wrapped or not -> str, or None."""
    compact = re.sub(r"\s+", "", text)
    if not re.fullmatch(r"[A-Za-z0-9+/_-]+=*", compact):
        return None
    compact = compact.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None


# --- JSON bodies ---------------------------------------------------------------------------------------

def _json_body(text):
    try:
        value = json.loads(text)
    except ValueError as e:
        raise XrayError("the answer looks like JSON but does not parse (%s)" % e.msg)
    if isinstance(value, dict) and isinstance(value.get("servers"), list) and "outbounds" not in value:
        return [_sip008(s) for s in value["servers"]]  # SIP008: {"version": 1, "servers": [...]}
    items = value if isinstance(value, list) else [value]
    if items and all(isinstance(i, dict) and "server" in i and "method" in i for i in items):
        return [_sip008(s) for s in items]  # a bare SIP008 server list
    if any(_is_sing_box(i) for i in items):
        raise XrayError("the answer is a sing-box config, which vpn-director does not read; " + ASK_FOR_LINKS)
    if not any(isinstance(i, dict) and "outbounds" in i for i in items):
        raise XrayError("unrecognised JSON: neither Xray configs (with outbounds) nor SIP008")
    return [_config(i) for i in items]


def _is_sing_box(item):
    obs = item.get("outbounds") if isinstance(item, dict) else None
    return (isinstance(obs, list) and any(isinstance(o, dict) and "type" in o for o in obs)
            and not any(isinstance(o, dict) and "protocol" in o for o in obs))


def _config(cfg):
    """One Xray config of a JSON subscription -> Server or Skip: its single proxy outbound."""
    if not isinstance(cfg, dict):
        return Skip("invalid", "an entry of the JSON array is not an object")
    name = links.clean_name(cfg.get("remarks"))
    obs = cfg.get("outbounds")
    proxies = [o for o in obs if not (isinstance(o, dict) and str(o.get("protocol", "")).lower() in NOT_PROXIES)] \
        if isinstance(obs, list) else []
    if not proxies:
        return Skip("invalid", "the config has no proxy outbound", name)
    if len(proxies) > 1:
        return Skip("unsupported", "composite entry: %d proxy outbounds (a balancer or a chain)" % len(proxies),
                    name)
    ob = proxies[0]
    if not isinstance(ob, dict):
        return Skip("invalid", "an outbound is not a JSON object", name)
    sockopt = (ob.get("streamSettings") or {}).get("sockopt") if isinstance(ob.get("streamSettings"), dict) else None
    if ob.get("proxySettings") or (isinstance(sockopt, dict) and sockopt.get("dialerProxy")):
        return Skip("unsupported", "composite entry: the proxy is chained through another (dialerProxy)", name)
    try:
        return links.server(_strip(ob), name)
    except Skip as e:
        return e


def _strip(ob):
    """The outbound without what belongs to the router's config: tag, sendThrough, socket marks."""
    ob = {k: v for k, v in ob.items() if k not in ("tag", "sendThrough")}
    st = ob.get("streamSettings")
    if isinstance(st, dict) and isinstance(st.get("sockopt"), dict):
        sockopt = {k: v for k, v in st["sockopt"].items() if k not in STRIPPED_SOCKOPT}
        st = {k: v for k, v in st.items() if k != "sockopt"}
        if sockopt:
            st["sockopt"] = sockopt
        ob["streamSettings"] = st
    return ob


def _sip008(item):
    """One SIP008 server {server, server_port, method, password, plugin, plugin_opts, remarks}."""
    if not isinstance(item, dict):
        return Skip("invalid", "a SIP008 server is not an object")
    name = links.clean_name(item.get("remarks"))
    address = str(item.get("server") or "").strip().strip("[]").lower()
    port = item.get("server_port")
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    plugin = str(item.get("plugin") or "")
    if plugin and item.get("plugin_opts"):
        plugin += ";" + str(item["plugin_opts"])
    try:
        ob = links.shadowsocks(address, port, str(item.get("method") or "").lower(), str(item.get("password") or ""),
                               plugin)
        return links.server(ob, name)
    except Skip as e:
        e.name = e.name or name
        return e


# --- fetching ------------------------------------------------------------------------------------------

def redact(url):
    """The part of a subscription URL that may be shown: "https://sub.example.com/…" (no token)."""
    try:
        parts = urllib.parse.urlsplit(str(url).strip())
        host = parts.hostname or ""
        if parts.port:
            host = "%s:%d" % ("[%s]" % host if ":" in host else host, parts.port)
    except ValueError:
        return "<subscription URL>"
    if not parts.scheme or not host:
        return "<subscription URL>"
    rest = "/…" if (parts.path.strip("/") or parts.query or parts.fragment) else ""
    return "%s://%s%s" % (parts.scheme.lower(), host, rest)


def fetch(url, user_agent, timeout=20, max_bytes=2 << 20, opener=None):
    """GET a subscription -> (body bytes, {lower-case header: value}). `opener` is anything with
    urllib's OpenerDirector.open(request, timeout=...) (tests); XrayError names redact(url) only."""
    where = redact(url)
    try:
        scheme = urllib.parse.urlsplit(url).scheme.lower()
    except ValueError:
        scheme = ""
    if scheme not in ("http", "https"):
        raise XrayError("%s: not an http:// or https:// address" % where)
    request = urllib.request.Request(url, headers={"User-Agent": user_agent or DEFAULT_USER_AGENT,
                                                   "Accept": "*/*"})
    try:
        response = (opener.open if opener is not None else urllib.request.urlopen)(request, timeout=timeout)
        with response:
            headers = {k.lower(): v for k, v in response.headers.items()}
            body = response.read(max_bytes + 1)
    except urllib.error.HTTPError as e:
        e.close()
        raise XrayError("%s answered HTTP %d" % (where, e.code))
    except urllib.error.URLError as e:
        why = "timed out after %g s" % timeout if isinstance(e.reason, socket.timeout) else _scrub(e.reason, url)
        raise XrayError("cannot fetch %s: %s" % (where, why))
    except socket.timeout:
        raise XrayError("cannot fetch %s: timed out after %g s" % (where, timeout))
    except (OSError, ValueError, http.client.HTTPException) as e:
        raise XrayError("cannot fetch %s: %s" % (where, type(e).__name__))
    if len(body) > max_bytes:
        raise XrayError("%s: the answer is larger than %d bytes" % (where, max_bytes))
    return body, headers


def _scrub(reason, url):
    """An error reason without any piece of the URL past its host."""
    text = str(getattr(reason, "strerror", None) or reason)
    parts = urllib.parse.urlsplit(url)
    for secret in (url, parts.path, parts.query, parts.fragment, parts.username, parts.password):
        if secret and len(secret) > 1:
            text = text.replace(secret, "…")
    return text


def _header(headers, name):
    for key, value in (headers or {}).items():
        if key.lower() == name:
            return str(value)
    return None


def userinfo(headers):
    """subscription-userinfo "upload=N; download=N; total=N; expire=UNIX" -> dict of the ints present."""
    out = {}
    for part in (_header(headers, "subscription-userinfo") or "").split(";"):
        key, _, value = part.partition("=")
        key = key.strip().lower()
        if key in ("upload", "download", "total", "expire") and key not in out:
            try:
                out[key] = int(float(value.strip()))
            except (ValueError, OverflowError):
                pass
    return out


def interval_hours(headers):
    """profile-update-interval in hours (at least 1), or None when absent or not a number."""
    value = _header(headers, "profile-update-interval")
    try:
        hours = int(float(value.strip()))
    except (AttributeError, ValueError, OverflowError):
        return None
    return max(hours, 1)
