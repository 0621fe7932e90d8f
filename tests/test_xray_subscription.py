"""Subscription bodies (base64, link lists, Xray JSON, SIP008; Clash YAML, sing-box and HTML refused),
the 50-entry fixture's counts per skip reason, the response headers, and fetch() against a local
HTTP server on 127.0.0.1 (no internet): errors name the host, never the token."""

import base64
import json
import os
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from vpn_director.xray import Skip, XrayError, links
from vpn_director.xray import subscription as sub

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data", "xray_links")
CASES = {c["case"]: c for c in json.load(open(os.path.join(DATA, "cases.json"), encoding="utf-8"))}
U = "b831381d-6324-4d53-ad4f-8cda48b30811"
PBK = "Pu7Q55Yzv_v0ExfYwYNz2jJFMKNlZcyEMsXIfwXzB5c"
PICK = ["vless reality vision", "vmess base64 JSON ws tls, string port, aid 64, scy none", "trojan ws tls",
        "ss 2022 plain", "hy2 salamander obfs", "vless allowInsecure without pin", "placeholder 0.0.0.0"]
LIST = "\n".join(CASES[c]["link"] for c in PICK) + "\n"


def summary(entries):
    return [(e["id"], e["name"]) if isinstance(e, dict) else (e.reason, e.name) for e in entries]


EXPECTED = [(CASES[c]["server"]["id"], CASES[c]["server"]["name"]) if "server" in CASES[c]
            else (CASES[c]["skip"], CASES[c]["skip_name"]) for c in PICK]


# --- link lists and base64 ------------------------------------------------------------------------

def test_plain_list_gives_the_golden_entries_in_order():
    entries = sub.parse_body(LIST.encode())
    assert summary(entries) == EXPECTED
    assert entries[0] == CASES["vless reality vision"]["server"]


def test_comments_blank_lines_crlf_bom_nul_and_notices_are_not_entries():
    body = ("\ufeff#profile-title: My VPN\r\n# a comment\r\n\r\nhttps://panel.example.com/renew\r\n"
            "Your plan expires soon\r\n" + LIST.replace("\n", "\r\n") + "\x00\r\n   \r\n")
    assert summary(sub.parse_body(body.encode())) == EXPECTED


def b64_variants():
    raw = LIST.encode()
    std = base64.b64encode(raw).decode()
    return {"standard": std, "url-safe": base64.urlsafe_b64encode(raw).decode(),
            "no padding": std.rstrip("="), "url-safe no padding": base64.urlsafe_b64encode(raw).decode().rstrip("="),
            "wrapped at 76": "\n".join(std[i:i + 76] for i in range(0, len(std), 76)),
            "wrapped CRLF with spaces": "  " + "\r\n".join(std[i:i + 64] for i in range(0, len(std), 64)) + "\r\n"}


@pytest.mark.parametrize("kind", sorted(b64_variants()))
def test_base64_bodies(kind):
    body = b64_variants()[kind]
    assert "=" in body or "no padding" in kind or len(LIST.encode()) % 3 == 0
    assert summary(sub.parse_body(body.encode())) == EXPECTED


def test_later_duplicates_are_dropped_silently():
    link = CASES["trojan ws tls"]["link"]
    body = "\n".join([link, link.replace("#trojan-ws", "#again"), CASES["ss 2022 plain"]["link"]])
    entries = sub.parse_body(body.encode())
    assert [e["name"] for e in entries] == ["trojan-ws", "ss-2022"]
    assert sub.counts(entries) == {"stored": 2}


def test_one_bad_line_never_aborts():
    body = "vless://%s@a.example.com:443?security=tls&path=%%zz#bad\nnot-a-scheme://x\n%s\n" % (
        U, CASES["trojan ws tls"]["link"])
    entries = sub.parse_body(body.encode())
    assert [type(e) for e in entries] == [Skip, Skip, dict]
    assert sub.counts(entries) == {"stored": 1, "unsupported": 1, "invalid": 1}


