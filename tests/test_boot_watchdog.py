"""Boot handling (boot wait, bounded interface waits, sets before rules) and the watchdog's
bookkeeping (what is started, spacing of re-applies, joining a pending run), with a fake clock."""

import fcntl
import os
from types import SimpleNamespace

import pytest

from vpn_director import boot, config, desired, reconcile, state, watchdog
from vpn_director.live import LiveState


class Clock:
    """time.monotonic/time.time and sleep that only move when the code under test sleeps."""

    def __init__(self, t=1000.0):
        self.t = t
        self.sleeps = []

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.sleeps.append(s)
        self.t += s


def sysfs(tmp_path, up=(), down=()):
    for name, flags in [(n, "0x1003") for n in up] + [(n, "0x1002") for n in down]:
        (tmp_path / "net" / name).mkdir(parents=True, exist_ok=True)
        (tmp_path / "net" / name / "flags").write_text(flags + "\n")
    return str(tmp_path / "net")


def cfg_for(tmp_path, **adv):
    raw = {"xray": {"exclude_sets": []}, "tunnel_director": {"tunnels": {
        "wgc1": {"clients": ["192.168.50.20"]}, "ovpnc1": {"clients": ["192.168.50.21"]},
        "main": {"clients": ["192.168.50.22"]}, "ovpnc3": {"clients": []}}},
        "advanced": dict({"rt_tables": str(tmp_path / "rt"), "state_dir": str(tmp_path / "state")}, **adv)}
    (tmp_path / "rt").write_text("111 wgc1\n113 ovpnc1\n114 ovpnc3\n")
    return config.validate(raw)


# --- interfaces ---------------------------------------------------------------------------------

def test_tunnel_interfaces_follow_merlins_names():
    assert boot.tunnel_interfaces("wgc1") == ["wgc1"]
    assert boot.tunnel_interfaces("ovpnc2") == ["ovpnc2", "tun12"]
    assert boot.tunnel_interfaces("main") == [] and boot.tunnel_interfaces("120") == []


def test_needed_lists_the_lan_and_tunnels_with_clients(tmp_path):
    items = boot.needed(cfg_for(tmp_path))
    assert [(what, ifs) for what, ifs, _ in items] == [
        ("LAN interface", ["br0"]), ("tunnel wgc1", ["wgc1"]), ("tunnel ovpnc1", ["ovpnc1", "tun11"])]


def test_interface_wait_ends_as_soon_as_all_are_up(tmp_path):
    net = sysfs(tmp_path, up=["br0"], down=["wgc1"])
    clock, said = Clock(), []

    def sleep(s):  # wgc1 comes up during the second wait
        clock.sleep(s)
        if len(clock.sleeps) == 2:
            sysfs(tmp_path, up=["wgc1"])
    items = [("LAN interface", ["br0"], "x"), ("tunnel wgc1", ["wgc1"], "y")]
    assert boot.wait_interfaces(items, 10, said.append, sleep, clock, net) == []
    assert len(clock.sleeps) == 2 and said == []


def test_interface_wait_is_bounded_and_a_down_tunnel_is_only_logged(tmp_path):
    net = sysfs(tmp_path, up=["br0", "tun11"], down=["wgc1"])
    clock, said = Clock(), []
    items = boot.needed(cfg_for(tmp_path))
    missing = boot.wait_interfaces(items, 5, said.append, clock.sleep, clock, net)
    assert [m[0] for m in missing] == ["tunnel wgc1"]  # ovpnc1 counts as up through tun11
    assert sum(clock.sleeps) == pytest.approx(5)
    assert said == ["tunnel wgc1: wgc1 not up after 5s; applying anyway (its table has no route until it is up)"]


def test_boot_wait_then_interfaces_only_right_after_boot(tmp_path, monkeypatch):
    cfg = cfg_for(tmp_path, boot={"min_time": 120, "wait_delay": 30, "interface_wait": 4})
    net = sysfs(tmp_path, down=["br0"])
    for uptime, expected in ((50.0, 30 + 4), (500.0, 0)):
        monkeypatch.setattr(state, "uptime", lambda: uptime)
        clock, said = Clock(), []
        missing = boot.prepare(cfg, said.append, clock.sleep, clock, net)
        assert sum(clock.sleeps) == pytest.approx(expected)
        assert bool(missing) == (uptime < 120)


def test_sets_are_created_before_any_rule_references_them(tmp_path):
    (tmp_path / "data" / "ipsets").mkdir(parents=True)
    (tmp_path / "data" / "ipsets" / "ru.zone").write_text("77.88.0.0/16\n")
    (tmp_path / "rt").write_text("111 wgc1\n")
    cfg = config.validate({"data_dir": str(tmp_path / "data"), "advanced": {"rt_tables": str(tmp_path / "rt")},
                           "xray": {"clients": ["192.168.50.10"], "exclude_sets": ["ru"]},
                           "tunnel_director": {"tunnels": {"wgc1": {"clients": ["192.168.50.20"], "exclude": ["ru"]}}}})
    p = reconcile.plan(desired.build(cfg), LiveState(), "all", {})  # a kernel fresh from boot
    tools = [s.tool for s in p.steps]
    assert tools.index("ipset") < tools.index("iptables")
    assert "create ru " in p.steps[0].batch and "create XRAY_CLIENTS " in p.steps[0].batch


