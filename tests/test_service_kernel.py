"""On a real kernel: the installed hooks and the drift watchdog restore what a firewall restart
removes, leave a matching state alone, and keep out of a stopped or never-started router."""

import json
import shutil

import pytest

import rootfs
from fakesyslog import Syslog
from test_apply_kernel import FULL
from test_lab_kernel import paths
from vpn_director.lab import DEFAULT_CONFIG

pytestmark = [pytest.mark.kernel,
              pytest.mark.skipif(not rootfs.can_bind_opt(), reason="needs /opt and unshare")]

# What Merlin's firewall rebuild does to us: the mangle table replaced, our ip rules deleted.
FIREWALL_RESTART = ("iptables-{b} -t mangle -F && iptables-{b} -t mangle -X && "
                    "ip rule del pref 200 && ip rule del pref 16384 && ip rule del pref 16385")
EVENTS = {  # hook -> (arguments, environment) as the firmware passes them
    "firewall-start": (["eth0"], {}),
    "nat-start": ([], {}),
    "wan-event": (["0", "connected"], {}),
    "openvpn-event": (["tun11"], {"script_type": "route-up"}),
    "wgclient-start": (["1"], {}),
}


@pytest.fixture
def installed(router, tmp_path):
    """A Merlin install whose config is the test router's FULL config."""
    root = tmp_path / "root"
    rootfs.install(root)
    cfg = router.config(FULL)
    shutil.copyfile(cfg, str(root / "opt" / "vpn-director" / "vpn-director.json"))
    syslog = Syslog(tmp_path / "log.sock")
    yield root, cfg, syslog
    syslog.close()


def fire(router, root, hook, syslog):
    args, env = EVENTS[hook]
    p = rootfs.run_hook(root, hook, args, netns=router.ns.name,
                        env=dict(env, VPD_IPTABLES=router.backend, VPD_SYSLOG=syslog.path))
    assert p.returncode == 0, p.stderr
    return syslog.messages()


@pytest.mark.parametrize("hook", sorted(EVENTS))
def test_hook_restores_what_a_firewall_restart_removed(router, installed, hook):
    root, cfg, syslog = installed
    router.vpd("apply", config=cfg, check=0)
    good = router.snapshot()
    router.ns.sh(FIREWALL_RESTART.format(b=router.backend))
    assert router.snapshot() != good
    router.vpd("status", config=cfg, check=3)
    logged = fire(router, root, hook, syslog)
    assert router.snapshot() == good, logged
    router.vpd("status", config=cfg, check=0)
    summary = [m for m in logged if "drift repaired" in m]
    assert len(summary) == 1 and "change(s) in" in summary[0] and "update mangle chains and jumps" in summary[0]


def test_watchdog_leaves_a_matching_state_alone(router, installed, tmp_path):
    root, cfg, syslog = installed
    router.vpd("apply", config=cfg, check=0)
    good = router.snapshot()
    stats = tmp_path / "stats.json"
    p = router.vpd("apply", "--if-changed", config=cfg, check=0, env={"VPD_STATS": str(stats)})
    assert p.stdout == "" and p.stderr == ""
    assert json.loads(stats.read_text())["writes"] == 0  # only the read-only check ran
    assert "live state matches the config" in router.vpd("-v", "apply", "--if-changed", config=cfg, check=0).stdout
    assert fire(router, root, "firewall-start", syslog) == []  # and nothing in syslog every minute
    assert router.snapshot() == good


def test_watchdog_keeps_out_of_a_stopped_or_never_started_router(router, installed):
    root, cfg, syslog = installed
    empty = router.snapshot()
    fire(router, root, "firewall-start", syslog)
    assert router.snapshot() == empty  # never started: the example config must not go live
    router.vpd("apply", config=cfg, check=0)
    router.vpd("stop", config=cfg, check=0)
    assert router.snapshot() == empty
    fire(router, root, "firewall-start", syslog)
    assert router.snapshot() == empty  # stopped stays stopped
    router.vpd("apply", "xray", config=cfg, check=0)
    with_xray = router.snapshot()
    router.ns.sh("iptables-%s -t mangle -F XRAY_TPROXY" % router.backend)
    fire(router, root, "nat-start", syslog)
    assert router.snapshot() == with_xray  # repaired, and the tunnels were not started


def test_firewall_restart_then_hook_real_packets(lab, backend, tmp_path):  # noqa: F811
    root = tmp_path / "root"
    rootfs.install(root)
    lab.up(DEFAULT_CONFIG)
    shutil.copyfile(lab.config_path, str(root / "opt" / "vpn-director" / "vpn-director.json"))
    assert lab.apply().returncode == 0
    expect = lab.expectation()
    wanted = {c: [expect(c, t["dst"], t["proto"])[1] for t in lab.targets()] for c in lab.clients}

    def observed():
        return {c: paths(lab, c) for c in lab.clients}
    assert observed() == wanted
    lab._run(["sh", "-c", FIREWALL_RESTART.format(b=backend)], ns=lab.router)
    broken = observed()
    assert broken["192.168.50.10"][0] == "wan"  # the Xray client now leaves directly
    assert broken["192.168.50.20"][0] == "wan"  # and the wgc1 client too
    p = rootfs.run_hook(root, "firewall-start", ["eth0"], netns=lab.router, env={"VPD_IPTABLES": backend})
    assert p.returncode == 0, p.stderr
    assert observed() == wanted
