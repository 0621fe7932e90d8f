"""The watch daemon's rounds with a fake world (no kernel, no Xray): what it checks, what it carries
out, the state file and the event queue, the lock, SIGTERM, the due subscriptions, the WAN check
on real sockets, and what `xray status` shows."""

import json
import os
import signal
import socket
import threading

import pytest

from vpn_director import cli, config, state, watchdog
from vpn_director.xray import XrayError, actions, events, failover, health, status, store, watch
from vpn_director.xray.settings import Subscription

A, B, C = ("%012x" % n for n in (1, 2, 3))


def server(sid, n, source="sub:main", port=443):
    ip = "203.0.113.%d" % n
    return {"id": sid, "name": "S%d" % n, "source": source, "address": ip, "ips": [ip], "port": port, "label": "ss",
            "outbound": {"protocol": "shadowsocks", "settings": {"servers": [{"address": ip, "port": port}]}}}


class Out:
    def __init__(self):
        self.lines = []

    def note(self, m):
        self.lines.append(("note", m))

    def warn(self, m):
        self.lines.append(("warn", m))

    def err(self, m):
        self.lines.append(("err", m))

    def detail(self, m):
        self.lines.append(("detail", m))

    def info(self, m):
        self.lines.append(("info", m))


class World(watch.Effects):
    """Alive servers, a WAN that may be down; `use` records the new active server in the config
    file as actions.use does; proxy_off/on mark the Xray part stopped/started as engine does."""

    def __init__(self, path, state_dir):
        super().__init__()
        self.path, self.state_dir = path, state_dir
        self.alive = {A: True, B: True, C: True}
        self.wan_up = True
        self.calls = []

    def active(self):
        return json.load(open(self.path))["xray"].get("active_server")

    def routing(self, cfg, out):
        self.calls.append("routing")

    def check_active(self, cfg):
        up = self.wan_up and self.alive[cfg.xray.side.active_server]
        return up, 30 if up else None, "HTTP 204" if up else "no HTTP answer through the proxy (connection closed)"

    def check_wan(self, cfg, servers, exclude):
        self.calls.append(("wan", exclude))
        return self.wan_up, "203.0.113.2:443 answered directly (connected)" if self.wan_up else "network unreachable"

    def test(self, cfg, servers):
        self.calls.append(("test", [s["id"] for s in servers]))
        return {s["id"]: {"ok": self.wan_up and self.alive[s["id"]], "latency_ms": 20, "reason": "x"} for s in servers}

    def use(self, cfg, sid):
        self.calls.append(("use", sid))
        if not self.alive[sid]:
            raise XrayError("switching to %s failed: the probe through the proxy failed" % sid)
        raw = json.load(open(self.path))
        raw["xray"]["active_server"] = sid
        state.write_atomic(self.path, json.dumps(raw))

    def proxy_off(self, cfg, out):
        self.calls.append("off")
        watchdog.mark(self.state_dir, "xray", started=False)

    def proxy_on(self, cfg, out):
        self.calls.append("on")
        watchdog.mark(self.state_dir, "xray", started=True)


@pytest.fixture
def world(tmp_path):
    (tmp_path / "rt").write_text("")
    path = tmp_path / "vpn-director.json"
    sd = str(tmp_path / "state")

    def setup(**xray):
        raw = {"data_dir": str(tmp_path / "data"),
               "xray": dict({"clients": ["192.168.50.10"], "active_server": A,
                             "health": {"interval_s": 1, "fail_threshold": 2}}, **xray),
               "advanced": {"state_dir": sd, "rt_tables": str(tmp_path / "rt"), "lock_timeout": 5,
                            "log": {"syslog": False}}}
        path.write_text(json.dumps(raw))
        st = store.Store()
        st.servers = [server(A, 1), server(B, 2), server(C, 3, source="manual")]
        store.save(str(tmp_path / "data"), st)
        state.ensure_dir(sd)
        watchdog.mark(sd, "xray", started=True)
        w = World(str(path), sd)
        w.clock = [1000.0]
        w.out = Out()
        w.daemon = watch.Daemon(config.load(str(path)), w.out, w, clock=lambda: w.clock[0])

        def rounds(n=1, step=1.0):
            for _ in range(n):
                w.clock[0] += step
                w.daemon.round()
            return events.load_state(sd)
        w.rounds = rounds
        w.events = lambda: [(e["kind"], e["from"], e["to"]) for e in events.read(sd)]
        return w
    return setup


