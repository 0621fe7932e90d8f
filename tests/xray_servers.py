"""Server records as the store holds them, one per outbound kind the generator writes.

Hand-built from research xray-layer.md §3.1/§3.2 and XTLS/Xray-core's infra/conf field names.
Every credential is a made-up test value of the right shape: a REALITY publicKey is base64url of
32 bytes, a pinnedPeerCertSha256 is 64 hex digits, an SS-2022 key is base64 of 16 bytes.
"""

import base64

UUID = "b831381d-6324-4d53-ad4f-8cda48b30811"
PBK = base64.urlsafe_b64encode(bytes(range(1, 33))).decode().rstrip("=")
PCS = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
SS2022_KEY = base64.b64encode(bytes(range(16))).decode()
TLS = {"serverName": "cdn.example.com", "fingerprint": "chrome"}


def server(sid, name, protocol, label, outbound, requires=None):
    settings = outbound["settings"]
    first = (settings.get("vnext") or settings.get("servers") or [settings])[0]
    out = {"id": sid, "name": name, "protocol": protocol, "address": first["address"], "port": first["port"],
           "label": label, "outbound": outbound}
    if requires:
        out["requires"] = requires
    return out


def vless(address, stream, flow="", port=443):
    user = {"id": UUID, "encryption": "none"}
    if flow:
        user["flow"] = flow
    return {"protocol": "vless", "settings": {"vnext": [{"address": address, "port": port, "users": [user]}]},
            "streamSettings": stream}


def vmess(address, stream, port=443):
    return {"protocol": "vmess", "settings": {"vnext": [{"address": address, "port": port, "users": [
        {"id": UUID, "alterId": 0, "security": "auto"}]}]}, "streamSettings": stream}


def trojan(address, stream, port=443):
    return {"protocol": "trojan", "settings": {"servers": [{"address": address, "port": port,
                                                            "password": "trojan-pass"}]},
            "streamSettings": stream}


def ss(method, password, address="ss.example.net", port=8388):
    return {"protocol": "shadowsocks", "settings": {"servers": [
        {"address": address, "port": port, "method": method, "password": password}]}}


def tls(**extra):
    return dict(TLS, **extra)


HY2 = {"protocol": "hysteria", "settings": {"version": 2, "address": "hy.example.net", "port": 443},
       "streamSettings": {"network": "hysteria", "security": "tls",
                          "tlsSettings": {"serverName": "hy.example.net", "alpn": ["h3"], "pinnedPeerCertSha256": PCS},
                          "hysteriaSettings": {"version": 2, "auth": "hy-auth"},
                          "finalmask": {"udp": [{"type": "salamander", "settings": {"password": "obfs-pass"}}]}}}

REALITY = {"network": "tcp", "security": "reality",
           "realitySettings": {"serverName": "www.microsoft.com", "fingerprint": "chrome", "publicKey": PBK,
                               "shortId": "6ba85179e30d4fc2", "spiderX": "/"}}

# name -> server record; every kind the link parsers produce
ALL = {
    "vless-tcp-none": server("a00000000001", "vless plain LAN", "vless", "vless·tcp",
                             vless("192.168.7.2", {"network": "tcp", "security": "none"}, port=8443)),
    "vless-tcp-tls": server("a00000000002", "vless tls", "vless", "vless·tcp·tls", vless(
        "proxy.example.com", {"network": "tcp", "security": "tls", "tlsSettings": tls(
            alpn=["h2", "http/1.1"], pinnedPeerCertSha256=PCS)})),
    "vless-reality-vision": server("a00000000003", "NL Амстердам 🇳🇱", "vless", "vless·reality·vision",
                                   vless("nl.example.com", REALITY, flow="xtls-rprx-vision")),
    "vless-ws-tls": server("a00000000004", "vless ws", "vless", "vless·ws·tls", vless(
        "proxy.example.com", {"network": "ws", "security": "tls", "tlsSettings": tls(),
                              "wsSettings": {"path": "/ws?ed=2048", "host": "cdn.example.com"}})),
    "vless-grpc-tls": server("a00000000005", "vless grpc", "vless", "vless·grpc·tls", vless(
        "proxy.example.com", {"network": "grpc", "security": "tls", "tlsSettings": tls(),
                              "grpcSettings": {"serviceName": "svc", "authority": "cdn.example.com",
                                               "multiMode": True}})),
    "vless-httpupgrade-tls": server("a00000000006", "vless hu", "vless", "vless·httpupgrade·tls", vless(
        "proxy.example.com", {"network": "httpupgrade", "security": "tls", "tlsSettings": tls(),
                              "httpupgradeSettings": {"path": "/hu", "host": "cdn.example.com"}})),
    "vless-xhttp-tls": server("a00000000007", "vless xhttp", "vless", "vless·xhttp·tls", vless(
        "proxy.example.com", {"network": "xhttp", "security": "tls", "tlsSettings": tls(alpn=["h2"]),
                              "xhttpSettings": {"path": "/x", "host": "cdn.example.com", "mode": "auto", "extra": {
                                  "xPaddingBytes": "100-1000", "noGRPCHeader": False,
                                  "xmux": {"maxConcurrency": "16-32", "hKeepAlivePeriod": 0}}}})),
    "vless-tcp-http": server("a00000000008", "vless http header", "vless", "vless·tcp·http", vless(
        "10.20.30.40", {"network": "tcp", "security": "none", "tcpSettings": {"header": {
            "type": "http", "request": {"path": ["/p", "/q"], "headers": {
                "Host": ["h1.example.com", "h2.example.com"]}}}}}, port=80)),
    "vmess-ws-tls": server("a00000000009", "vmess ws", "vmess", "vmess·ws·tls", vmess(
        "vm.example.net", {"network": "ws", "security": "tls", "tlsSettings": tls(),
                           "wsSettings": {"path": "/vm", "host": "cdn.example.com"}})),
    "vmess-tcp-none": server("a0000000000a", "vmess plain", "vmess", "vmess·tcp", vmess(
        "vm.example.net", {"network": "tcp", "security": "none"}, port=10086)),
    "trojan-tcp-tls": server("a0000000000b", "trojan", "trojan", "trojan·tcp·tls", trojan(
        "tj.example.net", {"network": "tcp", "security": "tls", "tlsSettings": tls(serverName="tj.example.net")})),
    "trojan-ws-tls": server("a0000000000c", "trojan ws", "trojan", "trojan·ws·tls", trojan(
        "tj.example.net", {"network": "ws", "security": "tls", "tlsSettings": tls(),
                           "wsSettings": {"path": "/tj", "host": "cdn.example.com"}})),
    "trojan-grpc-tls": server("a0000000000d", "trojan grpc", "trojan", "trojan·grpc·tls", trojan(
        "tj.example.net", {"network": "grpc", "security": "tls", "tlsSettings": tls(),
                           "grpcSettings": {"serviceName": "tjgrpc", "multiMode": False}})),
    "ss-aes-256-gcm": server("a0000000000e", "ss aes", "shadowsocks", "ss·aes-256-gcm",
                             ss("aes-256-gcm", "ss-pass")),
    "ss-chacha20": server("a0000000000f", "ss chacha", "shadowsocks", "ss·chacha20-ietf-poly1305",
                          ss("chacha20-ietf-poly1305", "ss-pass")),
    "ss-2022": server("a00000000010", "ss 2022", "shadowsocks", "ss·2022-blake3-aes-128-gcm",
                      ss("2022-blake3-aes-128-gcm", SS2022_KEY)),
    "hysteria2": server("a00000000011", "hy2 salamander", "hysteria2", "hy2·salamander", HY2, requires="26.1.31"),
}