# --- watchdog -------------------------------------------------------------------------------------

def wd_cfg(tmp_path, interval=10):
    return SimpleNamespace(state_dir=str(tmp_path / "state"), lock_timeout=5, watchdog_min_interval=interval)


class Check:
    def __init__(self, steps=0):
        self.scopes, self.steps = [], steps

    def __call__(self, scope):
        self.scopes.append(scope)
        return SimpleNamespace(steps=[object()] * self.steps, changes=[], elapsed=0.0)


def test_nothing_is_watched_before_an_explicit_apply(tmp_path):
    check = Check()
    p, why = watchdog.run(wd_cfg(tmp_path), check, print)
    assert p is None and "not started" in why and check.scopes == []


def test_watch_keeps_to_what_was_started_and_not_stopped(tmp_path):
    cfg, check = wd_cfg(tmp_path), Check()
    watchdog.mark(cfg.state_dir, "all", started=True)
    watchdog.mark(cfg.state_dir, "xray", started=False)
    assert watchdog.active(cfg.state_dir) == {"tunnel"}
    watchdog.run(cfg, check, print)
    watchdog.run(cfg, check, print, scope="xray")  # stopped: not checked
    watchdog.mark(cfg.state_dir, "xray", started=True)
    watchdog.run(cfg, check, print)
    assert check.scopes == ["tunnel", "all"]


def test_reapplies_are_spaced_and_a_clock_step_cannot_stretch_the_wait(tmp_path):
    cfg = wd_cfg(tmp_path, interval=10)
    watchdog.mark(cfg.state_dir, "all", started=True)
    clock = Clock(5000.0)
    p, _ = watchdog.run(cfg, Check(steps=2), print, sleep=clock.sleep, now=clock)
    assert p.steps and clock.sleeps == []  # first re-apply: no wait
    clock.t += 3
    said = []
    watchdog.run(cfg, Check(steps=1), said.append, sleep=clock.sleep, now=clock)
    assert clock.sleeps == [pytest.approx(7)] and "checking in 7s" in said[0]
    clock.t -= 3600  # the clock jumped back (NTP at boot)
    watchdog.run(cfg, Check(), print, sleep=clock.sleep, now=clock)
    assert clock.sleeps[-1] == pytest.approx(10)


def test_without_wait_a_recent_reapply_skips_the_check(tmp_path):
    cfg = wd_cfg(tmp_path, interval=10)
    watchdog.mark(cfg.state_dir, "all", started=True)
    clock = Clock(5000.0)
    watchdog.run(cfg, Check(steps=2), print, sleep=clock.sleep, now=clock, wait=False)
    clock.t += 3
    check = Check(steps=1)
    p, why = watchdog.run(cfg, check, print, sleep=clock.sleep, now=clock, wait=False)
    assert p is None and why == "the last re-apply was 3s ago; checking in a later round"
    assert check.scopes == [] and clock.sleeps == []
    clock.t += 7
    p, _ = watchdog.run(cfg, check, print, sleep=clock.sleep, now=clock, wait=False)
    assert p.steps and clock.sleeps == []


def test_a_check_without_changes_does_not_delay_the_next(tmp_path):
    cfg = wd_cfg(tmp_path)
    watchdog.mark(cfg.state_dir, "all", started=True)
    clock = Clock()
    for _ in range(3):
        watchdog.run(cfg, Check(steps=0), print, sleep=clock.sleep, now=clock)
    assert clock.sleeps == [] and not os.path.exists(os.path.join(cfg.state_dir, watchdog.LAST))


def test_a_trigger_while_a_run_is_pending_joins_it(tmp_path):
    cfg, check = wd_cfg(tmp_path), Check()
    watchdog.mark(cfg.state_dir, "all", started=True)
    with open(os.path.join(cfg.state_dir, watchdog.PENDING), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # another run is waiting to check
        p, why = watchdog.run(cfg, check, print)
    assert p is None and "joined" in why and check.scopes == []
    watchdog.run(cfg, check, print)  # released: the next trigger checks itself
    assert check.scopes == ["all"]


def test_a_stop_during_the_wait_wins(tmp_path):
    cfg, check = wd_cfg(tmp_path), Check()
    watchdog.mark(cfg.state_dir, "all", started=True)
    p, why = watchdog.run(cfg, check, print, prepare=lambda: watchdog.mark(cfg.state_dir, "all", started=False))
    assert p is None and "stopped" in why and check.scopes == []


def test_watchdog_config_keys(tmp_path):
    cfg = config.validate({"advanced": {"watchdog": {"min_interval": 0}, "boot": {"interface_wait": 3}}})
    assert (cfg.watchdog_min_interval, cfg.boot_interface_wait) == (0, 3)
    cfg = config.validate({})
    assert (cfg.watchdog_min_interval, cfg.boot_interface_wait, cfg.log_file, cfg.log_syslog) == (10, 10, None, True)