def test_a_dead_server_is_switched_after_the_threshold_and_told(world):
    w = world()
    st = w.rounds()
    assert st["last_check"]["ok"] and st["wan"] == "up" and st["active"] == A and not st["note"]
    w.alive[A] = False
    st = w.rounds()
    assert st["consecutive_failures"] == 1 and w.active() == A and ("wan", A) not in w.calls
    st = w.rounds()
    assert w.active() == B and ("wan", A) in w.calls and ("test", [A, B, C]) in w.calls
    assert st["active"] == B and st["last_switch"]["from"] == A and st["last_switch"]["to"] == B
    assert w.events() == [("switch", A, B)]
    said = [m for k, m in w.out.lines if k == "warn"]
    assert said and said[0].startswith("xray switch %s -> %s: 'S1' (%s) failed 2 check(s) in a row" % (A, B, A))
    st = w.rounds()
    assert st["last_check"]["ok"] and w.calls.count("routing") == 4


def test_wan_down_no_switch_and_the_state_says_so(world):
    w = world()
    w.rounds()
    w.wan_up = False
    st = w.rounds(4)
    assert st["wan"] == "down" and st["note"] == "WAN down: no switch" and w.active() == A
    assert not [c for c in w.calls if c[0] in ("test", "use")]
    assert w.events() == [("wan-down", None, None)]
    lines = status.health_lines(status.health(w.daemon.cfg), now=w.clock[0])
    assert "WAN DOWN: network unreachable" in lines[1] and "WAN down: no switch" in lines[2]
    w.wan_up = True
    st = w.rounds()
    assert st["wan"] == "up" and w.events()[-1] == ("wan-up", None, None) and w.active() == A


def test_return_to_the_preferred_after_the_hold(world):
    w = world(preferred_server=A, failover={"return_hold_s": 3})
    w.alive[A] = False
    w.rounds(2)
    assert w.active() == B
    w.alive[A] = True
    st = w.rounds()
    assert st["preferred_hold_since"] == w.clock[0] and w.active() == B
    w.rounds(2)
    assert w.active() == B
    w.rounds()
    assert w.active() == A and w.events()[-1] == ("return", B, A)


def test_all_down_block_keeps_the_xray_part(world):
    w = world()
    w.alive = {A: False, B: False, C: False}
    st = w.rounds(4)
    assert st["all_down"] and st["mode"] == "blocked" and "off" not in w.calls
    assert [e[0] for e in w.events()] == ["all-down"]
    lines = status.health_lines(status.health(w.daemon.cfg), now=w.clock[0])
    assert "failover: BLOCKED (TPROXY stays: clients' proxied traffic stops); 0 of 5 switches" in lines[3]
    w.alive[B] = True
    st = w.rounds()
    assert not st["all_down"] and st["mode"] == "proxy" and w.active() == B
    assert w.events()[-1] == ("recovery", A, B)


def test_all_down_direct_removes_the_xray_part_and_puts_it_back(world):
    w = world(failover={"on_all_down": "direct"})
    w.alive = {A: False, B: False, C: False}
    st = w.rounds(2)
    assert st["mode"] == "direct" and w.calls.count("off") == 1 and "xray" not in watchdog.active(w.state_dir)
    st = w.rounds(3)  # still checked while the part is off
    assert st["consecutive_failures"] == 5 and w.calls.count("off") == 1
    w.alive[A] = True
    st = w.rounds()
    assert st["mode"] == "proxy" and w.calls.count("on") == 1 and "xray" in watchdog.active(w.state_dir)
    assert [e[0] for e in w.events()] == ["all-down", "recovery"]


def test_direct_mode_leaves_a_part_someone_else_stopped_meanwhile(world):
    w = world(failover={"on_all_down": "direct"})
    w.alive = {A: False, B: False, C: False}
    w.rounds(2)
    os.utime(os.path.join(w.state_dir, watchdog.ACTIVE), ns=(1, 1))  # another command wrote it
    w.alive[A] = True
    w.rounds()
    assert "on" not in w.calls
    assert "left as it is" in events.read(w.state_dir)[-1]["reason"]
    st = w.rounds()
    assert st["note"] == "the Xray part is not started (`vpn-director apply`)"


@pytest.mark.parametrize("change,mode", [({"on_all_down": "block"}, "blocked"), ({"enabled": False}, "proxy")])
def test_turning_direct_off_puts_the_xray_part_back(world, change, mode):
    w = world(failover={"on_all_down": "direct"})
    w.alive = {A: False, B: False, C: False}
    w.rounds(2)
    assert w.calls.count("off") == 1
    raw = json.load(open(w.path))
    raw["xray"]["failover"].update(change)
    state.write_atomic(w.path, json.dumps(raw))
    st = w.rounds()
    assert w.calls.count("on") == 1 and "xray" in watchdog.active(w.state_dir) and st["mode"] == mode
    assert ("note", "watch: on_all_down direct is off now: the Xray part is applied again") in w.out.lines


