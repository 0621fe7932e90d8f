"""The lab's real Xray server (tests/xraylab.py), proven on its own with a hand-written client.

One lab for the module (vpn_director.lab.Lab: router, WAN and client namespaces), built once:
conftest's `lab` fixture is per test and runs each test once per iptables backend, and nothing
here touches iptables, so the server, the far host and the client are started once, not 2xN
times. In the WAN namespace: XrayServer on 203.0.113.10 (the config's xray.servers address) and,
behind it, FarHost 1.1.1.1 (+ the private 10.77.0.7). In the router namespace: XrayClient, a
hand-written Xray config with one SOCKS5 inbound per outbound (the server's five, and broken
variants of them for the negative controls).
"""

import base64
import concurrent.futures
import hashlib
import json
import os
import shutil
import subprocess
import urllib.parse

import pytest

import xraylab
from vpn_director.xray import embedded

pytestmark = [pytest.mark.kernel,
              pytest.mark.skipif(not embedded.available(),
                                 reason="the Xray-core Python package is not installed: no real Xray to run"),
              pytest.mark.skipif(shutil.which("openssl") is None,
                                 reason="the openssl command is missing: it makes the lab's certificates and keys")]

SERVER = "203.0.113.10"  # the lab config's xray.servers address, on the WAN namespace's lo
FAR = "1.1.1.1"
PRIVATE = "10.77.0.7"  # also on the far host: Xray's freedom refuses it by default
LAN = "192.168.50.10"
CONFIG = {"xray": {"clients": [LAN], "servers": [SERVER]}}
FAST = 1.5  # seconds a probe that must fail may take


def broken(out, **change):
    """A copy of outbound `out` with streamSettings' security settings changed (None deletes)."""
    out = json.loads(json.dumps(out))
    ss = out["streamSettings"]
    settings = ss["realitySettings" if ss["security"] == "reality" else "tlsSettings"]
    for key, value in change.items():
        if value is None:
            settings.pop(key, None)
        else:
            settings[key] = value
    return out


class World:
    pass


@pytest.fixture(scope="module")
def world(request, tmp_path_factory):
    from vpn_director.lab import Lab
    tmp = tmp_path_factory.mktemp("xraylab")
    w = World()
    w.lab = Lab("vx%d" % (os.getpid() % 100000), workdir=str(tmp / "lab"))
    request.addfinalizer(w.lab.down)  # each cleanup registered before the thing exists
    w.lab.up(CONFIG)
    w.far = xraylab.FarHost(w.lab.wan, str(tmp / "far"), address=FAR, extra=(PRIVATE,))
    request.addfinalizer(w.far.stop)
    w.far.start()
    w.server = xraylab.XrayServer(w.lab.wan, str(tmp / "server"), SERVER)
    request.addfinalizer(w.server.stop)
    w.server.start()
    outs = {n: w.server.outbound(n) for n in w.server.names}
    trojan = outs["trojan-ws"]
    outs.update({
        "reality-bad-pbk": broken(outs["reality"], publicKey=xraylab.reality_keypair()[1]),
        "trojan-bad-pcs": broken(trojan, pinnedPeerCertSha256=hashlib.sha256(b"not the lab cert").hexdigest()),
        "trojan-no-pin": broken(trojan, pinnedPeerCertSha256=None),
        "trojan-ca-pin": broken(trojan, pinnedPeerCertSha256=w.server.pki.ca_sha256),
        "trojan-ca-pin-other-name": broken(trojan, pinnedPeerCertSha256=w.server.pki.ca_sha256,
                                           serverName="other.lab.test"),
    })
    w.client = xraylab.XrayClient(w.lab.router, str(tmp / "client"), outs)
    request.addfinalizer(w.client.stop)
    w.client.start()
    w.tmp = tmp
    return w


def via(w, name, proto, path=None, dst=FAR):
    if proto == "tcp":
        return {"socks": w.client.socks[name], "proto": "tcp", "dst": dst, "port": w.far.tcp_port,
                "path": path or "/" + name}
    return {"socks": w.client.socks[name], "proto": "udp", "dst": dst, "port": w.far.udp_port,
            "data": path or "udp " + name}


def logged(xray, since, *messages, timeout=5):
    """Whether each of `messages` shows in `xray`'s error log after line `since` (within `timeout`:
    Xray logs a failure when it gives up, which can be after the probe has)."""
    def found():
        text = "\n".join(xray.errors(since))
        return all(m in text for m in messages)
    return xraylab.wait_for(found, timeout)


