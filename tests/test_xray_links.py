"""Share links -> Server dicts or skips: the golden corpus in data/xray_links/cases.json (every scheme x
transport x security and the real-world quirks), checked field by field against the Xray source when it
was frozen; and, when the Xray-core package is installed, every stored outbound is built by real Xray
and every outbound the judge refuses as "Xray would refuse it" is refused by real Xray too."""

import json
import os
import re
import subprocess
import sys

import pytest

from vpn_director.xray import SKIP_REASONS, Skip, embedded, links, outbound

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = json.load(open(os.path.join(HERE, "data", "xray_links", "cases.json"), encoding="utf-8"))
STORED = [c for c in CASES if "server" in c]
SKIPPED = [c for c in CASES if "skip" in c]
SERVER_KEYS = {"id", "name", "protocol", "address", "port", "label", "outbound"}
U = "b831381d-6324-4d53-ad4f-8cda48b30811"
PBK = "Pu7Q55Yzv_v0ExfYwYNz2jJFMKNlZcyEMsXIfwXzB5c"


def skip_of(link):
    with pytest.raises(Skip) as e:
        links.parse(link)
    return e.value


# --- the golden corpus -------------------------------------------------------------------------------

@pytest.mark.parametrize("case", STORED, ids=[c["case"] for c in STORED])
def test_stored_link_gives_the_golden_server(case):
    assert links.parse(case["link"]) == case["server"]


@pytest.mark.parametrize("case", SKIPPED, ids=[c["case"] for c in SKIPPED])
def test_skipped_link_gives_the_golden_reason_and_no_credential(case):
    e = skip_of(case["link"])
    assert (e.reason, e.name) == (case["skip"], case["skip_name"])
    for secret in case.get("secrets", []):
        assert secret not in e.detail and secret not in str(e)


def test_the_corpus_covers_every_kind_and_every_reason():
    labels = {c["server"]["label"] for c in STORED}
    assert labels >= {
        "vless", "vless·tls", "vless·tls·vision", "vless·reality", "vless·reality·vision", "vless·ws", "vless·ws·tls",
        "vless·grpc·tls", "vless·grpc·reality", "vless·httpupgrade·tls", "vless·xhttp·tls", "vless·xhttp·reality",
        "vmess", "vmess·ws·tls", "vmess·grpc·tls", "vmess·httpupgrade·tls", "vmess·xhttp·tls", "vmess·reality",
        "trojan", "trojan·tls", "trojan·ws·tls", "trojan·grpc·tls", "trojan·reality", "ss", "ss·ws", "ss·ws·tls",
        "hy2"}
    assert {c["skip"] for c in SKIPPED} == set(SKIP_REASONS)
    assert {c["server"]["protocol"] for c in STORED} == {"vless", "vmess", "trojan", "shadowsocks", "hysteria2"}


def test_stored_servers_have_exactly_the_server_keys_and_plain_json():
    for c in STORED:
        s = c["server"]
        assert set(s) - {"requires"} == SERVER_KEYS
        assert re.fullmatch(r"[0-9a-f]{12}", s["id"])
        assert isinstance(s["port"], int) and s["outbound"]["protocol"] in outbound.KINDS
        assert "tag" not in s["outbound"]
        assert json.loads(json.dumps(s)) == s


def test_no_stored_outbound_says_allowInsecure():
    for c in STORED:
        assert "allowInsecure" not in json.dumps(links.parse(c["link"]))


def test_parse_is_deterministic():
    for c in STORED:
        assert json.dumps(links.parse(c["link"])) == json.dumps(links.parse(c["link"]))


def test_vmess_users_say_alterId_0_and_ports_are_numbers():
    for c in STORED:
        ob = c["server"]["outbound"]
        for srv in ob["settings"].get("vnext", []) + ob["settings"].get("servers", []):
            assert isinstance(srv["port"], int)
        if ob["protocol"] == "vmess":
            assert ob["settings"]["vnext"][0]["users"][0]["alterId"] == 0


# --- ids, labels, versions -------------------------------------------------------------------------

def reality(**q):
    base = {"security": "reality", "sni": "www.microsoft.com", "fp": "chrome", "pbk": PBK, "sid": "ab12", "spx": "/"}
    base.update(q)
    return "vless://%s@proxy.example.com:443?%s#n" % (U, "&".join("%s=%s" % kv for kv in base.items()))


def test_id_ignores_the_name_and_what_panels_rerandomise():
    first = links.parse(reality())["id"]
    assert links.parse(reality() + "-renamed")["id"] == first
    assert links.parse(reality(sni="www.apple.com", sid="cd34", spx="/x", fp="firefox"))["id"] == first


