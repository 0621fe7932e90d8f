"""Every generated outbound kind is accepted by the real Xray-core (the Xray-core Python package).

Each config is rendered, written to a file and given to `xray run -test -format json -c FILE`
through vpn_director.xray.embedded, which starts it in a throw-away network namespace: exit 0 and
"Configuration OK.", or exit 23. Negative controls, each differing from an accepted config in one
place only, prove the check can fail: allowInsecure, the removed h2 and quic transports, and
plaintext VLESS/Trojan to a public address.
"""

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

import xray_servers as xs
from vpn_director import config
from vpn_director.xray import embedded, generate, version

if not embedded.available():
    pytest.skip("the Xray-core Python package is not installed (pip install Xray-core): no real Xray to test against",
                allow_module_level=True)

ERROR_LOG = "/tmp/vpn-director-test/xray-error.log"
CFG = config.validate({"advanced": {"xray": {"tproxy_port": 23456, "socks_port": 23457}}})


def _doc(name, cfg=CFG):
    return json.loads(generate.render(cfg, xs.ALL[name], ERROR_LOG))


def _patched(name, change):
    d = _doc(name)
    change(d["outbounds"][0])
    return json.dumps(d, indent=2).encode()


def _plain(address, proto=xs.vless):
    outbound = proto(address, {"network": "tcp", "security": "none"})
    server = xs.server("b00000000001", "plain", outbound["protocol"], "plain", outbound)
    return generate.render(CFG, server, ERROR_LOG)


def _tls(change):
    return lambda ob: change(ob["streamSettings"])


ACCEPTED = {name: generate.render(CFG, server, ERROR_LOG) for name, server in xs.ALL.items()}
ACCEPTED.update({
    "bittorrent-direct": generate.render(config.validate({"xray": {"bittorrent": "direct"}}),
                                         xs.ALL["vless-reality-vision"], ERROR_LOG),
    "bittorrent-proxy": generate.render(config.validate({"xray": {"bittorrent": "proxy"}}),
                                        xs.ALL["vless-reality-vision"], ERROR_LOG),
    # the other half of each pair below
    "vless-none-lan-name": _plain("nas.lan"),
    "trojan-none-private": _plain("10.1.2.3", xs.trojan),
})
REFUSED = {
    "allowInsecure": _patched("vless-tcp-tls", _tls(lambda ss: ss["tlsSettings"].update(allowInsecure=True))),
    "AllowInsecure": _patched("vless-tcp-tls", _tls(lambda ss: ss["tlsSettings"].update(AllowInsecure=True))),
    "network-h2": _patched("vless-tcp-tls", _tls(lambda ss: ss.update(network="h2"))),
    "network-quic": _patched("vless-tcp-tls", _tls(lambda ss: ss.update(network="quic"))),
    "vless-none-public-ip": _plain("8.8.8.8"),
    "vless-none-public-name": _plain("proxy.example.com"),
    "trojan-none-public": _plain("8.8.8.8", xs.trojan),
    "reality-over-ws": _patched("vless-reality-vision", _tls(lambda ss: ss.update(network="ws"))),
}


def _test(tmp, name, data):
    path = tmp / (name + ".conf")  # not *.json: -format json must be what tells Xray the format
    path.write_bytes(data)
    p = subprocess.run(embedded.command() + ["run", "-test", "-format", "json", "-c", str(path)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60, check=False)
    return p.returncode, p.stdout.decode(errors="replace")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """All the -test runs at once, in parallel threads (each is a short-lived Xray process)."""
    tmp = tmp_path_factory.mktemp("xray-test")
    jobs = dict(ACCEPTED, **REFUSED)
    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip(jobs, pool.map(lambda item: _test(tmp, *item), jobs.items())))


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_real_xray_accepts(results, name):
    code, out = results[name]
    assert (code, out.strip().splitlines()[-1:]) == (0, ["Configuration OK."]), out


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_real_xray_refuses(results, name):
    code, out = results[name]
    assert code == 23, out
    assert "Configuration OK." not in out


def test_every_outbound_kind_is_covered():
    kinds = {(s["outbound"]["protocol"], (s["outbound"].get("streamSettings") or {}).get("network", "tcp"),
              (s["outbound"].get("streamSettings") or {}).get("security", "none")) for s in xs.ALL.values()}
    for kind in [("vless", net, "tls") for net in ("tcp", "ws", "grpc", "httpupgrade", "xhttp")] + [
            ("vless", "tcp", "reality"), ("vless", "tcp", "none"), ("vmess", "ws", "tls"), ("vmess", "tcp", "none"),
            ("trojan", "tcp", "tls"), ("trojan", "ws", "tls"), ("trojan", "grpc", "tls"),
            ("shadowsocks", "tcp", "none"), ("hysteria", "hysteria", "tls")]:
        assert kind in kinds


def test_version_of_the_embedded_xray():
    v = version.detect(embedded.command(), timeout=30)
    assert v is not None and v >= (26, 0, 0)
    for server in xs.ALL.values():
        version.check(server, v)