def test_the_50_entry_subscription_counts_per_reason():
    data = open(os.path.join(DATA, "sub50.txt"), "rb").read()
    expected = {"stored": 30, "unsupported": 4, "invalid": 5, "insecure": 3, "plaintext": 2, "removed-transport": 3,
                "placeholder": 3}
    entries = sub.parse_body(data)
    assert len(entries) == 50 and sub.counts(entries) == expected
    assert sum(isinstance(e, Skip) for e in entries) == 20
    assert list(sub.counts(entries)) == ["stored", "unsupported", "invalid", "insecure", "plaintext",
                                         "removed-transport", "placeholder"]
    text = data.decode("utf-8-sig").replace("\r\n", "\n")
    links_only = "\n".join(line for line in text.splitlines() if "://" in line and not line.startswith("https"))
    assert sub.counts(sub.parse_body(base64.b64encode(links_only.encode()))) == expected


# --- refused bodies ---------------------------------------------------------------------------------

@pytest.mark.parametrize("body, words", [
    (b"", "the subscription is empty"),
    (b"\xef\xbb\xbf \x00\r\n\t", "the subscription is empty"),
    (b"mixed-port: 7890\nproxies:\n  - name: a\n    type: vless\n    server: a.example.com\n", "Clash YAML"),
    (b"proxy-groups:\n  - name: auto\n", "Clash YAML"),
    (b"<!DOCTYPE html>\n<html><body>Login</body></html>", "web page (HTML)"),
    (b"  <html><head><title>502 Bad Gateway</title></head></html>", "web page (HTML)"),
    (b'{"log":{},"outbounds":[{"type":"vless","tag":"proxy","server":"a.example.com"},{"type":"direct"}]}',
     "sing-box"),
    (b"@@@ definitely not a subscription @@@", "unrecognised subscription format"),
    (base64.b64encode(b"just words, no links"), "unrecognised subscription format"),
    (b'{"outbounds": [', "looks like JSON but does not parse"),
    (b'{"hello": "world"}', "unrecognised JSON"),
])
def test_refused_bodies_say_why(body, words):
    with pytest.raises(XrayError) as e:
        sub.parse_body(body)
    assert words in str(e.value)


def test_clash_and_sing_box_say_what_to_change():
    for body in (b"proxies:\n  - {name: a}\n", b'[{"outbounds":[{"type":"shadowsocks"}]}]'):
        with pytest.raises(XrayError) as e:
            sub.parse_body(body)
        assert "set the subscription's user_agent, e.g. v2rayN/7.0" in str(e.value)


# --- Xray JSON and SIP008 -------------------------------------------------------------------------------

REALITY_OB = {
    "tag": "proxy", "protocol": "vless", "sendThrough": "0.0.0.0", "mux": {"enabled": False},
    "settings": {"vnext": [{"address": "proxy.example.com", "port": 443,
                            "users": [{"id": U, "encryption": "none", "flow": "xtls-rprx-vision"}]}]},
    "streamSettings": {"network": "tcp", "security": "reality",
                       "realitySettings": {"serverName": "www.microsoft.com", "fingerprint": "chrome",
                                           "publicKey": PBK, "shortId": "6ba85179e30d4fc2", "spiderX": "/"},
                       "sockopt": {"mark": 255, "interface": "eth0", "tproxy": "off", "tcpFastOpen": True}}}


def config(remarks, *proxies, extra=()):
    return {"remarks": remarks, "log": {"loglevel": "warning"}, "dns": {"servers": ["1.1.1.1"]},
            "inbounds": [{"port": 10808, "protocol": "socks"}],
            "outbounds": list(proxies) + [{"tag": "direct", "protocol": "freedom"},
                                          {"tag": "block", "protocol": "blackhole"}] + list(extra),
            "routing": {"rules": [{"type": "field", "outboundTag": "direct", "ip": ["geoip:private"]}]}}