def test_id_changes_with_what_makes_another_server():
    first = links.parse(reality())["id"]
    assert links.parse(reality(flow="xtls-rprx-vision"))["id"] != first
    assert links.parse(reality(pbk="A" * 43))["id"] != first
    assert links.parse(reality().replace(U, "e2a4c1f0-9d3b-4b7e-8f61-2c5d7a9e0b14"))["id"] != first
    assert links.parse(reality().replace(":443", ":8443"))["id"] != first
    assert links.parse(reality(type="grpc", serviceName="a"))["id"] != links.parse(reality(type="grpc",
                                                                                          serviceName="b"))["id"]


def test_server_id_is_a_hash_of_protocol_and_parts():
    assert links.server_id("vless", {"a": 1}) == links.server_id("vless", {"a": 1})
    assert links.server_id("vless", {"a": 1}) != links.server_id("trojan", {"a": 1})
    assert re.fullmatch(r"[0-9a-f]{12}", links.server_id("vless", {}))


def test_label_of_an_outbound():
    ob = links.parse(reality(flow="xtls-rprx-vision"))["outbound"]
    assert links.label(ob) == "vless·reality·vision"


@pytest.mark.parametrize("link, version", [
    ("hy2://a@h.example.com:443?obfs=salamander&obfs-password=p", "26.1.31"),
    ("vless://%s@h.example.com:443?security=tls&pcs=%s" % (U, "ab" * 32), "26.1.13"),
    ("vless://%s@h.example.com:443?security=tls&pcs=%s,%s" % (U, "ab" * 32, "cd" * 32), "26.1.31"),
    ("vless://%s@h.example.com:443?type=xhttp&security=reality&pbk=%s&flow=" % (U, PBK), "24.10.31"),
    ("vless://%s@h.example.com:443?type=httpupgrade&security=tls" % U, "1.8.9"),
    ("vless://%s@h.example.com:443?security=tls" % U, None),
])
def test_requires_is_the_highest_gate(link, version):
    assert links.parse(link).get("requires") == version


# --- the judge on its own ---------------------------------------------------------------------------

@pytest.mark.parametrize("address, private", [
    ("10.1.2.3", True), ("100.64.0.1", True), ("172.31.255.255", True), ("192.168.1.1", True),
    ("169.254.1.1", True), ("198.18.0.1", True), ("224.0.0.1", True), ("fd12::1", True), ("fe80::1", True),
    ("::1", True), ("::ffff:10.0.0.1", True), ("router", True), ("nas.lan", True), ("vpn.home.arpa", True),
    ("host.internal", True), ("Proxy.Example.", True),
    ("8.8.8.8", False), ("203.0.114.1", False), ("2001:db8::1", False), ("::ffff:8.8.8.8", False),
    ("proxy.example.com", False), ("my-router.com", False)])
def test_plaintext_is_allowed_only_to_what_xray_calls_private(address, private):
    assert outbound.is_private(address) is private


def ob_vless(stream, address="proxy.example.com", **user):
    return {"protocol": "vless", "settings": {"vnext": [{"address": address, "port": 443,
                                                         "users": [dict({"id": U, "encryption": "none"}, **user)]}]},
            "streamSettings": stream}


def test_check_drops_a_false_allowInsecure_and_a_pinned_true_one():
    ob = outbound.check(ob_vless({"network": "tcp", "security": "tls", "tlsSettings": {"allowInsecure": False}}))
    assert ob["streamSettings"]["tlsSettings"] == {}
    pinned = {"allowInsecure": True, "pinnedPeerCertSha256": "ab" * 32}
    ob = outbound.check(ob_vless({"network": "tcp", "security": "tls", "tlsSettings": pinned}))
    assert ob["streamSettings"]["tlsSettings"] == {"pinnedPeerCertSha256": "ab" * 32}
    assert pinned["allowInsecure"] is True  # the caller's outbound is not changed


def test_check_fills_a_missing_vless_encryption():
    ob = ob_vless({"network": "tcp", "security": "tls"})
    del ob["settings"]["vnext"][0]["users"][0]["encryption"]
    assert outbound.check(ob)["settings"]["vnext"][0]["users"][0]["encryption"] == "none"


def test_check_reads_the_flat_form_and_gates_it():
    ob = {"protocol": "vless", "settings": {"address": "8.8.8.8", "port": 443, "id": U, "encryption": "none"},
          "streamSettings": {"network": "tcp", "security": "none"}}
    with pytest.raises(Skip) as e:
        outbound.check(ob)
    assert e.value.reason == "plaintext"
    ob["streamSettings"]["security"] = "tls"
    assert links.server(ob, "flat")["requires"] == "25.9.10"


def test_a_skip_from_check_names_the_entry():
    with pytest.raises(Skip) as e:
        outbound.check(ob_vless({"network": "h2", "security": "tls"}), "my entry")
    assert (e.value.reason, e.value.name) == ("removed-transport", "my entry")


# --- real Xray ----------------------------------------------------------------------------------------

needs_xray = pytest.mark.skipif(not embedded.available(), reason="the Xray-core package is not installed")


