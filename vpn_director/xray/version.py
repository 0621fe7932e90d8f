"""`xray version` and the features each Xray version has.

A version is a tuple of three ints, (26, 2, 6); None means unknown (Xray could not be run).
Only Xray-core (XTLS) is supported: v2fly's `v2ray` is recognised by its version line and
refused with a clear reason, because it accepts REALITY, Vision and fingerprints in a config
and then silently ignores them.
"""

import re
import subprocess

from . import XrayError

# Feature -> (first Xray version that has it, first version that refuses it). None: no bound.
# Found in XTLS/Xray-core's history with `git log -S` and `git tag --contains` on infra/conf
# (research xray-layer.md §0 and §3.6).
GATES = {
    "quic-sniffing": ((1, 5, 6), None),
    "ss-2022": ((1, 5, 6), None),
    "vision": ((1, 6, 2), None),
    "reality": ((1, 8, 0), None),
    "httpupgrade": ((1, 8, 9), None),
    "grpc-authority": ((1, 8, 9), None),
    "ws-host": ((1, 8, 10), None),
    "splithttp": ((1, 8, 15), None),  # xhttp's first name
    "xhttp": ((24, 10, 31), None),
    "xhttp-extra": ((24, 11, 11), None),
    "h2-transport": (None, (24, 12, 15)),  # network h2/http: PrintRemovedFeatureError
    "quic-transport": (None, (24, 12, 15)),
    "mldsa65Verify": ((25, 7, 23), None),
    "echConfigList": ((25, 7, 26), None),
    "vless-encryption": ((25, 8, 29), None),
    "flat-outbound": ((25, 9, 10), None),  # settings.address/port without vnext/servers
    "hysteria2": ((26, 1, 13), None),
    "pinnedPeerCertSha256": ((26, 1, 13), None),
    "pinned-cert-list": ((26, 1, 31), None),  # several pins separated by ","
    "finalmask": ((26, 1, 31), None),
    "verifyPeerCertByName": ((26, 1, 31), None),
    "quicParams": ((26, 3, 23), None),
    # fatal from 26.1.31 (26.2.4-26.6.x: only after 2026-06-01, a date check); always from 26.6.22
    "allowInsecure": (None, (26, 1, 31)),
}

# REALITY servers on Xray >= 26.7.11 refuse clients older than this by default (minClientVer,
# XTLS/Xray-core commit af7eb680, infra/conf/transport_security.go).
REALITY_MIN_CLIENT = (26, 3, 27)

_XRAY_RE = re.compile(r"^Xray (\d+)\.(\d+)\.(\d+)\b", re.M)
_V2FLY_RE = re.compile(r"^V2Ray (\d+\.\d+\.\d+)", re.M)


def parse(text):
    """The version from `xray version` output; XrayError for v2fly's V2Ray or anything else."""
    m = _XRAY_RE.search(text)
    if m:
        return tuple(int(g) for g in m.groups())
    m = _V2FLY_RE.search(text)
    if m:
        raise XrayError("the xray command is V2Ray %s (v2fly), not Xray-core: v2fly is not supported "
                        "(it ignores REALITY and Vision); install Xray-core" % m.group(1))
    first = text.strip().splitlines()[0][:80] if text.strip() else "nothing"
    raise XrayError("not an Xray version line: %r" % first)