def test_single_xray_config_gives_its_proxy_outbound_stripped():
    entries = sub.parse_body(json.dumps(config("🇩🇪 Frankfurt", REALITY_OB)).encode())
    assert len(entries) == 1
    s = entries[0]
    assert s == {
        "id": CASES["vless reality vision"]["server"]["id"], "name": "🇩🇪 Frankfurt", "protocol": "vless",
        "address": "proxy.example.com", "port": 443, "label": "vless·reality·vision", "requires": "1.8.0",
        "outbound": {
            "protocol": "vless", "mux": {"enabled": False},
            "settings": {"vnext": [{"address": "proxy.example.com", "port": 443,
                                    "users": [{"id": U, "encryption": "none", "flow": "xtls-rprx-vision"}]}]},
            "streamSettings": {"network": "tcp", "security": "reality",
                               "realitySettings": {"serverName": "www.microsoft.com", "fingerprint": "chrome",
                                                   "publicKey": PBK, "shortId": "6ba85179e30d4fc2", "spiderX": "/"},
                               "sockopt": {"tcpFastOpen": True}}}}
    # the same server as its share link: same id, same outbound once mux/sockopt are set aside
    link = CASES["vless reality vision"]["server"]["outbound"]
    assert {k: v for k, v in s["outbound"].items() if k != "mux"}["settings"] == link["settings"]


def with_stream(ob, **stream):
    return dict(ob, streamSettings=dict(ob["streamSettings"], **stream))


def test_json_array_entries_are_judged_like_links():
    vnext = REALITY_OB["settings"]["vnext"][0]
    plain = dict(REALITY_OB, settings={"vnext": [dict(vnext, users=[{"id": U, "encryption": "none"}])]},
                 streamSettings={"network": "tcp", "security": "none"})
    insecure = with_stream(REALITY_OB, security="tls", tlsSettings={"serverName": "a.example.com",
                                                                    "allowInsecure": True})
    pinned = with_stream(REALITY_OB, security="tls", tlsSettings={"allowInsecure": True,
                                                                  "pinnedPeerCertSha256": "AB:" * 31 + "AB"})
    body = [
        config("ok", REALITY_OB),
        config("balancer", REALITY_OB, dict(REALITY_OB, tag="proxy2")),
        config("chain", with_stream(REALITY_OB, sockopt={"dialerProxy": "fragment"}),
               extra=[{"tag": "fragment", "protocol": "freedom", "settings": {"fragment": {"packets": "tlshello"}}}]),
        config("proxySettings", dict(REALITY_OB, proxySettings={"tag": "other"})),
        config("two servers", dict(REALITY_OB, settings={"vnext": [vnext, vnext]})),
        config("plaintext", plain),
        config("insecure", insecure),
        config("pinned", pinned),
        config("h2", with_stream(REALITY_OB, network="h2", security="tls")),
        config("kcp", with_stream(REALITY_OB, network="kcp", security="none")),
        config("placeholder", dict(REALITY_OB, settings={"vnext": [dict(vnext, address="0.0.0.0")]})),
        config("bad sid", with_stream(REALITY_OB, realitySettings=dict(REALITY_OB["streamSettings"]["realitySettings"],
                                                                         shortId="xyz"))),
        config("socks", {"protocol": "socks", "settings": {"servers": [{"address": "s.example.com", "port": 1080}]}}),
        config("no proxy"),
        "not an object",
    ]
    entries = sub.parse_body(json.dumps(body).encode())
    got = [(e.reason, e.name) if isinstance(e, Skip) else ("stored", e["name"]) for e in entries]
    assert got == [("stored", "ok"), ("unsupported", "balancer"), ("unsupported", "chain"),
                   ("unsupported", "proxySettings"), ("unsupported", "two servers"), ("plaintext", "plaintext"),
                   ("insecure", "insecure"), ("stored", "pinned"), ("removed-transport", "h2"), ("unsupported", "kcp"),
                   ("placeholder", "placeholder"), ("invalid", "bad sid"), ("unsupported", "socks"),
                   ("invalid", "no proxy"), ("invalid", "")]
    assert entries[7]["outbound"]["streamSettings"]["tlsSettings"] == {"pinnedPeerCertSha256": "AB:" * 31 + "AB"}
    assert "allowInsecure" not in json.dumps([e for e in entries if isinstance(e, dict)])
    for e in entries:
        if isinstance(e, Skip):
            assert U not in e.detail and PBK not in e.detail