def xray_test(outbounds, tmp_path):
    """Exit code of `xray run -test` (the embedded Xray-core) on a config holding these outbounds."""
    cfg = {"outbounds": [dict(ob, tag="proxy-%d" % i) for i, ob in enumerate(outbounds)]
           + [{"protocol": "freedom", "tag": "direct"}]}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return subprocess.run(embedded.command() + ["run", "-test", "-c", str(path)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, timeout=60).returncode


@needs_xray
def test_real_xray_builds_every_stored_outbound(tmp_path):
    obs = [c["server"]["outbound"] for c in STORED]
    if xray_test(obs, tmp_path) != 0:
        refused = [c["case"] for c in STORED if xray_test([c["server"]["outbound"]], tmp_path) != 0]
        pytest.fail("real Xray refuses: %s" % refused)


# Outbounds that check() refuses because Xray does: the same outbound without check, then real Xray.
REFUSED_BY_XRAY = [
    ("insecure", ob_vless({"network": "tcp", "security": "tls", "tlsSettings": {"allowInsecure": True}})),
    ("plaintext", ob_vless({"network": "tcp", "security": "none"})),
    ("plaintext", {"protocol": "trojan", "settings": {"servers": [{"address": "8.8.8.8", "port": 443,
                                                                   "password": "pw"}]},
                   "streamSettings": {"network": "tcp", "security": "none"}}),
    ("removed-transport", ob_vless({"network": "h2", "security": "tls"})),
    ("removed-transport", ob_vless({"network": "quic", "security": "tls"})),
    ("invalid", ob_vless({"network": "ws", "security": "reality",
                          "realitySettings": {"fingerprint": "chrome", "publicKey": PBK}})),
    ("invalid", ob_vless({"network": "tcp", "security": "reality",
                          "realitySettings": {"fingerprint": "chrome", "publicKey": PBK, "shortId": "abc"}})),
    ("invalid", ob_vless({"network": "tcp", "security": "reality",
                          "realitySettings": {"fingerprint": "hellogolang", "publicKey": PBK}})),
    ("unsupported", {"protocol": "shadowsocks", "settings": {"servers": [{"address": "ss.example.com", "port": 1,
                                                                          "method": "none", "password": "x"}]}}),
    ("unsupported", {"protocol": "shadowsocks", "settings": {"servers": [{"address": "ss.example.com", "port": 1,
                                                                          "method": "aes-256-cfb",
                                                                          "password": "x"}]}}),
]


@pytest.mark.parametrize("reason, ob", REFUSED_BY_XRAY, ids=[r for r, _ in REFUSED_BY_XRAY])
def test_what_check_refuses_as_xray_would_real_xray_refuses(reason, ob, tmp_path):
    with pytest.raises(Skip) as e:
        outbound.check(ob)
    assert e.value.reason == reason
    if embedded.available():
        assert xray_test([ob], tmp_path) == 23


@needs_xray
def test_real_xray_allows_plaintext_vless_to_a_private_address(tmp_path):
    ob = outbound.check(ob_vless({"network": "tcp", "security": "none"}, address="192.168.1.2"))
    assert xray_test([ob], tmp_path) == 0


@pytest.mark.skipif(not hasattr(sys, "stdlib_module_names"), reason="needs Python 3.10+ to list the stdlib")
def test_the_parsers_import_only_the_standard_library():
    code = ("import sys; import vpn_director.xray.links, vpn_director.xray.subscription; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] not in sys.stdlib_module_names "
            "and m.split('.')[0] != 'vpn_director' and not m.startswith('_')))")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "[]"


ODD_VALUES = [None, 0, -1, 1.5, "", "x", [], {}, [1], [{}], {"a": 1}, True]


def leaf_paths(node, prefix=()):
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return
    for k, v in items:
        yield prefix + (k,)
        yield from leaf_paths(v, prefix + (k,))


def test_any_odd_value_anywhere_in_an_outbound_gives_a_server_or_a_skip():
    """JSON entries come from panels: a wrong type in any field is a skip, never a crash."""
    for c in STORED:
        for path in leaf_paths(c["server"]["outbound"]):
            for value in ODD_VALUES + ["<deleted>"]:
                ob = json.loads(json.dumps(c["server"]["outbound"]))
                node = ob
                for k in path[:-1]:
                    node = node[k]
                if value == "<deleted>":
                    del node[path[-1]]
                else:
                    node[path[-1]] = value
                try:
                    assert "allowInsecure" not in json.dumps(links.server(ob, "n"))
                except Skip:
                    pass


@pytest.mark.parametrize("link, secret", [
    ("trojan://host.example.com:Pa55word#swapped", "Pa55word"),
    ("ss://Pa55/w0rd+x:aes-256-gcm@ss.example.com:8388#swapped", "Pa55/w0rd+x"),
    ("vless://%s@h.example.com:443?security=reality&pbk=%s&sid=Pa55&fp=chrome" % (U, PBK), "Pa55"),
])
def test_a_garbled_link_does_not_echo_its_secret(link, secret):
    e = skip_of(link)
    assert secret not in str(e)