def test_someone_applying_while_direct_means_blocked(world):
    w = world(failover={"on_all_down": "direct"})
    w.alive = {A: False, B: False, C: False}
    w.rounds(2)
    watchdog.mark(w.state_dir, "xray", started=True)
    st = w.rounds()
    assert st["mode"] == "blocked" and st["all_down"]


def test_a_failed_switch_is_an_event_and_the_next_round_tries_again(world):
    w = world()
    w.alive[A] = False

    def flaky_use(cfg, sid, orig=w.use):
        if w.calls.count(("use", sid)) == 0:
            w.calls.append(("use", sid))
            raise XrayError("Xray does not listen on port 12346 after 15s")
        orig(cfg, sid)
    w.use = flaky_use
    w.rounds(2)
    assert w.events() == [("failed", A, B)] and w.active() == A
    w.rounds()
    assert w.events()[-1] == ("switch", A, B) and len(events.load_state(w.state_dir)["switches"]) == 2


def test_nothing_is_checked_when_off_stopped_or_without_a_server(world):
    for xray, note in (({"health": {"enabled": False}}, "health checks are off"),
                       ({"active_server": None}, "no active server"),
                       ({"clients": []}, "no Xray clients")):
        w = world(**xray)
        st = w.rounds()
        assert st["note"].startswith(note) and st["last_check"] is None
    w = world()
    watchdog.mark(w.state_dir, "xray", started=False)
    assert w.rounds()["note"] == "the Xray part is not started (`vpn-director apply`)"


def test_a_failing_part_does_not_stop_the_others(world):
    w = world()

    def broken(cfg, out):
        raise XrayError("iptables-save failed")
    w.routing = broken
    st = w.rounds()
    assert st["last_check"]["ok"]
    assert ("err", "watch: routing watchdog: iptables-save failed") in w.out.lines


def test_due_subscriptions_are_refreshed_and_a_failing_one_waits_an_hour(world):
    w = world(subscriptions=[{"id": "main", "url": "https://sub.example/x"},
                             {"id": "off", "url": "https://sub.example/y", "enabled": False}])
    got = []

    def refresh(cfg, sub):
        got.append(sub.id)
        raise XrayError("subscription main: HTTP 500; its previous list is kept")
    w.refresh = refresh
    w.clock[0] = 1e6  # never updated: due
    w.rounds()
    w.rounds(10, step=60)
    assert got == ["main"]
    w.rounds(1, step=3600)
    assert got == ["main", "main"]


def test_due_rule_is_one_for_cron_and_the_daemon(tmp_path, build_cfg):
    cfg = build_cfg({"xray": {"subscriptions": [{"id": "a", "url": "https://x/1", "interval_h": 2},
                                                {"id": "b", "url": "https://x/2"}]}})
    st = store.Store()
    st.sources = {"sub:a": {"updated": 10000}, "sub:b": {"updated": 10000}}
    store.save(cfg.data_dir, st)
    assert [s.id for s in actions.due_subscriptions(cfg, now=10000 + 7200)] == ["a"]
    assert [s.id for s in actions.due_subscriptions(cfg, now=10000 + 7200, tried={"a": 10000 + 7000})] == []
    assert actions.due_subscriptions(cfg, [Subscription("b", "https://x/2")], now=10000 + 12 * 3600)[0].id == "b"


def test_events_file_is_capped_and_read_since(tmp_path):
    sd = str(tmp_path)
    for i in range(events.MAX_LINES + 20):
        events.append(sd, {"time": float(i), "kind": "switch", "from": A, "to": B, "reason": "r%d" % i})
    got = events.read(sd)
    assert len(got) == events.MAX_LINES and got[0]["reason"] == "r20" and got[-1]["time"] == events.MAX_LINES + 19
    assert [e["time"] for e in events.read(sd, since=events.MAX_LINES + 17)] == [events.MAX_LINES + 18,
                                                                                events.MAX_LINES + 19]
    events.append(sd, {"time": 1e9, "kind": "switch", "from": A, "to": B, "reason": "x" * 100000})
    events.append(sd, {"time": 1e9 + 1, "kind": "switch", "from": A, "to": B, "reason": "y" * 100000})
    assert os.path.getsize(events.events_path(sd)) <= events.MAX_BYTES
    assert events.read(sd)[-1]["reason"].startswith("y")
    assert events.line({"kind": "wan-down", "from": None, "to": None, "reason": "no route"}) == "xray wan-down: no route"
    events.append(sd, {"time": 5.0, "kind": "wan-up", "from": None, "to": None, "reason": "same round"})
    assert events.read(sd)[-1]["time"] == 1e9 + 1.001  # never earlier than or equal to the last one


