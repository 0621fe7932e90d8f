"""The prober's parts without a namespace: reading Xray's log (lines as Xray-core 26.10.10 wrote
them), the prober config, the hard-linked binary, bisection of a refused config, free ports, and
`xray test` recording its results in the store (the prober itself replaced)."""

import errno
import json
import os
import socket

import pytest

import xray_servers as xs
from vpn_director import config
from vpn_director.xray import actions, probelog, probeproc, prober, socks, store

LOG = """\
2026/12/01 17:32:49.858844 [Info] transport/internet/tcp: listening tcp on 127.0.0.1:30000
2026/12/01 17:32:49.859110 [Warning] core: Xray 26.10.10 started
2026/12/01 17:32:49.952556 [Info] [2326979905] app/dispatcher: taking detour [out-0] for [tcp:8.8.8.8:80]
2026/12/01 17:32:49.957269 [Info] [2887720764] app/dispatcher: taking detour [out-1] for [tcp:8.8.8.8:80]
2026/12/01 17:32:49.957273 [Info] [2887720764] proxy/shadowsocks_2022: tunneling request to tcp:8.8.8.8:80 via 10.77.0.1:24009
2026/12/01 17:32:50.960430 [Info] [2887720764] app/proxyman/outbound: app/proxyman/outbound: failed to process \
outbound traffic > proxy/shadowsocks_2022: failed to find an available destination > common/retry: \
[transport/internet/tcp: failed to dial to dest > dial tcp 10.77.0.1:24009: connect: connection refused] > \
common/retry: all retry attempts failed
2026/12/01 17:32:50.961094 [Info] [967821191] app/dispatcher: taking detour [out-2] for [tcp:8.8.8.8:80]
2026/12/01 17:32:50.964570 [Error] [967821191] transport/internet/websocket: failed to dial to 10.77.0.2:8443 > \
transport/internet/tls: peer cert is unrecognized (against pinnedPeerCertSha256)
2026/12/01 17:34:10.638547 [Info] [3701327376] app/dispatcher: taking detour [out-3] for [tcp:8.8.8.8:80]
2026/12/01 17:34:10.639442 [Info] [3701327376] app/proxyman/outbound: app/proxyman/outbound: failed to process \
outbound traffic > proxy/shadowsocks_2022: connection ends > proxy/shadowsocks_2022: failed to read complete \
server response header
2026/12/01 17:34:10.640834 [Info] [297977153] app/dispatcher: taking detour [out-4] for [tcp:8.8.8.8:80]
2026/12/01 17:34:10.642867 [Error] [297977153] transport/internet/websocket: failed to dial to 10.77.0.2:8443 > \
tls: failed to verify certificate: x509: certificate signed by unknown authority
2026/12/01 17:37:11.245049 [Info] [1403447766] app/dispatcher: taking detour [out-5] for [tcp:8.8.8.8:80]
2026/12/01 17:37:11.245050 [Info] [1403447766] app/proxyman/outbound: app/proxyman/outbound: failed to process \
outbound traffic > proxy/vless/outbound: failed to find an available destination > common/retry: [x509: \
certificate is valid for proxy.lab.test, not other.test] > common/retry: all retry attempts failed
2026/12/01 17:34:11.642716 [Info] [1247686727] app/dispatcher: taking detour [out-6] for [tcp:8.8.8.8:80]
2026/12/01 17:34:11.642717 [Info] [1247686727] app/proxyman/outbound: app/proxyman/outbound: failed to process \
outbound traffic > proxy/shadowsocks_2022: failed to find an available destination > common/retry: \
[transport/internet/tcp: failed to dial to dest > dial tcp 10.99.0.1:24001: connect: network is unreachable] > \
common/retry: all retry attempts failed
"""


def test_log_reasons_per_candidate():
    by = probelog.sessions(LOG)
    assert sorted(by) == [0, 1, 2, 3, 4, 5, 6]
    reasons = {n: probelog.log_reason(m) for n, m in by.items()}
    assert reasons == {0: "", 1: "connection refused",
                       2: "TLS: peer cert is unrecognized (against pinnedPeerCertSha256)", 3: "",
                       4: "TLS: x509: certificate signed by unknown authority",
                       5: "TLS: x509: certificate is valid for proxy.lab.test, not other.test",
                       6: "network is unreachable"}