def test_json_entry_without_remarks_is_named_by_address():
    cfg = config("", REALITY_OB)
    del cfg["remarks"]
    assert sub.parse_body(json.dumps([cfg]).encode())[0]["name"] == "proxy.example.com:443"


def test_base64_of_xray_json():
    body = base64.b64encode(json.dumps([config("b64", REALITY_OB)]).encode())
    assert [e["name"] for e in sub.parse_body(body)] == ["b64"]


def test_sip008():
    key = base64.b64encode(b"k" * 16).decode()
    doc = {"version": 1, "servers": [
        {"id": "1", "remarks": "SS one", "server": "ss.example.com", "server_port": 8388, "password": "pw1",
         "method": "aes-256-gcm"},
        {"remarks": "SS obfs", "server": "ss.example.com", "server_port": "8389", "password": "pw2",
         "method": "chacha20-ietf-poly1305", "plugin": "obfs-local",
         "plugin_opts": "obfs=http;obfs-host=b.example.com"},
        {"remarks": "SS 2022", "server": "2001:db8::8", "server_port": 443, "password": key,
         "method": "2022-blake3-aes-128-gcm"},
        {"remarks": "cfb", "server": "ss.example.com", "server_port": 1, "password": "x", "method": "aes-256-cfb"},
        {"remarks": "no port", "server": "ss.example.com", "password": "x", "method": "aes-256-gcm"},
    ]}
    entries = sub.parse_body(json.dumps(doc).encode())
    assert [e["name"] if isinstance(e, dict) else (e.reason, e.name) for e in entries] == [
        "SS one", "SS obfs", "SS 2022", ("unsupported", "cfb"), ("invalid", "no port")]
    assert entries[0]["outbound"] == links.parse("ss://aes-256-gcm:pw1@ss.example.com:8388")["outbound"]
    assert entries[1]["outbound"]["streamSettings"]["tcpSettings"]["header"]["request"]["headers"] == {
        "Host": ["b.example.com"]}
    assert entries[2]["address"] == "2001:db8::8" and entries[2]["requires"] == "1.5.6"
    bare = sub.parse_body(json.dumps(doc["servers"][:1]).encode())
    assert [e["name"] for e in bare] == ["SS one"]


# --- counts and headers ---------------------------------------------------------------------------------

def test_counts_lists_stored_first_and_only_reasons_seen():
    assert sub.counts([]) == {"stored": 0}
    entries = [{"id": "a"}, Skip("plaintext", "x"), Skip("invalid", "y"), Skip("plaintext", "z")]
    assert sub.counts(entries) == {"stored": 1, "invalid": 1, "plaintext": 2}


def test_userinfo():
    headers = {"subscription-userinfo": "upload=1024; download=2048;total=107374182400; expire=1767225600"}
    assert sub.userinfo(headers) == {"upload": 1024, "download": 2048, "total": 107374182400, "expire": 1767225600}
    assert sub.userinfo({"Subscription-Userinfo": "upload=0; download=5.0e3; total=; expire=never"}) == {
        "upload": 0, "download": 5000}
    assert sub.userinfo({}) == {}


@pytest.mark.parametrize("value, hours", [("12", 12), ("0", 1), ("0.5", 1), ("24.9", 24), ("", None),
                                          ("soon", None), (None, None)])
def test_interval_hours(value, hours):
    headers = {} if value is None else {"profile-update-interval": value}
    assert sub.interval_hours(headers) == hours