def test_a_damaged_state_file_reads_as_the_initial_state(tmp_path):
    sd = str(tmp_path)
    with open(os.path.join(sd, events.HEALTH), "w") as f:
        f.write('{"consecutive_failures": "three", "switches": [1, "x", true], "mode": "weird", "all_down": 1}')
    st = events.load_state(sd)
    assert st["consecutive_failures"] == 0 and st["switches"] == [1] and st["mode"] == "proxy"
    assert st["all_down"] is False
    with open(os.path.join(sd, events.HEALTH), "w") as f:
        f.write("{not json")
    assert events.load_state(sd) == failover.initial()


def test_one_daemon_per_state_dir_and_sigterm_ends_it_after_the_round(world):
    w = world()
    fd = watch.lock(w.state_dir)
    try:
        with pytest.raises(XrayError, match="another watch daemon runs \\(PID %d\\)" % os.getpid()):
            watch.run(w.daemon.cfg, w.out, effects=w)
        assert watch.run(w.daemon.cfg, w.out, once=True, effects=w) == 0
        assert "routing" not in w.calls
    finally:
        os.close(fd)
    rounds = []

    def routing(cfg, out):
        rounds.append(1)
        if len(rounds) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
    w.routing = routing
    before = signal.getsignal(signal.SIGTERM)
    assert watch.run(w.daemon.cfg, w.out, effects=w) == 0
    assert len(rounds) == 2 and signal.getsignal(signal.SIGTERM) == before
    assert ("note", "watch: stopped") in w.out.lines
    assert events.load_state(w.state_dir)["last_check"]["ok"]  # the round that got the signal finished
    assert events.daemon_pid(w.state_dir) is None


def test_the_loop_waits_the_interval_and_a_stop_event_ends_it(world):
    w = world()
    stop = threading.Event()
    rounds = []
    w.routing = lambda cfg, out: rounds.append(events.daemon_pid(w.state_dir)) or (len(rounds) == 2 and stop.set())
    t = threading.Thread(target=watch.run, args=(w.daemon.cfg, w.out), kwargs={"effects": w, "stop": stop})
    t.start()
    t.join(10)
    assert not t.is_alive() and len(rounds) == 2


def test_watch_once_from_the_command_line(tmp_path, capsys):
    if os.geteuid() != 0:
        pytest.skip("watch needs root")
    (tmp_path / "rt").write_text("")
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"data_dir": str(tmp_path / "d"), "advanced": {
        "state_dir": str(tmp_path / "s"), "rt_tables": str(tmp_path / "rt"), "log": {"syslog": False}}}))
    assert cli.main(["-c", str(path), "watch", "--once", "-v"]) == 0
    st = events.load_state(str(tmp_path / "s"))
    assert st["note"] == "no Xray clients in the config"
    assert capsys.readouterr().err == ""


def test_wan_check_on_real_sockets():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    open_port = listener.getsockname()[1]
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    try:
        servers = [{"id": A, "ips": ["127.0.0.1"], "port": open_port},  # the failing one: left out
                   {"id": B, "ips": ["127.0.0.1"], "port": closed_port}]
        # B's address is A's address: left out too, so only the URLs remain
        assert health.wan_targets(servers, exclude=A) == []
        servers[0]["ips"] = ["127.0.0.2"]
        assert health.wan_targets(servers, exclude=A) == [("127.0.0.1", closed_port)]
        up, how = health.check_wan(None, servers, 2, exclude=A, urls=[])
        assert up and how == "127.0.0.1:%d answered directly (refused)" % closed_port
        servers[1]["port"] = open_port
        assert health.check_wan(None, servers, 2, exclude=A, urls=[]) == (
            True, "127.0.0.1:%d answered directly (connected)" % open_port)

        def unreachable(target, timeout):
            raise OSError("Network is unreachable")
        up, how = health.check_wan(None, servers, 2, exclude=A, urls=["http://192.0.2.1/generate_204"],
                                   connect=unreachable, get=lambda url, t: (_ for _ in ()).throw(OSError("no route")))
        assert not up and "Network is unreachable" in how and "no route" in how
        up, how = health.check_wan(None, servers, 2, exclude=A, urls=["http://x/generate_204"], connect=unreachable,
                                   get=lambda url, t: (302, 5))
        assert up and how == "http://x/generate_204 answered directly (HTTP 302)"
    finally:
        listener.close()