def test_verdicts():
    closed = socks.SocksError("Connection reset by peer")
    tried = {0: (204, 12, None), 1: (None, None, closed), 2: (None, None, closed), 3: (None, None, closed),
             7: (200, 5, None), 8: (None, None, socks.SocksTimeout("no answer")), 9: (None, None, closed)}
    got = probelog.verdicts(tried, None, grace=0, read=lambda: LOG)
    assert got[0] == {"ok": True, "latency_ms": 12, "reason": ""}
    assert got[1]["reason"] == "connection refused" and got[1]["latency_ms"] is None
    assert got[2]["reason"].startswith("TLS: peer cert")
    assert got[3]["reason"] == "connection closed (failed to read complete server response header)"
    assert got[7] == {"ok": False, "latency_ms": None, "reason": "HTTP 200 (not 204)"}
    assert got[8]["reason"] == "timeout" and got[9]["reason"] == "connection closed"


def test_blamed():
    line = ("Failed to start: main: failed to load config files: [/s/probe/test.json] > infra/conf: failed to build "
            "outbound config with tag out-12 > infra/conf: unknown cipher method: rc4-md5")
    assert probelog.blamed(line) == 12
    assert probelog.blamed("Failed to start: the embedded Xray-core rejected the configuration (exit 23)") is None


def test_config_routes_each_inbound_to_its_outbound():
    outs = {0: {"tag": "proxy", "protocol": "shadowsocks", "settings": {"servers": []}},
            3: {"protocol": "vless", "settings": {"vnext": []}}}
    a = prober.config(outs, {0: 20800, 3: 20801}, "/s/probe/probe.log")
    assert json.dumps(a) == json.dumps(prober.config(dict(reversed(list(outs.items()))), {3: 20801, 0: 20800},
                                                     "/s/probe/probe.log"))
    assert [(i["tag"], i["listen"], i["port"]) for i in a["inbounds"]] == [("in-0", "127.0.0.1", 20800),
                                                                          ("in-3", "127.0.0.1", 20801)]
    assert [o["tag"] for o in a["outbounds"]] == ["block", "out-0", "out-3", "direct"]  # the first is the default
    assert list(a["outbounds"][1]) == ["tag", "protocol", "settings"]
    assert [(r["inboundTag"], r["outboundTag"]) for r in a["routing"]["rules"]] == [(["in-0"], "out-0"),
                                                                                    (["in-3"], "out-3")]
    assert a["log"] == {"loglevel": "info", "access": "none", "error": "/s/probe/probe.log"}


def _cfg(tmp_path, binary):
    return config.validate({"data_dir": str(tmp_path / "data"),
                            "advanced": {"state_dir": str(tmp_path / "state"), "lock_timeout": 5,
                                         "xray": {"binary": str(binary)}}})


def _exe(path, text):
    path.write_text(text)
    os.chmod(str(path), 0o755)
    return path


def test_binary_is_a_hard_link_beside_the_binary_made_again_after_an_upgrade(tmp_path):
    src = _exe(tmp_path / "xray", "#!/bin/sh\necho one\n")
    cfg = _cfg(tmp_path, src)
    dst = prober.prober_binary(cfg)
    assert dst == str(tmp_path / "vpd-xray-probe") and os.path.samefile(dst, str(src))
    assert not os.path.exists(str(tmp_path / "state" / "probe"))  # nothing copied into state_dir
    ino = os.stat(dst).st_ino
    assert prober.prober_binary(cfg) == dst and os.stat(dst).st_ino == ino  # unchanged: kept
    new = _exe(tmp_path / "xray.new", "#!/bin/sh\necho two, longer\n")
    os.replace(str(new), str(src))  # what a package upgrade does
    prober.prober_binary(cfg)
    assert os.path.samefile(dst, str(src)) and open(dst).read().endswith("two, longer\n")