def probe_each(namespaces, probes, timeout=FAST):
    """xraylab.probe from several namespaces at once: a list of results per namespace."""
    with concurrent.futures.ThreadPoolExecutor(len(namespaces)) as pool:
        return list(pool.map(lambda ns: xraylab.probe(ns, probes, timeout=timeout), namespaces))


def seen_since(far, n):
    return far.seen()[n:]


def test_pki_pin_and_reality_keys(world):
    pki = world.server.pki
    # cert_sha256 is the SHA-256 of the leaf's DER, the fingerprint openssl prints
    fp = subprocess.run(["openssl", "x509", "-in", pki.cert, "-noout", "-fingerprint", "-sha256"],
                        stdout=subprocess.PIPE, check=True, universal_newlines=True).stdout
    assert pki.cert_sha256 == fp.strip().split("=", 1)[1].replace(":", "").lower()
    assert len(pki.cert_sha256) == 64 and pki.cert_sha256 != pki.ca_sha256
    verify = subprocess.run(["openssl", "verify", "-CAfile", pki.ca_cert, pki.cert], stdout=subprocess.PIPE,
                            universal_newlines=True)
    assert verify.returncode == 0, verify.stdout
    text = subprocess.run(["openssl", "x509", "-in", pki.cert, "-noout", "-ext", "subjectAltName"],
                          stdout=subprocess.PIPE, check=True, universal_newlines=True).stdout
    assert "DNS:proxy.lab.test" in text and "IP Address:%s" % SERVER in text

    private, public = xraylab.reality_keypair()
    raw = [base64.urlsafe_b64decode(k + "=") for k in (private, public)]
    assert [len(r) for r in raw] == [32, 32] and "=" not in private + public
    # the public key is the private one's: derived again by openssl from the raw 32 bytes
    der = subprocess.run(["openssl", "pkey", "-inform", "DER", "-pubout", "-outform", "DER"],
                         input=bytes.fromhex("302e020100300506032b656e04220420") + raw[0],
                         stdout=subprocess.PIPE, check=True).stdout
    assert der[-32:] == raw[1]
    assert private != world.server.reality_private


def test_links_carry_what_the_outbounds_say(world):
    s = world.server
    links = s.links()
    assert sorted(links) == sorted(xraylab.NAMES)

    u = urllib.parse.urlsplit(links["reality"])
    q = dict(urllib.parse.parse_qsl(u.query, keep_blank_values=True))
    r = s.outbound("reality")["streamSettings"]["realitySettings"]
    assert (u.scheme, u.username, u.hostname, u.port, u.fragment) == ("vless", s.ids["reality"], SERVER, 443, "reality")
    assert q == {"type": "tcp", "encryption": "none", "security": "reality", "sni": r["serverName"], "fp": "chrome",
                 "pbk": r["publicKey"], "sid": r["shortId"], "spx": "/", "flow": "xtls-rprx-vision"}

    u = urllib.parse.urlsplit(links["trojan-ws"])
    q = dict(urllib.parse.parse_qsl(u.query))
    assert (u.scheme, urllib.parse.unquote(u.username), u.port) == ("trojan", s.trojan_password, 8443)
    assert q == {"type": "ws", "path": "/trojan", "host": "proxy.lab.test", "security": "tls",
                 "sni": "proxy.lab.test", "pcs": s.pki.cert_sha256}

    for name in ("vmess-tcp", "vmess-ws"):
        body = json.loads(base64.b64decode(links[name][len("vmess://"):]))
        assert (body["ps"], body["add"], body["port"], body["id"], body["aid"]) == (
            name, SERVER, str(s.ports[name]), s.ids[name], "0")
        assert (body["net"], body["tls"]) == (("tcp", "") if name == "vmess-tcp" else ("ws", "tls"))
    assert json.loads(base64.b64decode(links["vmess-ws"][8:]))["pcs"] == s.pki.cert_sha256

    u = urllib.parse.urlsplit(links["ss2022"])
    method, _, password = u.netloc.rpartition("@")[0].partition(":")
    assert (method, urllib.parse.unquote(password), u.port) == ("2022-blake3-aes-128-gcm", s.ss_password, 8388)
    assert len(base64.b64decode(s.ss_password)) == 16


