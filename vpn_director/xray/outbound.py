"""Xray outbounds: built from a share link's fields, and judged whatever their source.

`stream(fields)` and the protocol builders write the classic, widest-compatible outbound form
(vnext/servers arrays, "network", empty keys left out, no "tag"). `check` is the one place that
decides whether an outbound is stored: links and Xray-JSON subscription entries both pass through
it, so the same server gets the same skip reason from either source. `identity` and `kind_label`
describe a checked outbound: its stable id and its short kind (the lowest Xray version that builds
it comes from version.requires, where the version gates live).
"""

import base64
import binascii
import copy
import hashlib
import ipaddress
import json
import re

from . import Skip

KINDS = {"vless": "vless", "vmess": "vmess", "trojan": "trojan", "shadowsocks": "shadowsocks",
         "hysteria": "hysteria2"}
SHORT = {"vless": "vless", "vmess": "vmess", "trojan": "trojan", "shadowsocks": "ss", "hysteria2": "hy2"}
NETWORKS = {"tcp": "tcp", "raw": "tcp", "ws": "ws", "websocket": "ws", "grpc": "grpc",
            "httpupgrade": "httpupgrade", "xhttp": "xhttp", "splithttp": "xhttp", "hysteria": "hysteria"}
REMOVED_NETWORKS = ("h2", "h3", "http", "quic")  # removed in Xray 24.12.15
# The settings key per network, classic name first (JSON entries may use the other one).
SETTINGS_KEYS = {"tcp": ("tcpSettings", "rawSettings"), "ws": ("wsSettings",), "grpc": ("grpcSettings",),
                 "httpupgrade": ("httpupgradeSettings",), "xhttp": ("xhttpSettings", "splithttpSettings"),
                 "hysteria": ("hysteriaSettings",)}
SS_AEAD = ("aes-128-gcm", "aes-256-gcm", "chacha20-poly1305", "chacha20-ietf-poly1305", "xchacha20-poly1305",
           "xchacha20-ietf-poly1305", "aead_aes_128_gcm", "aead_aes_256_gcm", "aead_chacha20_poly1305",
           "aead_xchacha20_poly1305")
SS_2022 = {"2022-blake3-aes-128-gcm": 16, "2022-blake3-aes-256-gcm": 32, "2022-blake3-chacha20-poly1305": 32}
VISION = ("xtls-rprx-vision", "xtls-rprx-vision-udp443")
FINGERPRINTS = ("chrome", "firefox", "safari", "ios", "android", "edge", "360", "qq", "random", "randomized",
                "randomizednoalpn", "unsafe")  # and utls' own "hello..." names
XHTTP_MODES = ("auto", "packet-up", "stream-up", "stream-one")
PLACEHOLDERS = ("0.0.0.0", "127.0.0.1", "::", "::1", "localhost")
# Destinations Xray lets VLESS/Trojan reach without TLS (common/geodata/consts.go; Xray >= 26.7.11).
PRIVATE_NETS = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
    "203.0.113.0/24", "224.0.0.0/3", "::/127", "fc00::/7", "fe80::/10", "ff00::/8"))
PRIVATE_SUFFIXES = ("lan", "localdomain", "example", "invalid", "localhost", "test", "local", "home.arpa",
                    "internal")