def test_binary_is_linked_into_state_dir_when_its_directory_refuses(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    src = _exe(bindir / "xray", "#!/bin/sh\necho one\n")
    real_link = os.link

    def link(a, b):  # a read-only /opt/sbin (root would ignore a directory's mode bits here)
        if os.path.dirname(b) == str(bindir):
            raise OSError(errno.EROFS, "Read-only file system")
        return real_link(a, b)
    monkeypatch.setattr(os, "link", link)
    dst = prober.prober_binary(_cfg(tmp_path, src))
    assert dst == str(tmp_path / "state" / "probe" / "vpd-xray-probe") and os.path.samefile(dst, str(src))
    assert oct(os.stat(str(tmp_path / "state" / "probe")).st_mode & 0o777) == "0o700"
    assert sorted(os.listdir(str(bindir))) == ["xray"]


def test_binary_is_copied_when_linking_fails(tmp_path, monkeypatch):
    src = _exe(tmp_path / "xray", "#!/bin/sh\necho one\n")

    def no_link(a, b):
        raise OSError(errno.EXDEV, "Invalid cross-device link")
    monkeypatch.setattr(os, "link", no_link)
    dst = prober.prober_binary(_cfg(tmp_path, src))
    assert dst == str(tmp_path / "state" / "probe" / "vpd-xray-probe")
    assert not os.path.samefile(dst, str(src)) and open(dst).read() == open(str(src)).read()
    assert os.access(dst, os.X_OK)
    mtime = os.stat(dst).st_mtime_ns
    prober.prober_binary(_cfg(tmp_path, src))
    assert os.stat(dst).st_mtime_ns == mtime  # same size and time: not copied again


@pytest.mark.parametrize("names_tag", [False, True])
def test_refused_candidates_are_found(tmp_path, monkeypatch, names_tag):
    """Bisection when the refusal names nothing (the embedded Xray), one test per blamed
    candidate when it names out-N (real Xray)."""
    calls = []

    def fake_test(argv, path):
        with open(path) as f:
            doc = json.load(f)
        outs = doc["outbounds"]
        assert all(0 < i["port"] < 65536 for i in doc["inbounds"])  # Xray refuses port 0
        calls.append(len(outs) - 2)
        bad = [o["tag"] for o in outs if o.get("settings", {}).get("method") == "rc4-md5"]
        if not bad:
            return None
        return "Failed to start: ... with tag %s > unknown cipher" % bad[0] if names_tag else "Failed to start: exit 23"
    monkeypatch.setattr(prober.switch, "test_config", fake_test)
    outs = {n: {"protocol": "shadowsocks", "settings": {"method": "rc4-md5" if n in (3, 7) else "aes-128-gcm"}}
            for n in range(10)}
    bad = prober.refused(["xray"], outs, str(tmp_path))
    assert sorted(bad) == [3, 7] and not os.listdir(str(tmp_path))
    assert len(calls) == (3 if names_tag else 10), calls
    assert prober.refused(["xray"], {n: outs[n] for n in (0, 1, 2)}, str(tmp_path)) == {}


def test_free_ports_skip_a_taken_one():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    taken = s.getsockname()[1]
    try:
        got = probeproc.free_ports(3, span=(taken - 1, taken + 10))
        assert taken not in got and got == list(range(got[0], got[0] + 3))
        assert taken + 1 not in probeproc.free_ports(2, avoid=(taken + 1,), span=(taken + 1, taken + 10))
        with pytest.raises(prober.XrayError):
            probeproc.free_ports(5, span=(taken, taken + 3))
    finally:
        s.close()


def test_xray_test_records_results(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, "xray")
    st = store.Store()
    a = dict(xs.ALL["ss-2022"], id="a00000000001", name="A")
    b = dict(xs.ALL["trojan-ws-tls"], id="b00000000002", name="B")
    st.servers = [a, b]
    store.save(cfg.data_dir, st)
    seen = []

    def fake_test(cfg_, servers, urls=None, timeout_s=10.0, concurrency=8):
        seen.append(([s["id"] for s in servers], timeout_s))
        return {"a00000000001": {"ok": True, "latency_ms": 42, "reason": ""},
                "b00000000002": {"ok": False, "latency_ms": None, "reason": "timeout"}}
    monkeypatch.setattr(prober, "test", fake_test)
    rows = actions.test(cfg, every=True, timeout_s=3.0)
    assert seen == [(["a00000000001", "b00000000002"], 3.0)]
    assert [(n, s["id"], r["ok"]) for n, s, r in rows] == [(1, "a00000000001", True), (2, "b00000000002", False)]
    saved = {s["id"]: s["status"] for s in store.load(cfg.data_dir).servers}
    assert saved["a00000000001"]["latency_ms"] == 42 and saved["a00000000001"]["error"] == ""
    assert saved["b00000000002"]["latency_ms"] is None and saved["b00000000002"]["error"] == "timeout"
    with pytest.raises(prober.XrayError, match="no active server"):
        actions.test(cfg)
