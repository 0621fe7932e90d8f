"""The generated Xray config (golden files) and the Xray version gates; no Xray needed.

Set VPD_UPDATE_GOLDEN=1 to rewrite tests/data/xray_generated/ after a deliberate change, then
read the diff: the files are what a router's Xray is given.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import xray_servers as xs
from vpn_director import config
from vpn_director.xray import XrayError, generate, version

GOLDEN_DIR = Path(__file__).parent / "data" / "xray_generated"
GOLDEN = ("vless-reality-vision", "trojan-ws-tls", "vmess-ws-tls", "ss-2022", "hysteria2")
ERROR_LOG = "/tmp/vpn-director/xray-error.log"


def make_cfg(bittorrent=None, tproxy_port=23456, socks_port=23457, **xray):
    raw = {"advanced": {"xray": {"tproxy_port": tproxy_port, "socks_port": socks_port}}}
    if bittorrent:
        xray["bittorrent"] = bittorrent
    if xray:
        raw["xray"] = xray
    return config.validate(raw)


def doc(server=None, **kw):
    return json.loads(generate.render(make_cfg(**kw), server or xs.ALL["vless-reality-vision"], ERROR_LOG))


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_file(name):
    data = generate.render(make_cfg(), xs.ALL[name], ERROR_LOG)
    path = GOLDEN_DIR / (name + ".json")
    if os.environ.get("VPD_UPDATE_GOLDEN"):
        GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    assert data == path.read_bytes()


def test_golden_file_with_xray_dns():
    """xray.dns "xray": the DNS route, the dns outbound and section (the default servers)."""
    data = generate.render(make_cfg(dns="xray"), xs.ALL["vless-reality-vision"], ERROR_LOG)
    path = GOLDEN_DIR / "vless-reality-vision.dns-xray.json"
    if os.environ.get("VPD_UPDATE_GOLDEN"):
        path.write_bytes(data)
    assert data == path.read_bytes()


def test_xray_dns_parts():
    d = doc(dns="xray", dns_servers=["9.9.9.9"])
    rules = d["routing"]["rules"]
    assert rules[:3] == [
        {"type": "field", "inboundTag": ["tproxy-in"], "port": "53", "outboundTag": "dns-out"},
        {"type": "field", "inboundTag": ["dns-query"], "outboundTag": "proxy"},
        {"type": "field", "ip": list(generate.PRIVATE), "outboundTag": "direct"}]  # DNS to the router: ahead of it
    assert d["outbounds"][-1] == {"tag": "dns-out", "protocol": "dns", "settings": {},
                                  "streamSettings": {"sockopt": {"dialerProxy": "proxy"}}}
    assert d["dns"] == {"tag": "dns-query", "servers": ["9.9.9.9"], "queryStrategy": "UseIPv4"}
    assert doc(dns="xray")["dns"]["servers"] == ["1.1.1.1", "8.8.8.8"]
    plain = doc(dns="router")
    assert "dns" not in plain and [o["tag"] for o in plain["outbounds"]] == ["proxy", "direct", "block"]
    assert generate.render(make_cfg(dns="router"), xs.ALL["ss-2022"], ERROR_LOG) == \
        generate.render(make_cfg(), xs.ALL["ss-2022"], ERROR_LOG)  # the default: byte for byte as before


def test_file_format_is_two_space_json_utf8_with_one_newline():
    data = generate.render(make_cfg(), xs.ALL["vless-reality-vision"], "/var/log/журнал.log")
    assert data.endswith(b"}\n") and not data.endswith(b"\n\n")
    assert "журнал".encode() in data  # written as UTF-8, not \u escapes
    assert data.startswith(b'{\n  "log": {\n    "loglevel": "warning",')


def test_fixed_parts():
    d = doc()
    assert list(d) == ["log", "inbounds", "outbounds", "routing"]
    assert d["log"] == {"loglevel": "warning", "access": "none", "error": ERROR_LOG}
    tp, socks = d["inbounds"]
    assert tp == {"tag": "tproxy-in", "listen": "0.0.0.0", "port": 23456, "protocol": "dokodemo-door",
                  "settings": {"network": "tcp,udp", "followRedirect": True},
                  "sniffing": {"enabled": True, "destOverride": ["http", "tls", "quic"], "routeOnly": False},
                  "streamSettings": {"sockopt": {"tproxy": "tproxy"}}}
    assert socks == {"tag": "socks-in", "listen": "127.0.0.1", "port": 23457, "protocol": "socks",
                     "settings": {"auth": "noauth", "udp": True},
                     "sniffing": {"enabled": True, "destOverride": ["http", "tls"], "routeOnly": True}}
    assert [o["tag"] for o in d["outbounds"]] == ["proxy", "direct", "block"]
    assert d["outbounds"][1:] == [{"tag": "direct", "protocol": "freedom", "settings": {"domainStrategy": "UseIPv4"}},
                                  {"tag": "block", "protocol": "blackhole", "settings": {}}]
    assert d["routing"]["domainStrategy"] == "AsIs"


def test_ports_come_from_the_config():
    cfg = make_cfg(tproxy_port=40001, socks_port=40002)
    d = json.loads(generate.render(cfg, xs.ALL["ss-2022"], ERROR_LOG))
    assert [(i["tag"], i["port"]) for i in d["inbounds"]] == [("tproxy-in", 40001), ("socks-in", 40002)]
    assert generate.ports(cfg) == (40001, 40002)
    assert generate.ports(config.validate({})) == (12345, 12346)


def test_rule_order_and_bittorrent_modes():
    private = {"type": "field", "ip": list(generate.PRIVATE), "outboundTag": "direct"}
    ours = {"type": "field", "inboundTag": ["tproxy-in", "socks-in"], "outboundTag": "proxy"}
    for mode in ("block", "direct"):
        bt = {"type": "field", "protocol": ["bittorrent"], "outboundTag": mode}
        assert doc(bittorrent=mode)["routing"]["rules"] == [private, bt, ours]
    assert doc(bittorrent="proxy")["routing"]["rules"] == [private, ours]
    assert doc()["routing"]["rules"][1]["outboundTag"] == "block"  # the default
    assert generate.PRIVATE == ("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
                                "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/4", "255.255.255.255/32")


def test_no_http_inbound_and_no_allow_insecure_anywhere():
    for name, server in xs.ALL.items():
        data = generate.render(make_cfg(), server, ERROR_LOG)
        assert b"allowInsecure" not in data, name
        assert [i["tag"] for i in json.loads(data)["inbounds"]] == ["tproxy-in", "socks-in"]


@pytest.mark.parametrize("where", ["tls-true", "tls-false", "nested", "AllowInsecure", "allowinsecure"])
def test_outbound_carrying_allow_insecure_is_refused(where):
    server = json.loads(json.dumps(xs.ALL["vless-tcp-tls"]))
    ss = server["outbound"]["streamSettings"]
    if where == "nested":
        server["outbound"]["settings"]["vnext"][0]["users"][0]["x"] = [{"allowInsecure": 1}]
    elif where.lower() == "allowinsecure":  # Go's encoding/json matches keys in any case
        ss["tlsSettings"][where] = True
    else:
        ss["tlsSettings"]["allowInsecure"] = where == "tls-true"
    with pytest.raises(XrayError, match="allowInsecure"):
        generate.render(make_cfg(), server, ERROR_LOG)


def _reversed(value):
    """The same data with every dict's keys in reverse insertion order."""
    if isinstance(value, dict):
        return {k: _reversed(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reversed(v) for v in value]
    return value


@pytest.mark.parametrize("name", sorted(xs.ALL))
def test_deterministic_bytes(name):
    server = xs.ALL[name]
    before = json.dumps(server, sort_keys=True)
    a = generate.render(make_cfg(), server, ERROR_LOG)
    assert generate.render(make_cfg(), server, ERROR_LOG) == a
    assert generate.render(make_cfg(), _reversed(server), ERROR_LOG) == a
    assert json.dumps(server, sort_keys=True) == before  # the input is not changed


def test_proxy_outbound_tag_first_and_canonical_key_order():
    ob = generate.proxy_outbound(_reversed(dict(xs.ALL["trojan-ws-tls"], outbound=dict(
        xs.ALL["trojan-ws-tls"]["outbound"], tag="theirs"))))
    assert list(ob) == ["tag", "protocol", "settings", "streamSettings"]
    assert ob["tag"] == "proxy"
    assert list(ob["settings"]["servers"][0]) == ["address", "port", "password"]
    assert list(ob["streamSettings"]) == ["network", "security", "tlsSettings", "wsSettings"]


def test_lists_keep_their_order():
    ob = generate.proxy_outbound(xs.ALL["vless-tcp-http"])
    req = ob["streamSettings"]["tcpSettings"]["header"]["request"]
    assert req["path"] == ["/p", "/q"] and req["headers"]["Host"] == ["h1.example.com", "h2.example.com"]


@pytest.mark.parametrize("outbound, words", [
    ({"protocol": "freedom", "settings": {}}, "no usable outbound"),
    ({"protocol": "vless", "settings": {}, "proxySettings": {"tag": "direct"}}, "proxySettings"),
    (None, "no usable outbound"),
])
def test_unusable_outbounds_are_refused(outbound, words):
    with pytest.raises(XrayError, match=words):
        generate.proxy_outbound({"id": "a00000000099", "name": "x", "outbound": outbound})


def test_render_needs_an_error_log_path():
    with pytest.raises(XrayError):
        generate.render(make_cfg(), xs.ALL["ss-2022"], None)


# --- version ---------------------------------------------------------------------------------

@pytest.mark.parametrize("line, want", [
    ("Xray 26.2.6 (Xray, Penetrates Everything.) 0a1b2c3 (go1.25.1 linux/arm64)\n"
     "A unified platform for anti-censorship.\n", (26, 2, 6)),
    ("Xray 1.8.4 (Xray, Penetrates Everything.) Custom (go1.21.0 linux/mipsle)", (1, 8, 4)),
    ("Xray 26.10.10 (Xray, Penetrates Everything.) embedded by the Xray-core Python package 1.8.26.13", (26, 10, 10)),
    ("some warning first\nXray 25.12.8 (Xray, Penetrates Everything.) Custom", (25, 12, 8)),
])
def test_parse(line, want):
    assert version.parse(line) == want


def test_parse_refuses_v2fly_and_other_output():
    with pytest.raises(XrayError, match=r"V2Ray 4\.34\.0 \(v2fly\).*not supported"):
        version.parse("V2Ray 4.34.0 (V2Fly, a community-driven edition of V2Ray.) Custom (go1.19.8 linux/amd64)")
    with pytest.raises(XrayError, match="not an Xray version line: 'xray: command not found'"):
        version.parse("xray: command not found\n")
    with pytest.raises(XrayError, match="nothing"):
        version.parse("")


def _script(tmp_path, body):
    path = tmp_path / "fake.py"
    path.write_text("import sys, time\n" + body + "\n")
    return [sys.executable, str(path)]


def test_detect(tmp_path):
    assert version.detect(_script(tmp_path, "assert sys.argv[1:] == ['version']\n"
                                            "print('Xray 26.2.6 (Xray, Penetrates Everything.) Custom')")) == (26, 2, 6)
    assert version.detect([str(tmp_path / "no-such-xray")]) is None
    assert version.detect(_script(tmp_path, "print('Failed to start'); sys.exit(23)")) is None
    assert version.detect(_script(tmp_path, "time.sleep(5)"), timeout=0.3) is None
    with pytest.raises(XrayError, match="v2fly"):
        version.detect(_script(tmp_path, "print('V2Ray 5.16.1 (V2Fly) Custom'); sys.exit(1)"))


def test_detect_runs_no_shell(monkeypatch):
    seen = []

    def fake_run(argv, **kw):
        seen.append((argv, kw.get("shell")))
        return subprocess.CompletedProcess(argv, 0, b"Xray 26.1.23 (Xray, Penetrates Everything.)\n")
    monkeypatch.setattr(version.subprocess, "run", fake_run)
    assert version.detect(["/opt/sbin/xray; rm -rf /"]) == (26, 1, 23)
    assert seen == [(["/opt/sbin/xray; rm -rf /", "version"], None)]


def test_text_and_at_least():
    assert version.text((26, 2, 6)) == "26.2.6" and version.text(None) == "unknown"
    assert version.at_least((26, 1, 31), "26.1.31") and version.at_least((26, 10, 1), (26, 9, 30))
    assert not version.at_least((26, 1, 23), "26.1.31") and not version.at_least(None, "1.0.0")
    assert version.at_least((26, 10, 0), "26.9.30")  # numeric, not string, comparison


def test_gate_table_is_plain_and_sane():
    for name, (first, removed) in version.GATES.items():
        assert first or removed, name
        for v in (first, removed):
            assert v is None or (isinstance(v, tuple) and len(v) == 3 and all(isinstance(x, int) for x in v)), name
    assert version.GATES["hysteria2"] == ((26, 1, 13), None)
    assert version.GATES["finalmask"] == ((26, 1, 31), None)
    assert version.GATES["xhttp"] == ((24, 10, 31), None)
    assert version.GATES["h2-transport"] == (None, (24, 12, 15))


def test_features_read_from_the_outbound():
    f = version.features
    assert f(xs.ALL["vless-reality-vision"]["outbound"]) == ["quic-sniffing", "vision", "reality"]
    assert f(xs.ALL["hysteria2"]["outbound"]) == ["quic-sniffing", "hysteria2", "pinnedPeerCertSha256", "finalmask"]
    assert f(xs.ALL["vless-xhttp-tls"]["outbound"]) == ["quic-sniffing", "xhttp", "xhttp-extra"]
    assert f(xs.ALL["vless-ws-tls"]["outbound"]) == ["quic-sniffing", "ws-host"]
    assert f(xs.ALL["ss-2022"]["outbound"]) == ["quic-sniffing", "ss-2022"]


def test_check_messages():
    hy2 = dict(xs.ALL["hysteria2"], name="X", label="hy2")
    with pytest.raises(XrayError) as e:
        version.check(hy2, (26, 1, 23))
    assert str(e.value) == "server 'X' (hy2) needs Xray 26.1.31 or newer; this router has 26.1.23"
    version.check(hy2, (26, 1, 31))
    version.check(hy2, None)  # unknown version: no check here (xray run -test decides)
    plain = dict(hy2, requires=None)
    with pytest.raises(XrayError, match=r"^server 'X' \(hy2\) needs Xray 26\.1\.31 or newer \(finalmask\); "
                                        r"this router has 26\.1\.13$"):
        version.check(plain, (26, 1, 13))
    xhttp = dict(xs.ALL["vless-xhttp-tls"], name="Y")
    with pytest.raises(XrayError, match=r"\(vless·xhttp·tls\) needs Xray 24\.11\.11 or newer \(xhttp-extra\)"):
        version.check(xhttp, (24, 10, 31))


def test_check_removed_features():
    h2 = json.loads(json.dumps(xs.ALL["trojan-tcp-tls"]))
    h2["outbound"]["streamSettings"]["network"] = "h2"
    version.check(h2, (24, 11, 30))
    with pytest.raises(XrayError, match=r"^server 'trojan' \(trojan·tcp·tls\) uses h2-transport, which Xray "
                                        r"24\.12\.15 and newer refuse; this router has 26\.2\.6$"):
        version.check(h2, (26, 2, 6))
    insecure = json.loads(json.dumps(xs.ALL["vless-tcp-tls"]))
    insecure["outbound"]["streamSettings"]["tlsSettings"]["allowInsecure"] = True
    with pytest.raises(XrayError, match="allowInsecure"):
        version.check(insecure, (26, 6, 22))
    version.check(insecure, (26, 1, 23))  # still a warning only there
    insecure["outbound"]["streamSettings"]["tlsSettings"] = {"AllowInsecure": True}
    with pytest.raises(XrayError, match="allowInsecure"):
        version.check(insecure, (26, 6, 22))


def test_check_refuses_a_bad_requires():
    with pytest.raises(XrayError, match="'26.x' is not an Xray version"):
        version.check(dict(xs.ALL["ss-2022"], requires="26.x"), (26, 1, 1))


def test_every_test_server_runs_on_current_xray():
    for server in xs.ALL.values():
        version.check(server, (26, 10, 10))


def test_reality_hint():
    hint = version.reality_hint((26, 2, 6))
    assert "26.3.27" in hint and "26.2.6" in hint and "26.7.11" in hint
    assert version.reality_hint((26, 3, 27)) == ""
    assert "version is unknown" in version.reality_hint(None)