def test_the_far_host_answers_only_the_wan_namespace_itself(world):
    w = world
    n = len(w.far.seen())
    direct = [{"proto": "tcp", "dst": FAR, "port": w.far.tcp_port, "path": "/direct"},
              {"proto": "udp", "dst": FAR, "port": w.far.udp_port, "data": "direct"}]
    # Control: from the WAN namespace, where the Xray server runs, the far host answers, and sees
    # the source it will see for every proxied request: the WAN side of its link.
    ok = xraylab.probe(w.lab.wan, direct, timeout=3)
    assert [r["ok"] for r in ok] == [True, True], ok
    assert ok[0]["body"] == "far %s:80 /direct from %s\n" % (FAR, w.far.gateway)
    assert sorted((e["proto"], e["src"], e["dst"]) for e in seen_since(w.far, n)) == [
        ("tcp", w.far.gateway, FAR), ("udp", w.far.gateway, FAR)]
    n = len(w.far.seen())
    # The router and a LAN client route it to the WAN namespace, which does not forward (the lab's
    # ip_forward is 0): nothing arrives.
    lan = (w.lab.router, w.lab.clients[LAN])
    assert [[r["error"] for r in res] for res in probe_each(lan, direct)] == [["timeout", "timeout"]] * 2
    assert seen_since(w.far, n) == []
    # With forwarding on in the WAN namespace, FarHost's rules ("to ADDR iif lo lookup main", then
    # "to ADDR prohibit") still keep it from the far host: refused with an ICMP error ("No route to
    # host"), or silently once the kernel rate-limits those errors. (Without the rules the far host
    # would get the datagram, and only its answer would be lost: it has no route back.)
    w.lab._run(["sysctl", "-qw", "net.ipv4.ip_forward=1"], ns=w.lab.wan)
    try:
        errors = [r["error"] for res in probe_each(lan, direct) for r in res]
    finally:
        w.lab._run(["sysctl", "-qw", "net.ipv4.ip_forward=0"], ns=w.lab.wan)
    assert set(errors) <= {"No route to host", "timeout"} and "No route to host" in errors, errors
    assert seen_since(w.far, n) == []


@pytest.mark.parametrize("name", xraylab.NAMES)
def test_tcp_and_udp_through_the_proxy_reach_the_far_host(world, name):
    w = world
    n_acc, n_far = len(w.server.accepted()), len(w.far.seen())
    tcp, udp = xraylab.probe(w.lab.router, [via(w, name, "tcp"), via(w, name, "udp")], timeout=5)
    assert tcp == {"ok": True, "body": "far %s:80 /%s from %s\n" % (FAR, name, w.far.gateway), "error": ""}
    assert udp == {"ok": True, "body": "udp " + name, "error": ""}
    # The server's access log has both, under the inbound's tag and user...
    acc = w.server.accepted(n_acc)
    for proto, port in (("tcp", 80), ("udp", 5353)):
        want = "accepted %s:%s:%d [%s >> direct] email: %s@lab" % (proto, FAR, port, name, name)
        assert [line for line in acc if want in line and " from " in line and "100.64.0.1:" in line], acc
    # ...and the far host saw them come from the server's side of its link.
    got = {(e["proto"], e["src"], e.get("path") or e.get("data")) for e in seen_since(w.far, n_far)}
    assert got == {("tcp", w.far.gateway, "/" + name), ("udp", w.far.gateway, "udp " + name)}


def test_a_wrong_reality_public_key_is_refused_and_sent_to_the_target(world):
    w = world
    n_acc, n_far, n_target = len(w.server.accepted()), len(w.far.seen()), len(w.server.target_seen())
    n_cli = len(w.client.errors())
    res = xraylab.probe(w.lab.router, [via(w, "reality-bad-pbk", "tcp"), via(w, "reality-bad-pbk", "udp")],
                        timeout=FAST)
    assert [r["ok"] for r in res] == [False, False], res
    assert w.server.accepted(n_acc) == [] and seen_since(w.far, n_far) == []
    # REALITY did not authenticate the client and passed the connection through to its target, the
    # lab's TLS 1.3 server: the client got the target's real certificate, checked it against the
    # system roots like any TLS client, and hung up.
    assert xraylab.wait_for(lambda: [e for e in w.server.target_seen()[n_target:]
                                     if e["sni"] == "proxy.lab.test" and "BAD_CERTIFICATE" in e["handshake"]]), \
        w.server.target_seen()[n_target:]
    assert logged(w.client, n_cli, "x509: certificate signed by unknown authority"), w.client.errors(n_cli)
    assert w.server.accepted(n_acc) == [] and seen_since(w.far, n_far) == []