DOTLESS = re.compile(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
UUID = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")

FIELDS = {"network": "tcp", "security": "none", "header": "none", "path": "", "host": "", "serviceName": "",
          "authority": "", "mode": "", "extra": None, "sni": "", "alpn": "", "fp": "", "pbk": "", "sid": "",
          "spx": "", "pqv": "", "pcs": "", "vcn": "", "ech": "", "insecure": False, "finalmask": None, "auth": ""}


def _compact(d):
    return {k: v for k, v in d.items() if v not in ("", None, [], {}, False)}


def _csv(text):
    return [p.strip() for p in (text or "").split(",") if p.strip()]


# --- building -------------------------------------------------------------------------------------

def stream(fields):
    """A link's fields (FIELDS' keys) -> streamSettings. Values are written as given: check() judges."""
    f = dict(FIELDS, **fields)
    net = NETWORKS.get(f["network"], f["network"])
    st = {"network": net, "security": f["security"]}
    if net == "tcp" and f["header"] not in ("", "none"):
        header = {"type": f["header"]}
        if f["header"] == "http":
            request = {"path": _csv(f["path"]) or ["/"]}
            if _csv(f["host"]):
                request["headers"] = {"Host": _csv(f["host"])}
            header["request"] = request
        st["tcpSettings"] = {"header": header}
    elif net in ("ws", "httpupgrade"):
        st[SETTINGS_KEYS[net][0]] = _compact({"path": f["path"], "host": f["host"]})
    elif net == "grpc":
        st["grpcSettings"] = _compact({"serviceName": f["serviceName"], "authority": f["authority"],
                                       "multiMode": f["mode"] == "multi"})
    elif net == "xhttp":
        st["xhttpSettings"] = _compact({"path": f["path"], "host": f["host"], "mode": f["mode"],
                                        "extra": f["extra"]})
    elif net == "hysteria":
        st["hysteriaSettings"] = {"version": 2, "auth": f["auth"]}
    if f["security"] == "tls":
        host = _csv(f["host"])[0] if net in ("ws", "httpupgrade", "xhttp") and _csv(f["host"]) else ""
        tls = _compact({"serverName": f["sni"] or host, "fingerprint": f["fp"], "alpn": _csv(f["alpn"]),
                        "pinnedPeerCertSha256": f["pcs"], "verifyPeerCertByName": f["vcn"],
                        "echConfigList": f["ech"]})
        if f["insecure"]:
            tls["allowInsecure"] = True  # transient: check() turns it into the pin or a skip
        st["tlsSettings"] = tls
    elif f["security"] == "reality":
        # Xray before 25.x refuses a REALITY client without a fingerprint; chrome is what newer ones default to
        st["realitySettings"] = _compact({"serverName": f["sni"], "fingerprint": f["fp"] or "chrome",
                                          "publicKey": f["pbk"], "shortId": f["sid"], "spiderX": f["spx"],
                                          "mldsa65Verify": f["pqv"]})
    if f["finalmask"]:
        st["finalmask"] = f["finalmask"]
    return _compact(st)


def vless(address, port, uid, flow, encryption, st):
    user = {"id": uid, "encryption": encryption or "none"}
    if flow:
        user["flow"] = flow
    return {"protocol": "vless", "settings": {"vnext": [{"address": address, "port": port, "users": [user]}]},
            "streamSettings": st}


def vmess(address, port, uid, cipher, st):
    user = {"id": uid, "alterId": 0, "security": cipher}
    return {"protocol": "vmess", "settings": {"vnext": [{"address": address, "port": port, "users": [user]}]},
            "streamSettings": st}


def trojan(address, port, password, st):
    return {"protocol": "trojan", "settings": {"servers": [{"address": address, "port": port,
                                                             "password": password}]},
            "streamSettings": st}


def shadowsocks(address, port, method, password, st):
    server = {"address": address, "port": port, "method": method, "password": password}
    return {"protocol": "shadowsocks", "settings": {"servers": [server]}, "streamSettings": st}


def hysteria2(address, port, st):
    return {"protocol": "hysteria", "settings": {"version": 2, "address": address, "port": port},
            "streamSettings": st}


# --- reading any outbound ----------------------------------------------------------------------------

def facts(ob, name=""):
    """The parts of an outbound (classic or flat form) that checks, ids and labels look at."""
    if not isinstance(ob, dict):
        raise Skip("invalid", "the outbound is not a JSON object", name)
    proto = str(ob.get("protocol") or "").lower()
    settings = ob.get("settings") or {}
    st = ob.get("streamSettings") or {}
    if not isinstance(settings, dict) or not isinstance(st, dict):
        raise Skip("invalid", "settings/streamSettings are not JSON objects", name)
    f = {"protocol": proto, "kind": KINDS.get(proto), "flat": False, "server": {}, "user": {}}
    if proto in ("vless", "vmess") and "address" not in settings:
        f["server"] = _single(settings.get("vnext"), "vnext", name)
        f["user"] = _single(f["server"].get("users"), "users", name)
    elif proto in ("trojan", "shadowsocks") and "address" not in settings:
        f["server"] = f["user"] = _single(settings.get("servers"), "servers", name)
    else:
        f["server"] = f["user"] = settings
        f["flat"] = proto != "hysteria"
    f["address"] = f["server"].get("address")
    f["port"] = f["server"].get("port")
    raw_net = str(st.get("network") or st.get("method") or "tcp").lower()
    f["raw_network"] = raw_net
    f["network"] = NETWORKS.get(raw_net, raw_net)
    f["security"] = str(st.get("security") or "none").lower()
    for key in ("tlsSettings", "realitySettings", "finalmask") + SETTINGS_KEYS.get(f["network"], ()):
        if st.get(key) is not None and not isinstance(st[key], dict):
            raise Skip("invalid", "streamSettings.%s is not a JSON object" % key, name)
    f["tls"] = st.get("tlsSettings") or {}
    f["reality"] = st.get("realitySettings") or {}
    f["transport"] = next((st[k] for k in SETTINGS_KEYS.get(f["network"], ()) if st.get(k)), {})
    f["finalmask"] = st.get("finalmask")
    return f


def _single(items, what, name):
    if not isinstance(items, list) or not items or not isinstance(items[0], dict):
        raise Skip("invalid", '"%s" is missing' % what, name)
    if len(items) > 1:
        raise Skip("unsupported", 'composite entry: %d members in "%s"' % (len(items), what), name)
    return items[0]


# --- judging ---------------------------------------------------------------------------------------------

def is_private(address):
    """Whether Xray >= 26.7.11 lets VLESS/Trojan reach `address` without TLS (a private IP or domain)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        domain = address.lower().rstrip(".")
        return bool(DOTLESS.match(domain)) or any(domain == s or domain.endswith("." + s)
                                                  for s in PRIVATE_SUFFIXES)
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return any(ip in net for net in PRIVATE_NETS if net.version == ip.version)


def _b64url_len(text):
    """Length of raw (unpadded) base64url `text` decoded, or None when it is not that."""
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        return None
    try:
        return len(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError):
        return None


def _fingerprint_ok(fp):
    return fp == "" or fp in FINGERPRINTS or fp.startswith("hello")


def pins_ok(value):
    """pinnedPeerCertSha256: comma list of SHA-256 hex digests (colons allowed), as Xray parses it."""
    items = [v.strip().replace(":", "") for v in str(value).split(",") if v.strip()]
    return bool(items) and all(re.fullmatch(r"[0-9a-fA-F]{64}", v) for v in items)


def _drop_insecure(node, skip):
    """Remove every allowInsecure; a true one is allowed only next to a certificate pin."""
    if isinstance(node, dict):
        if "allowInsecure" in node:
            if node.pop("allowInsecure") and not node.get("pinnedPeerCertSha256"):
                skip("insecure", "TLS certificate checks are off (allowInsecure) and no certificate pin "
                                 "(pcs) is given; current Xray refuses allowInsecure")
        for v in node.values():
            _drop_insecure(v, skip)
    elif isinstance(node, list):
        for v in node:
            _drop_insecure(v, skip)


def check(ob, name=""):
    """A copy of `ob` without allowInsecure, or Skip when Xray would refuse it or it is unsafe."""
    def skip(reason, detail):
        raise Skip(reason, detail, name)

    ob = copy.deepcopy(ob)
    f = facts(ob, name)
    if f["kind"] is None:
        skip("unsupported", "protocol %r is not supported" % (f["protocol"] or "(none)"))
    address, port = f["address"], f["port"]
    if not isinstance(address, str) or not address.strip():
        skip("invalid", "no server address")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        skip("invalid", "the port is not a number from 1 to 65535")
    if address.lower().strip("[]") in PLACEHOLDERS:
        skip("placeholder", "%s is a placeholder address, not a server" % address)
    _check_protocol(f, skip)
    net = f["network"]
    if net in REMOVED_NETWORKS:
        skip("removed-transport", "the %s transport was removed from Xray (24.12.15)" % net)
    if net in ("kcp", "mkcp"):
        skip("unsupported", "the mKCP transport is not supported")
    if net not in NETWORKS.values():
        skip("invalid", "unknown transport %r" % net)
    if (net == "hysteria") != (f["kind"] == "hysteria2"):
        skip("invalid", "the hysteria transport goes only with the hysteria protocol")
    if f["security"] == "xtls":
        skip("unsupported", "legacy XTLS security was removed from Xray")
    if f["security"] not in ("none", "tls", "reality"):
        skip("invalid", "unknown security %r" % f["security"])
    _drop_insecure(ob, skip)
    _check_transport(f, skip)
    if f["security"] == "tls":
        _check_tls(f["tls"], skip)
    if f["security"] == "reality":
        _check_reality(f, skip)
    if f["kind"] == "hysteria2" and f["security"] != "tls":
        skip("invalid", "hysteria2 needs TLS")
    flow = f["user"].get("flow") or ""
    if flow and (net != "tcp" or f["security"] == "none"):
        skip("invalid", "the Vision flow needs the tcp transport with tls or reality")
    if (f["security"] == "none" and not is_private(address)
            and (f["kind"] == "trojan" or (f["kind"] == "vless" and f["user"].get("encryption") in ("none", "")))):
        skip("plaintext", "%s without TLS or REALITY to the public address %s; Xray refuses it since 26.7.11"
             % (f["kind"], address))
    return ob


def _check_protocol(f, skip):
    kind, user = f["kind"], f["user"]
    if kind in ("vless", "vmess"):
        uid = user.get("id")
        if not isinstance(uid, str) or not uid:
            skip("invalid", "no user id")
        size = len(uid.encode())  # Xray maps a non-UUID id of 1..30 bytes to a UUIDv5
        if size > 30 and not (size <= 36 and UUID.match(uid)):
            skip("invalid", "the user id is neither a UUID nor a string of at most 30 bytes")
    if kind == "vless":
        flow = user.get("flow") or ""
        if flow and flow not in VISION:
            skip("unsupported", "flow %r (legacy XTLS) is not supported" % flow)
        enc = str(user.setdefault("encryption", "none") or "none")
        if enc != "none" and not _vless_encryption_ok(enc):
            skip("invalid", "unknown VLESS encryption")
    if kind == "trojan" and not user.get("password"):
        skip("invalid", "no password")
    if kind == "shadowsocks":
        method = str(user.get("method") or "").lower()
        if not user.get("password"):
            skip("invalid", "no password")
        if method in ("none", "plain"):
            skip("unsupported", "cipher %s (no encryption) is not supported by current Xray" % method)
        if method not in SS_AEAD and method not in SS_2022:
            shown = method if re.fullmatch(r"[a-z0-9_-]{1,40}", method) else "(unknown)"  # never a password
            skip("unsupported", "cipher %s is not supported by Xray" % shown)
        if method in SS_2022:
            keys = str(user["password"]).split(":")
            if any(_b64_len(k) != SS_2022[method] for k in keys):
                skip("invalid", "a %s key must be base64 of %d bytes" % (method, SS_2022[method]))
    if kind == "hysteria2" and f["server"].get("version") != 2:
        skip("invalid", "hysteria settings need version 2")


def _vless_encryption_ok(enc):
    """mlkem768x25519plus.<mode>.<rtt>.<keys>: parts of 20+ characters are 32- or 1184-byte keys."""
    parts = enc.split(".")
    return (len(parts) >= 4 and parts[0] == "mlkem768x25519plus" and parts[1] in ("native", "xorpub", "random")
            and parts[2] in ("1rtt", "0rtt") and all(_b64url_len(p) in (32, 1184) for p in parts[3:] if len(p) >= 20))


def _b64_len(text):
    try:
        return len(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        return None


def _check_transport(f, skip):
    t, net = f["transport"], f["network"]
    if net == "tcp" and isinstance(t.get("header"), dict):
        kind = t["header"].get("type") or "none"
        if kind not in ("none", "http"):
            skip("invalid", "tcp header type %r (only none and http)" % kind)
    if net == "xhttp":
        if (t.get("mode") or "auto") not in XHTTP_MODES:
            skip("invalid", "unknown xhttp mode %r" % t.get("mode"))
        if "extra" in t and not isinstance(t["extra"], dict):
            skip("invalid", "xhttp extra is not a JSON object")


def _check_tls(tls, skip):
    fp = str(tls.get("fingerprint") or "").lower()
    if not _fingerprint_ok(fp):
        skip("invalid", "unknown TLS fingerprint %r" % fp)
    if tls.get("pinnedPeerCertSha256") and not pins_ok(tls["pinnedPeerCertSha256"]):
        skip("invalid", "the certificate pin is not a SHA-256 hex digest")


def _check_reality(f, skip):
    r = f["reality"]
    if f["network"] not in ("tcp", "xhttp", "grpc"):
        skip("invalid", "REALITY works only over tcp, xhttp and grpc, not %s" % f["network"])
    if r.get("serverNames") or r.get("shortIds"):
        skip("invalid", "REALITY server settings (serverNames/shortIds) in a client outbound")
    fp = str(r.get("fingerprint") or "").lower()
    if fp in ("unsafe", "hellogolang") or not _fingerprint_ok(fp):
        skip("invalid", "REALITY cannot use the fingerprint %r" % fp)
    if _b64url_len(r.get("publicKey") or r.get("password") or "") != 32:
        skip("invalid", "the REALITY public key (pbk) is not 32 bytes of unpadded base64url")
    sid = r.get("shortId") or ""
    if not isinstance(sid, str) or len(sid) > 16 or len(sid) % 2 or not re.fullmatch(r"[0-9a-fA-F]*", sid):
        skip("invalid", "the REALITY shortId (sid) is not even-length hex of at most 16 characters")
    if not str(r.get("spiderX") or "/").startswith("/"):
        skip("invalid", 'the REALITY spiderX (spx) does not start with "/"')
    if r.get("mldsa65Verify") and _b64url_len(r["mldsa65Verify"]) != 1952:
        skip("invalid", "the REALITY ML-DSA-65 key (pqv) is not 1952 bytes of base64url")


# --- describing a checked outbound ---------------------------------------------------------------------

def server_id(protocol, parts):
    """12 hex digits naming a server: a hash of its protocol and identifying parts (not the name)."""
    text = json.dumps([protocol, parts], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def identity(f):
    """server_id of an outbound's facts. Left out: the name, and REALITY serverName/shortId/spiderX and
    fingerprints, which panels re-randomise on every download."""
    user, t = f["user"], f["transport"]
    secret = {k: user.get(k) for k in ("id", "password", "method", "flow", "encryption") if user.get(k)}
    if f["kind"] == "hysteria2":
        secret["auth"] = t.get("auth", "")
    parts = {"address": str(f["address"]).lower(), "port": f["port"], "secret": secret,
             "network": f["network"], "security": f["security"],
             "transport": {k: t[k] for k in ("path", "host", "serviceName", "authority", "multiMode", "mode",
                                             "header") if t.get(k)},
             "serverName": f["tls"].get("serverName", "") if f["security"] == "tls" else "",
             "publicKey": f["reality"].get("publicKey") or f["reality"].get("password") or "",
             "finalmask": f["finalmask"] or {}}
    return server_id(f["kind"], parts)


def kind_label(f):
    """Short kind for lists: protocol, then network unless tcp, security unless none, "vision"."""
    parts = [SHORT[f["kind"]]]
    if f["kind"] != "hysteria2":
        if f["network"] != "tcp":
            parts.append(f["network"])
        if f["security"] != "none":
            parts.append(f["security"])
    if str(f["user"].get("flow") or "").startswith("xtls-rprx-vision"):
        parts.append("vision")
    return "·".join(parts)