def detect(argv, timeout=10):
    """Run `argv + ["version"]` (no shell): the version, or None if it cannot be run or fails.
    A command that answers as v2fly or with an unknown line raises XrayError (parse)."""
    try:
        p = subprocess.run(list(argv) + ["version"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    out = p.stdout.decode("utf-8", errors="replace")
    if p.returncode != 0 and not _V2FLY_RE.search(out):
        return None
    return parse(out)


def _tuple(v):
    if isinstance(v, str):
        parts = v.split(".")
        if len(parts) != 3 or not all(x.isdigit() for x in parts):
            raise ValueError("not a version: %r" % (v,))
        return tuple(int(x) for x in parts)
    return tuple(v)


def text(v):
    """(26, 2, 6) -> "26.2.6"; None -> "unknown"."""
    return "unknown" if v is None else "%d.%d.%d" % tuple(v)


def at_least(v, minimum):
    """Whether version v is `minimum` ("26.1.31" or a tuple) or newer; an unknown v is not."""
    return v is not None and tuple(v) >= _tuple(minimum)


def features(outbound):
    """The GATES features the generated config for this outbound uses, in GATES order (read from
    the outbound's JSON shape; the TPROXY inbound's QUIC sniffing is always there)."""
    ss = outbound.get("streamSettings") or {}
    net = str(ss.get("network") or "tcp").lower()
    sec = str(ss.get("security") or "none").lower()
    tls = ss.get("tlsSettings") or {}
    settings = outbound.get("settings") or {}
    users = _users(settings)
    pins = str(tls.get("pinnedPeerCertSha256") or "")
    found = {
        "quic-sniffing": True,
        "ss-2022": outbound.get("protocol") == "shadowsocks" and any(
            str(x.get("method", "")).lower().startswith("2022-") for x in (settings.get("servers") or [settings])
            if isinstance(x, dict)),
        "vision": any(str(u.get("flow", "")).startswith("xtls-rprx-vision") for u in users),
        "reality": sec == "reality",
        "httpupgrade": net == "httpupgrade",
        "grpc-authority": bool((ss.get("grpcSettings") or {}).get("authority")),
        "ws-host": net in ("ws", "websocket") and bool((ss.get("wsSettings") or {}).get("host")),
        "splithttp": net == "splithttp",
        "xhttp": net == "xhttp",
        "xhttp-extra": "extra" in (ss.get("xhttpSettings") or ss.get("splithttpSettings") or {}),
        "h2-transport": net in ("h2", "h3", "http"),
        "quic-transport": net == "quic",
        "mldsa65Verify": bool((ss.get("realitySettings") or {}).get("mldsa65Verify")),
        "echConfigList": bool(tls.get("echConfigList")),
        "vless-encryption": outbound.get("protocol") == "vless"
        and any(u.get("encryption", "none") != "none" for u in users),
        "flat-outbound": outbound.get("protocol") in ("vless", "vmess", "trojan", "shadowsocks")
        and "address" in settings,
        "hysteria2": outbound.get("protocol") == "hysteria",
        "pinnedPeerCertSha256": bool(tls.get("pinnedPeerCertSha256")),
        "pinned-cert-list": "," in pins,
        "finalmask": bool(ss.get("finalmask")),
        "verifyPeerCertByName": bool(tls.get("verifyPeerCertByName")),
        "quicParams": bool((ss.get("finalmask") or {}).get("quicParams")),
        "allowInsecure": any(str(k).lower() == "allowinsecure" for k in tls),  # Go matches keys in any case
    }
    return [name for name in GATES if found.get(name)]


def requires(outbound):
    """The lowest Xray version ("26.1.31") that builds this outbound (the newest first version of
    the gated features it uses), or None when it uses none; stored with each server."""
    firsts = [GATES[name][0] for name in features(outbound) if name != "quic-sniffing" and GATES[name][0]]
    return text(max(firsts)) if firsts else None


def _users(settings):
    out = []
    for entry in settings.get("vnext") or []:
        out.extend(u for u in entry.get("users") or [] if isinstance(u, dict))
    return out


def check(server, v):
    """Raise XrayError when this Xray cannot run the server's outbound: its "requires" or a
    feature it uses is newer than v, or it uses something v has removed. v None: no check."""
    if v is None:
        return
    what = "%s (%s)" % (_quote(server.get("name") or server.get("id") or "?"),
                        server.get("label") or server.get("protocol") or "?")
    needs = []
    if server.get("requires"):
        try:
            needs.append((_tuple(server["requires"]), None))
        except (TypeError, ValueError):
            raise XrayError("server %s: %r is not an Xray version" % (what, server["requires"])) from None
    for name in features(server.get("outbound") or {}):
        first, removed = GATES[name]
        if removed is not None and at_least(v, removed):
            raise XrayError("server %s uses %s, which Xray %s and newer refuse; this router has %s"
                            % (what, name, text(removed), text(v)))
        if first is not None:
            needs.append((first, name))
    if not needs:
        return
    first, name = max(needs, key=lambda n: n[0])
    if not at_least(v, first):
        raise XrayError("server %s needs Xray %s or newer%s; this router has %s"
                        % (what, text(first), " (%s)" % name if name else "", text(v)))


def _quote(name):
    return "'%s'" % str(name).replace("\n", " ")[:64]


def reality_hint(v):
    """A hint for a REALITY server that fails on an Xray older than REALITY_MIN_CLIENT; "" if
    this Xray is new enough."""
    if at_least(v, REALITY_MIN_CLIENT):
        return ""
    now = "this router's Xray version is unknown" if v is None else "this router has Xray %s" % text(v)
    return ("REALITY servers on Xray 26.7.11 and newer refuse clients older than %s by default; %s: "
            "upgrade Xray" % (text(REALITY_MIN_CLIENT), now))
