"""The webui config section, the listen addresses, the certificate, and the `web` command's edges."""

import ast
import json
import os
import subprocess
import sys

import pytest

from vpn_director import config
from vpn_director.errors import ConfigError
from vpn_director.web import WebError, cert, server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def validate(webui):
    return config.validate({"webui": webui} if webui is not None else {})


def test_defaults():
    w = validate(None).webui
    assert (w.enabled, w.port, w.listen, w.hosts, w.shadow_file) == (True, 8444, None, [], "/etc/shadow")
    assert w.cert_path("/data") == "/data/web/cert.pem" and w.key_path("/data") == "/data/web/key.pem"


def test_every_problem_with_its_path():
    with pytest.raises(ConfigError) as e:
        validate({"enabled": "yes", "port": 70000, "listen": ["0.0.0.0", "192.168.1.1", "192.168.1.1", "::", "lan"],
                  "hosts": ["router.lan", "bad host"], "cert_file": "relative.pem", "shadow_file": 5})
    problems = e.value.problems
    for path in ("webui.enabled", "webui.port", "webui.listen[0]", "webui.listen[2]", "webui.listen[3]",
                 "webui.listen[4]", "webui.hosts[1]", "webui.cert_file", "webui.shadow_file"):
        assert any(p.startswith(path + ":") for p in problems), (path, problems)
    with pytest.raises(ConfigError, match="cert_file and key_file go together"):
        validate({"cert_file": "/etc/c.pem"})
    with pytest.raises(ConfigError, match="webui.listen: must be a non-empty list"):
        validate({"listen": []})
    assert "webui.colour: unknown key (ignored)" in validate({"colour": "blue"}).warnings


def test_settings_import_only_what_every_run_can_afford():
    """web/settings.py is imported by config validation (every apply and hook run)."""
    for name, allowed in (("settings.py", {"re", "os", "ipaddress"}), ("__init__.py", {"..errors"})):
        tree = ast.parse(open(os.path.join(ROOT, "vpn_director", "web", name)).read())
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                found.add("." * node.level + (node.module or ""))
        assert found <= allowed | {"..errors"}, (name, found)


def test_listen_addresses():
    cfg = validate(None)
    assert server.listen_addresses(cfg, lambda ifname: "192.168.50.1", lambda: "198.51.100.2") == [
        "192.168.50.1", "127.0.0.1"]
    assert server.listen_addresses(cfg, lambda ifname: None, lambda: None) == ["127.0.0.1"]
    cfg = validate({"listen": ["198.51.100.2"]})
    with pytest.raises(WebError, match="198.51.100.2 is the WAN address"):
        server.listen_addresses(cfg, lambda ifname: "192.168.50.1", lambda: "198.51.100.2")


def test_waits_for_the_lan_address_at_boot(monkeypatch):
    from vpn_director import lint
    answers = iter([None, None, "192.168.50.1"])
    monkeypatch.setattr(lint, "interface_address", lambda ifname: next(answers, "192.168.50.1"))
    monkeypatch.setattr(server, "default_route_address", lambda: None)
    warned = []
    out = type("Out", (), {"warn": lambda self, m: warned.append(m)})()
    cfg = validate(None)
    assert server._wait_for_lan(cfg, out, sleep=lambda s: None) == ["192.168.50.1", "127.0.0.1"] and not warned
    monkeypatch.setattr(lint, "interface_address", lambda ifname: None)
    assert server._wait_for_lan(cfg, out, sleep=lambda s: None) == ["127.0.0.1"]
    assert warned == ["web: br0 has no IPv4 address: listening on 127.0.0.1 only (restart the web UI once it has one)"]


def test_default_route_address(tmp_path):
    route = tmp_path / "route"
    route.write_text("Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n"
                     "lo\t0000007F\t00000000\t0001\t0\t0\t0\t000000FF\n"
                     "lo\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\n")
    assert server.default_route_address(str(route)) == "127.0.0.1"
    assert server.default_route_address(str(tmp_path / "missing")) is None


def test_certificate_made_once_with_names_and_a_private_key(tmp_path):
    c, k = str(tmp_path / "w" / "cert.pem"), str(tmp_path / "w" / "key.pem")
    assert cert.ensure(c, k, ["192.168.50.1", "127.0.0.1"], ["router", "router.lan", "bad name!"])
    assert os.stat(k).st_mode & 0o777 == 0o600
    text = subprocess.run(["openssl", "x509", "-in", c, "-noout", "-ext", "subjectAltName", "-fingerprint", "-sha256"],
                          stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout
    assert "IP Address:192.168.50.1, IP Address:127.0.0.1, DNS:router, DNS:router.lan" in text
    assert "sha256 Fingerprint=" + cert.fingerprint(c) in text
    fp = cert.fingerprint(c)
    assert not cert.ensure(c, k, ["127.0.0.1"], []) and cert.fingerprint(c) == fp
    os.unlink(k)
    with pytest.raises(WebError, match="exists but"):
        cert.ensure(c, k, ["127.0.0.1"], [])


def test_no_openssl_and_no_certificate(tmp_path, monkeypatch):
    monkeypatch.setattr(cert, "find_openssl", lambda: None)
    with pytest.raises(WebError, match="no `openssl` command to make one"):
        cert.ensure(str(tmp_path / "c.pem"), str(tmp_path / "k.pem"), ["127.0.0.1"], [])


def test_a_directory_that_cannot_be_made_is_a_web_error(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(WebError, match="cannot write the certificate in .*file/web: Not a directory"):
        cert.ensure(str(tmp_path / "file" / "web" / "cert.pem"), str(tmp_path / "k.pem"), ["127.0.0.1"], [])
    (tmp_path / "keys").write_text("")
    with pytest.raises(WebError, match="cannot write the certificate in .*keys: File exists"):
        cert.ensure(str(tmp_path / "w" / "cert.pem"), str(tmp_path / "keys" / "k.pem"), ["127.0.0.1"], [])


def vpd(*args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "vpn_director"] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, env=env)


def test_web_command_turned_off_exits_at_once(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"data_dir": str(tmp_path), "webui": {"enabled": False}}))
    p = vpd("-c", str(path), "web")
    assert (p.returncode, p.stdout.strip().splitlines(), p.stderr) == (
        0, ["web UI is off (webui.enabled is false in %s)" % path], "")


def test_print_fingerprint(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"data_dir": str(tmp_path), "webui": {"listen": ["127.0.0.1"], "port": 9443}}))
    p = vpd("-c", str(path), "web", "--print-fingerprint")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "https://127.0.0.1:9443/"
    assert lines[2] == "SHA-256 fingerprint " + cert.fingerprint(str(tmp_path / "web" / "cert.pem"))


def test_help_names_the_command():
    p = vpd("--help")
    assert "web" in p.stdout and "the web UI" in p.stdout