def test_the_pinned_certificate_replaces_ca_verification(world):
    w = world
    # Controls: the leaf pin (the link's pcs) works, and so does the CA's pin with the right name.
    good = xraylab.probe(w.lab.router, [via(w, "trojan-ws", "tcp", "/pin-leaf"),
                                        via(w, "trojan-ca-pin", "tcp", "/pin-ca")], timeout=5)
    assert [r["ok"] for r in good] == [True, True], good
    n_acc, n_far, n_err = len(w.server.accepted()), len(w.far.seen()), len(w.client.errors())
    bad = xraylab.probe(w.lab.router, [via(w, "trojan-bad-pcs", "tcp"), via(w, "trojan-no-pin", "tcp"),
                                       via(w, "trojan-ca-pin-other-name", "tcp")], timeout=FAST)
    assert [r["ok"] for r in bad] == [False, False, False], bad
    assert w.server.accepted(n_acc) == [] and seen_since(w.far, n_far) == []
    assert logged(w.client, n_err, "peer cert is unrecognized (against pinnedPeerCertSha256)",  # the wrong pin
                  "x509: certificate signed by unknown authority",  # no pin: the system roots
                  "peer cert is invalid (against pinned CA and serverName)"), w.client.errors(n_err)


def test_freedom_refuses_private_targets_unless_final_rules_allow(world, request):
    w = world
    n_far, n_err = len(w.far.seen()), len(w.server.errors())
    # The default server (no finalRules): the public address answers, the private one does not.
    pub, priv = xraylab.probe(w.lab.router, [via(w, "ss2022", "tcp", "/public"),
                                             via(w, "ss2022", "tcp", "/private", dst=PRIVATE)], timeout=FAST)
    assert pub["ok"] and not priv["ok"], (pub, priv)
    assert logged(w.server, n_err, "proxy/freedom: blocked target: tcp:%s:80" % PRIVATE)
    assert [e["path"] for e in seen_since(w.far, n_far)] == ["/public"]

    # A server whose freedom has finalRules [{"action": "allow"}] reaches it.
    open_server = xraylab.XrayServer(w.lab.wan, str(w.tmp / "open-server"), SERVER, pki=w.server.pki,
                                     names=("ss2022",), ports={"ss2022": 8389}, allow_private=True)
    request.addfinalizer(open_server.stop)
    assert open_server.config()["outbounds"][0]["settings"] == {"finalRules": [{"action": "allow"}]}
    open_server.start()
    client = xraylab.XrayClient(w.lab.router, str(w.tmp / "open-client"), {"ss2022": open_server.outbound("ss2022")},
                                first_port=10901)
    request.addfinalizer(client.stop)
    client.start()
    res = xraylab.probe(w.lab.router, [{"socks": client.socks["ss2022"], "proto": p, "dst": PRIVATE,
                                        "port": port, "path": "/private", "data": "private"}
                                       for p, port in (("tcp", w.far.tcp_port), ("udp", w.far.udp_port))], timeout=5)
    assert res[0] == {"ok": True, "body": "far %s:80 /private from %s\n" % (PRIVATE, w.far.gateway), "error": ""}
    assert res[1]["ok"], res
    assert [line for line in open_server.accepted() if "accepted tcp:%s:80 [ss2022 >> direct]" % PRIVATE in line]


def test_stopping_the_server_stops_the_proxying(world, request):
    """Last: the module's server is stopped here (and a stopped server can be started again)."""
    w = world
    w.server.stop()
    assert not w.server.running()
    res = xraylab.probe(w.lab.router, [via(w, "ss2022", "tcp", "/stopped")], timeout=FAST)
    assert not res[0]["ok"], res
    out = subprocess.run(["ip", "netns", "pids", w.lab.wan], stdout=subprocess.PIPE, universal_newlines=True).stdout
    cmdlines = []
    for pid in out.split():
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as fh:
                cmdlines.append(fh.read().replace(b"\0", b" ").decode())
        except OSError:
            pass
    assert not [c for c in cmdlines if "vpn_director.xray.embedded" in c or "tls-target" in c], cmdlines
    w.server.start()
    res = xraylab.probe(w.lab.router, [via(w, "ss2022", "tcp", "/again")], timeout=5)
    assert res[0]["ok"], res
