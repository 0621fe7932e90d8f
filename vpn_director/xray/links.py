"""One share link -> a Server dict, or Skip saying why it is not stored.

Schemes: vless, vmess (v2rayN base64 JSON and the URL form), trojan, ss (SIP002, SS-2022, legacy
all-base64, simple-obfs / v2ray-plugin), hysteria2 / hy2. The URL parts are split by hand rather than
with urlsplit, because real links break its rules: a base64 userinfo may hold "/", the userinfo keeps
"+" (passwords), query values turn "+" into a space, hy2 ports may be a list. Whether the result is
stored is decided by outbound.check, the same judge Xray-JSON subscription entries go through.

A Server is a plain dict: id, name, protocol, address, port, label, outbound (the Xray outbound
without "tag") and, when it needs a newer Xray than 1.8, "requires" (the lowest version).
"""

import base64
import binascii
import ipaddress
import json
import re
from urllib.parse import unquote, unquote_plus

from . import Skip, version
from . import outbound as obmod
from .outbound import server_id

__all__ = ["parse", "server", "label", "server_id", "shadowsocks", "clean_name"]

SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})|%00")
HOSTNAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*\.?$")
CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
TRUE = ("1", "true", "yes")


def parse(text):
    """One share link -> Server dict; raises Skip (with the entry's name when known)."""
    text = (text or "").strip()
    m = SCHEME.match(text)
    if not m:
        raise Skip("invalid", "not a share link")
    scheme = m.group(1).lower()
    rest, _, fragment = text[m.end():].partition("#")
    name = clean_name(unquote(fragment))  # lenient, for the Skip of a link with a bad escape
    try:
        _escapes(fragment)
        parser = PARSERS.get(scheme)
        if parser is None:
            raise Skip("unsupported", "%s:// links are not supported" % scheme)
        ob, name = parser(rest, name)
        return server(ob, name)
    except Skip as e:
        e.name = e.name or name
        raise


def server(ob, name=""):
    """A checked outbound and its name -> Server dict (Skip when check refuses the outbound)."""
    ob = obmod.check(ob, name)
    f = obmod.facts(ob, name)
    address = f["address"]
    if not name:
        name = "%s:%d" % ("[%s]" % address if ":" in address else address, f["port"])
    entry = {"id": obmod.identity(f), "name": name, "protocol": f["kind"], "address": address,
             "port": f["port"], "label": obmod.kind_label(f), "outbound": ob}
    needs = version.requires(ob)
    if needs:
        entry["requires"] = needs
    return entry


def label(ob):
    """The short kind of an outbound, e.g. "vless·reality·vision" or "trojan·ws·tls"."""
    return obmod.kind_label(obmod.facts(ob))


# --- URL pieces --------------------------------------------------------------------------------------

def _escapes(text):
    if BAD_ESCAPE.search(text):
        raise Skip("invalid", "malformed percent-escape (or %00) in the link")


def clean_name(text):
    """A display name: control characters become spaces, outer blanks go (emoji and Cyrillic kept)."""
    return CONTROL.sub(" ", str(text or "")).strip()


def _query(text):
    """Query string -> dict; keys and values decoded with "+" as space; the first of repeated keys wins."""
    out = {}
    for part in text.split("&"):
        if part:
            key, _, value = part.partition("=")
            out.setdefault(unquote_plus(key), unquote_plus(value))
    return out


def _host(text):
    """'host', '[v6]' (with or without :port) -> (host without brackets, port text or None)."""
    if text.startswith("["):
        end = text.find("]")
        host, tail = text[1:end], text[end + 1:]
        if end < 0 or (tail and not tail.startswith(":")):
            raise Skip("invalid", "malformed [IPv6] host")
        try:
            host = str(ipaddress.IPv6Address(unquote(host)))
        except ValueError:
            raise Skip("invalid", "malformed [IPv6] host")
        return host, (tail[1:] if tail else None)
    if text.count(":") > 1:
        raise Skip("invalid", "an IPv6 host must be in brackets")
    host, sep, port = text.partition(":")
    host = unquote(host).strip().lower()
    if not host:
        raise Skip("invalid", "no server address")
    if not host.isascii():
        try:
            host = host.encode("idna").decode()
        except UnicodeError:
            raise Skip("invalid", "malformed host name")
    if not HOSTNAME.match(host):
        raise Skip("invalid", "malformed host name")
    return host, (port if sep else None)