@pytest.mark.parametrize("url, shown", [
    ("https://sub.example.com/api/sub/TOKEN123", "https://sub.example.com/…"),
    ("https://sub.example.com/?token=TOKEN123", "https://sub.example.com/…"),
    ("HTTP://user:TOKEN123@Sub.Example.com:8443/x", "http://sub.example.com:8443/…"),
    ("https://[2001:db8::1]:2096/sub/TOKEN123#frag", "https://[2001:db8::1]:2096/…"),
    ("https://sub.example.com", "https://sub.example.com"),
    ("TOKEN123", "<subscription URL>"),
    ("https://[bad/TOKEN123", "<subscription URL>"),
])
def test_redact(url, shown):
    assert sub.redact(url) == shown


# --- fetch ----------------------------------------------------------------------------------------------

BODY = base64.b64encode(LIST.encode())


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, code, body, headers=()):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.server.seen.append((self.path, self.headers.get("User-Agent")))
        kind = self.path.split("/")[1]
        if kind == "sub":
            self.send(200, BODY, [("Subscription-Userinfo", "upload=1; download=2; total=3; expire=4"),
                                  ("Profile-Update-Interval", "6"), ("Content-Type", "text/plain")])
        elif kind == "big":
            self.send(200, b"A" * 5000)
        elif kind == "slow":
            self.server.stopping.wait(5)
            self.send(200, BODY)
        elif kind == "redirect":
            self.send(302, b"", [("Location", "/sub/TOKEN123")])
        else:
            self.send(404, b"no such subscription TOKEN123")


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.block_on_close = False
    httpd.seen, httpd.stopping = [], threading.Event()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, "http://127.0.0.1:%d" % httpd.server_address[1]
    httpd.stopping.set()
    httpd.shutdown()
    httpd.server_close()


def test_fetch_returns_the_body_and_lower_case_headers(server):
    httpd, base = server
    body, headers = sub.fetch(base + "/sub/TOKEN123?x=1", "v2rayN/7.0")
    assert body == BODY
    assert headers["subscription-userinfo"] == "upload=1; download=2; total=3; expire=4"
    assert sub.userinfo(headers) == {"upload": 1, "download": 2, "total": 3, "expire": 4}
    assert sub.interval_hours(headers) == 6
    assert httpd.seen == [("/sub/TOKEN123?x=1", "v2rayN/7.0")]
    assert summary(sub.parse_body(body)) == EXPECTED


def test_fetch_default_user_agent_redirects_and_opener(server):
    httpd, base = server
    body, _ = sub.fetch(base + "/redirect/TOKEN123", "", opener=urllib.request.build_opener())
    assert body == BODY
    assert [ua for _, ua in httpd.seen] == ["vpn-director", "vpn-director"]


@pytest.mark.parametrize("path, kwargs, words", [
    ("/missing/TOKEN123", {}, "answered HTTP 404"),
    ("/big/TOKEN123", {"max_bytes": 1000}, "larger than 1000 bytes"),
    ("/slow/TOKEN123", {"timeout": 0.5}, "timed out after 0.5 s"),
])
def test_fetch_errors_name_the_host_not_the_token(server, path, kwargs, words):
    _, base = server
    url = base + path + "?key=TOKEN123"
    with pytest.raises(XrayError) as e:
        sub.fetch(url, "vpn-director", **kwargs)
    message = str(e.value)
    assert words in message and sub.redact(url) in message
    assert "TOKEN123" not in message and path not in message


def test_fetch_refused_connection_and_bad_scheme_keep_the_token_out():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    for url in ("http://127.0.0.1:%d/sub/TOKEN123" % port, "ftp://sub.example.com/TOKEN123",
                "sub.example.com/TOKEN123", "http://[::1/TOKEN123"):
        with pytest.raises(XrayError) as e:
            sub.fetch(url, "vpn-director", timeout=2)
        assert "TOKEN123" not in str(e.value), str(e.value)


def test_fetch_with_an_opener_that_fails_in_its_own_words():
    class Opener:
        def open(self, request, timeout):
            raise OSError("could not reach %s" % request.full_url)
    with pytest.raises(XrayError) as e:
        sub.fetch("https://sub.example.com/TOKEN123", "ua", opener=Opener())
    assert str(e.value) == "cannot fetch https://sub.example.com/…: OSError"
