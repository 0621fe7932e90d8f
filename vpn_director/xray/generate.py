"""A server's outbound + the config -> the router's Xray config file (deterministic bytes).

One file, research xray-layer.md §3.3: a dokodemo-door TPROXY inbound on
advanced.xray.tproxy_port (what our iptables TPROXY rules deliver to), a SOCKS inbound on
127.0.0.1:advanced.xray.socks_port (the end-to-end probe and the bot), the server's outbound
tagged "proxy", "direct" and "block", and routing: private ranges direct, BitTorrent per
xray.bittorrent, everything else from our inbounds through the proxy. Classic field names only
(vnext/servers, network, dokodemo-door, "type":"field"), which every Xray since 1.8 reads.

The same server and config always give the same bytes: the fixed parts are built in a fixed key
order and the server's outbound is written with its keys in one canonical order (FIRST, then
sorted; lists keep their order), so a re-import that only reorders keys changes nothing on disk.

With xray.dns "xray" (our iptables rules then TPROXY Xray clients' port 53 here), the file also
has a "dns" outbound, a first routing rule sending port 53 from the TPROXY inbound to it, and a
"dns" section whose servers (xray.dns_servers) Xray queries through the proxy: its own queries
carry the inbound tag DNS_TAG and a rule sends them to "proxy" ahead of the private-range rule.
The dns outbound answers A/AAAA queries from that section; anything else it would forward itself,
so it dials through the proxy too (sockopt.dialerProxy). With "router" the file is as before.
"""

import json

from . import XrayError

TPROXY_TAG = "tproxy-in"
SOCKS_TAG = "socks-in"
DNS_TAG = "dns-query"  # Xray's own DNS queries (the dns section), routed through the proxy
DNS_OUT = "dns-out"
OUTBOUND_PROTOCOLS = ("vless", "vmess", "trojan", "shadowsocks", "hysteria")
OUTBOUND_KEYS = ("protocol", "settings", "streamSettings", "mux")
# Keys written first wherever they occur in the server's outbound (the rest sorted), so the file
# reads like Xray's documentation: a mask's or header's type before its settings, address before
# users, network before its settings.
FIRST = ("type", "address", "port", "network", "security")
# A safety net only: our iptables rules already RETURN these destinations before TPROXY.
# Explicit CIDRs, not geoip:private, which needs geoip.dat (not every install has it).
PRIVATE = ("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
           "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/4", "255.255.255.255/32")


def ports(cfg):
    """(TPROXY port, SOCKS port) Xray listens on with this config: what readiness waits for."""
    return cfg.xray.tproxy_port, cfg.xray.side.socks_port


def proxy_outbound(server):
    """The server's outbound tagged "proxy" (tag first, the rest with sorted keys). XrayError if
    it is not an outbound we generate for or it carries allowInsecure (a fatal error in current
    Xray, and one bad outbound stops the whole process)."""
    ob = server.get("outbound")
    if not isinstance(ob, dict) or ob.get("protocol") not in OUTBOUND_PROTOCOLS:
        raise XrayError("server %s: no usable outbound (protocol %r)"
                        % (_name(server), ob.get("protocol") if isinstance(ob, dict) else None))
    extra = sorted(k for k in ob if k not in OUTBOUND_KEYS and k != "tag")
    if extra:
        raise XrayError("server %s: outbound key %s is not supported" % (_name(server), ", ".join(extra)))
    if has_key(ob, "allowInsecure"):
        raise XrayError("server %s: the outbound contains allowInsecure, which Xray refuses "
                        "(pin the certificate with pinnedPeerCertSha256 instead)" % _name(server))
    out = {"tag": "proxy"}
    for key in OUTBOUND_KEYS:
        if key in ob:
            out[key] = _sorted(ob[key])
    return out


def config(cfg, server, error_log):
    """The router's Xray config for one server as plain data (render gives the file's bytes)."""
    side = cfg.xray.side
    tproxy_port, socks_port = ports(cfg)
    rules = []
    if cfg.xray.dns == "xray":
        rules += [{"type": "field", "inboundTag": [TPROXY_TAG], "port": "53", "outboundTag": DNS_OUT},
                  {"type": "field", "inboundTag": [DNS_TAG], "outboundTag": "proxy"}]
    rules.append({"type": "field", "ip": list(PRIVATE), "outboundTag": "direct"})
    if side.bittorrent in ("block", "direct"):
        rules.append({"type": "field", "protocol": ["bittorrent"], "outboundTag": side.bittorrent})
    rules.append({"type": "field", "inboundTag": [TPROXY_TAG, SOCKS_TAG], "outboundTag": "proxy"})
    doc = {
        "log": {"loglevel": "warning", "access": "none", "error": error_log},
        "inbounds": [
            {
                "tag": TPROXY_TAG, "listen": "0.0.0.0", "port": tproxy_port, "protocol": "dokodemo-door",
                "settings": {"network": "tcp,udp", "followRedirect": True},
                "sniffing": {"enabled": True, "destOverride": ["http", "tls", "quic"], "routeOnly": False},
                "streamSettings": {"sockopt": {"tproxy": "tproxy"}},
            },
            {
                "tag": SOCKS_TAG, "listen": "127.0.0.1", "port": socks_port, "protocol": "socks",
                "settings": {"auth": "noauth", "udp": True},
                "sniffing": {"enabled": True, "destOverride": ["http", "tls"], "routeOnly": True},
            },
        ],
        "outbounds": [
            proxy_outbound(server),
            {"tag": "direct", "protocol": "freedom", "settings": {"domainStrategy": "UseIPv4"}},
            {"tag": "block", "protocol": "blackhole", "settings": {}},
        ],
        "routing": {"domainStrategy": "AsIs", "rules": rules},
    }
    if cfg.xray.dns == "xray":
        doc["outbounds"].append({"tag": DNS_OUT, "protocol": "dns", "settings": {},
                                 "streamSettings": {"sockopt": {"dialerProxy": "proxy"}}})
        doc["dns"] = {"tag": DNS_TAG, "servers": list(cfg.xray.dns_servers), "queryStrategy": "UseIPv4"}
    return doc


def render(cfg, server, error_log):
    """The config file's bytes: 2-space JSON, UTF-8 as is, one trailing newline."""
    if not isinstance(error_log, str) or not error_log:
        raise XrayError("no error log path for the Xray config")
    return (json.dumps(config(cfg, server, error_log), indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _sorted(value):
    if isinstance(value, dict):
        keys = [k for k in FIRST if k in value] + sorted(k for k in value if k not in FIRST)
        return {k: _sorted(value[k]) for k in keys}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def has_key(value, key):
    """Whether `key` is a key anywhere in value, in any letter case: Xray reads its JSON with Go's
    encoding/json, which matches keys case-insensitively ("AllowInsecure" is allowInsecure)."""
    key = key.lower()
    if isinstance(value, dict):
        return any(str(k).lower() == key or has_key(v, key) for k, v in value.items())
    if isinstance(value, list):
        return any(has_key(v, key) for v in value)
    return False


def _name(server):
    return "'%s'" % str(server.get("name") or server.get("id") or "?").replace("\n", " ")[:64]
