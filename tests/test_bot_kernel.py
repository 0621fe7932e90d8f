"""The bot on a real kernel: /clients, tap a device, "via wgc1", Confirm: the config file and the
kernel change, and a real packet from that client leaves through wgc1 (both iptables backends)."""

import json
import os
import sys

import pytest

from botfake import ADMIN
from test_ops_kernel import path_of, vpd

pytestmark = pytest.mark.kernel

RAW = {
    "xray": {"clients": ["192.168.50.10", "192.168.50.30"], "servers": ["203.0.113.10"], "exclude_sets": []},
    "tunnel_director": {"tunnels": {"wgc1": {"clients": ["192.168.50.20"]}}},
    "names": {"192.168.50.30": "tablet"},
    "telegram": {"token_file": "/nonexistent/token", "admins": [ADMIN]},
}


def test_route_via_wgc1_from_the_bot_changes_config_and_kernel(lab):
    lab.up(RAW)
    vpd(lab, "apply")
    assert path_of(lab, "192.168.50.30") == "xray"
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(lab.env(), PYTHONPATH=os.pathsep.join([lab.env()["PYTHONPATH"], here]))
    p = lab._run([sys.executable, os.path.join(here, "botkernel.py"), lab.config_path, "192.168.50.30", "wgc1"],
                 ns=lab.router, env=env)
    seen = json.loads(p.stdout)
    assert "192.168.50.30" in seen["list"] and "tablet" in seen["list"]
    assert seen["question"] == "Route 192.168.50.30 via wgc1?"
    assert seen["result"].startswith("Done: client 192.168.50.30 (tablet): xray → wgc1"), seen["result"]

    raw = json.load(open(lab.config_path))
    assert raw["xray"]["clients"] == ["192.168.50.10"]
    assert raw["tunnel_director"]["tunnels"]["wgc1"]["clients"] == ["192.168.50.20", "192.168.50.30"]
    assert raw["telegram"] == RAW["telegram"]  # the bot's own section is kept as it was
    assert vpd(lab, "status").returncode == 0  # the kernel matches the new file
    assert path_of(lab, "192.168.50.30") == "wgc1"  # a real packet leaves by wgc1
    assert path_of(lab, "192.168.50.10") == "xray"
    hist = json.loads(vpd(lab, "config", "history", "--json").stdout)["versions"]
    assert hist[-1]["summary"] == "client 192.168.50.30 (tablet): xray → wgc1"