def _port(text, default=None):
    """Port text -> int; a hysteria2 port list ("443,5000-6000") gives its first port."""
    if text is None or text == "":
        if default is None:
            raise Skip("invalid", "the link has no port")
        return default
    first = text.split(",")[0].split("-")[0].strip() if default is not None else text
    if not first.isdigit() or not 0 < int(first) < 65536:
        raise Skip("invalid", "the port is not a number from 1 to 65535")
    return int(first)


def _url(rest, default_port=None):
    """'userinfo@host:port/path?query' -> (userinfo or None, host, port, query dict)."""
    _escapes(rest)
    main, _, query = rest.partition("?")
    at = main.rfind("@")
    userinfo = unquote(main[:at]) if at >= 0 else None
    host, port = _host(main[at + 1:].split("/", 1)[0])
    return userinfo, host, _port(port, default_port), _query(query)


def _b64(text):
    """Lenient base64 (either alphabet, padding optional, whitespace ignored) -> str, or None."""
    text = re.sub(r"\s+", "", text).replace("-", "+").replace("_", "/").rstrip("=")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None


def _json(text, what):
    try:
        value = json.loads(text)
    except ValueError:
        raise Skip("invalid", "%s is not valid JSON" % what)
    if not isinstance(value, dict):
        raise Skip("invalid", "%s is not a JSON object" % what)
    return value


def _pins(text):
    """pcs / pinSHA256 -> lower-case hex digests without colons, comma-separated."""
    return ",".join(p.strip().replace(":", "").lower() for p in re.split(r"[,~]", text or "") if p.strip())


def _fields(q, security):
    """The vless/trojan/vmess query vocabulary -> outbound.stream fields."""
    net = (q.get("type") or "tcp").lower()
    f = {"network": net, "security": (q.get("security") or security).lower(),
         "header": (q.get("headerType") or "none").lower(), "path": q.get("path", ""), "host": q.get("host", ""),
         "serviceName": q.get("serviceName", ""), "authority": q.get("authority", ""), "mode": q.get("mode", ""),
         "sni": q.get("sni", ""), "alpn": q.get("alpn", ""), "fp": _fp(q.get("fp")), "pbk": q.get("pbk", ""),
         "sid": q.get("sid", ""), "spx": q.get("spx", ""), "pqv": q.get("pqv", ""), "pcs": _pins(q.get("pcs")),
         "vcn": q.get("vcn", ""), "ech": q.get("ech", ""),
         "insecure": any(q.get(k, "").lower() in TRUE for k in ("allowInsecure", "insecure"))}
    if q.get("extra") and net in ("xhttp", "splithttp"):
        f["extra"] = _json(q["extra"], "the xhttp extra parameter")
    if q.get("fm"):
        f["finalmask"] = _json(q["fm"], "the finalmask (fm) parameter")
    return f


def _fp(value):
    value = (value or "").lower()
    return "" if value == "none" else value


# --- schemes -----------------------------------------------------------------------------------------

def _vless(rest, name):
    uid, host, port, q = _url(rest)
    st = obmod.stream(_fields(q, "none"))
    return obmod.vless(host, port, uid or "", q.get("flow", ""), q.get("encryption", "none"), st), name


def _trojan(rest, name):
    password, host, port, q = _url(rest)
    return obmod.trojan(host, port, password or "", obmod.stream(_fields(q, "tls"))), name


def _cipher(value):
    """VMess security: Xray >= 26.7.11 reads none/zero and unknown values as auto; say auto everywhere."""
    value = str(value or "auto").lower()
    return value if value in ("aes-128-gcm", "chacha20-poly1305") else "auto"


def _vmess(rest, name):
    body = rest.partition("?")[0]
    if "@" in body:  # the XTLS URL form
        uid, host, port, q = _url(rest)
        return obmod.vmess(host, port, uid or "", _cipher(q.get("encryption")), obmod.stream(_fields(q, "none"))), name
    text = _b64(body)
    if text is None:
        raise Skip("invalid", "the vmess link is neither base64 JSON nor a URL")
    if "@" in text and not text.lstrip().startswith(("{", "[")):
        raise Skip("unsupported", "Shadowrocket-style vmess links are not supported")
    j = {k: ("" if v is None else str(v).strip()) for k, v in _json(text, "the vmess link").items()}
    name = clean_name(j.get("ps")) or name
    try:
        return _vmess_json(j), name
    except Skip as e:
        e.name = e.name or name
        raise


def _vmess_json(j):
    """v2rayN's vmess JSON (values as strings) -> outbound."""
    add = j.get("add", "")
    host, _ = _host("[%s]" % add.strip("[]") if ":" in add else add)
    port = _port(j.get("port"))
    net = (j.get("net") or "tcp").lower()
    kind = (j.get("type") or "").lower()
    kind = "" if kind == "none" else kind
    grpc = net == "grpc"
    q = {"type": net, "security": j.get("tls", ""), "headerType": kind if net in ("tcp", "raw") else "",
         "mode": kind if net in ("grpc", "xhttp", "splithttp") else "",
         "path": "" if grpc else j.get("path", ""), "host": "" if grpc else j.get("host", ""),
         "serviceName": j.get("path", "") if grpc else "", "authority": j.get("host", "") if grpc else ""}
    for key in ("sni", "alpn", "fp", "pbk", "sid", "spx", "pqv", "pcs", "vcn", "ech", "insecure", "allowInsecure"):
        q[key] = j.get(key, "")
    return obmod.vmess(host, port, j.get("id", ""), _cipher(j.get("scy")), obmod.stream(_fields(q, "none")))


def _ss(rest, name):
    _escapes(rest)
    main, _, query = rest.partition("?")
    q = _query(query)
    if "@" in main:  # SIP002: userinfo is base64(method:password), or plain for SS-2022
        at = main.rfind("@")
        info = unquote(main[:at])
        if ":" not in info:
            info = _b64(info) or ""
        host, port = _host(main[at + 1:].split("/", 1)[0])
    else:  # legacy: base64(method:password@host:port)
        decoded = _b64(main.rstrip("/")) or ""
        at = decoded.rfind("@")
        if at < 0:
            raise Skip("invalid", "the ss link is neither SIP002 nor legacy base64")
        info = decoded[:at]
        host, port = _host(decoded[at + 1:])
    if ":" not in info:
        raise Skip("invalid", "the ss userinfo is not method:password")
    method, _, password = info.partition(":")
    return shadowsocks(host, _port(port), method, password, q.get("plugin", "")), name


def shadowsocks(address, port, method, password, plugin=""):
    """A Shadowsocks server (ss link or SIP008 entry) -> outbound; SIP003 plugins mapped where Xray can."""
    f = {}
    if plugin:
        parts = re.split(r"(?<!\\);", plugin)  # SIP003 options: ";" separates, "\\" escapes
        pname = parts[0].strip()
        opts = {}
        for part in parts[1:]:
            key, _, value = part.partition("=")
            opts.setdefault(key.strip(), re.sub(r"\\(.)", r"\1", value))
        if pname in ("obfs-local", "simple-obfs"):
            if opts.get("obfs", "http") != "http":
                raise Skip("unsupported", "simple-obfs mode %s is not supported by Xray" % opts.get("obfs"))
            f = {"header": "http", "host": opts.get("obfs-host") or address, "path": opts.get("obfs-uri", "/")}
        elif pname in ("v2ray-plugin", "xray-plugin"):
            mode = opts.get("mode", "websocket")
            if mode == "quic":
                raise Skip("removed-transport", "v2ray-plugin over QUIC: the quic transport was removed from Xray")
            if mode != "websocket":
                raise Skip("unsupported", "v2ray-plugin mode %s is not supported" % mode)
            host = opts.get("host", "")
            f = {"network": "ws", "host": host, "path": opts.get("path", "/"),
                 "security": "tls" if "tls" in opts else "none", "sni": host}
        else:
            raise Skip("unsupported", "the Shadowsocks plugin %s is not supported by Xray" % pname)
    return obmod.shadowsocks(address, port, method.lower(), password, obmod.stream(f))


def _hysteria2(rest, name):
    auth, host, port, q = _url(rest, default_port=443)
    fm = None
    obfs = q.get("obfs", "").lower()
    if obfs:
        if obfs != "salamander":
            raise Skip("unsupported", "hysteria2 obfs %s is not supported" % obfs)
        if not q.get("obfs-password"):
            raise Skip("invalid", "hysteria2 salamander obfs without a password")
        fm = {"udp": [{"type": "salamander", "settings": {"password": q["obfs-password"]}}]}
    f = {"network": "hysteria", "security": "tls", "sni": q.get("sni", ""), "alpn": "h3", "auth": auth or "",
         "pcs": _pins(q.get("pinSHA256") or q.get("pcs")), "insecure": q.get("insecure", "").lower() in TRUE,
         "finalmask": fm}
    return obmod.hysteria2(host, port, obmod.stream(f)), name


PARSERS = {"vless": _vless, "vmess": _vmess, "trojan": _trojan, "ss": _ss, "hysteria2": _hysteria2,
           "hy2": _hysteria2}
