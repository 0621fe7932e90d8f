"""The failover policy on plain data with a fake clock: counting failures, the WAN rule, the
candidate order, the hourly switch limit over a sliding hour, the hold before the return to the
preferred server, all-down (block/direct) and the recovery."""

import pytest

from vpn_director.xray import failover as fo
from vpn_director.xray.settings import Failover, Health, XraySide


def srv(n, source="sub:main", ip=None, port=443):
    ip = ip or "203.0.113.%d" % n
    return {"id": "%012x" % n, "name": "S%d" % n, "source": source, "address": ip, "ips": [ip], "port": port}


A, B, C, D = srv(1), srv(2), srv(3, source="manual"), srv(4, ip="203.0.113.1")  # D: A's address, other port
SERVERS = [A, B, C, D]


def side(health=None, **failover):
    """Settings: xray.health with interval 30 s and threshold 3 unless `health` says, xray.failover from keywords."""
    return XraySide(health=Health(**dict({"interval_s": 30, "fail_threshold": 3}, **(health or {}))),
                    failover=Failover(**failover))


def ok(ms=50):
    return {"ok": True, "latency_ms": ms, "reason": "HTTP 204"}


def bad(why="timed out"):
    return {"ok": False, "latency_ms": None, "reason": why}


class Sim:
    """Runs the policy round by round the way the watch daemon does, with a world of alive servers."""

    def __init__(self, s, active=A["id"], preferred=None, servers=SERVERS):
        self.s, self.servers, self.preferred = s, servers, preferred
        self.st = fo.initial()
        self.active = active
        self.alive = {x["id"]: True for x in servers}
        self.wan_up = True
        self.now = 1000.0
        self.events, self.switches, self.actions, self.tested = [], [], [], []

    def check(self, sid):
        return self.wan_up and self.alive[sid]

    def round(self, advance=30):
        self.now += advance
        up = self.check(self.active)
        self.st = fo.observe(self.st, self.active, (up, 40 if up else None, "ok" if up else "connection closed"),
                             self.now)
        want = fo.wants(self.st, self.s, self.preferred)
        wan = results = pref = None
        if "wan" in want:
            wan = (self.wan_up, "203.0.113.2:443 answered" if self.wan_up else "network unreachable")
        if "candidates" in want and (wan is None or wan[0]):
            ids = fo.candidates(self.servers, self.active, self.st["all_down"])
            self.tested.append(ids)
            results = {i: ok(10 * int(i, 16)) if self.check(i) else bad() for i in ids}
        if "preferred" in want:
            pref = (self.preferred, ok() if self.check(self.preferred) else bad())
        self.st, d, evs = fo.decide(self.st, self.s, self.now, self.servers, wan, results, pref)
        self.events += evs
        if d.action != fo.NONE:
            self.actions.append(d.action)
            if d.to:
                self.active = d.to
                self.switches.append(self.now)
            self.st, evs = fo.done(self.st, d, self.now, servers=self.servers)
            self.events += evs
        return d

    def kinds(self):
        return [e["kind"] for e in self.events]


def test_a_dead_server_is_left_after_fail_threshold_rounds_for_the_best_of_its_subscription():
    sim = Sim(side())
    sim.round()
    sim.alive[A["id"]] = False
    assert [sim.round().action for _ in range(2)] == [fo.NONE, fo.NONE]
    assert sim.st["consecutive_failures"] == 2
    d = sim.round()
    assert (d.action, d.to) == (fo.SWITCH, B["id"])  # same subscription before C (manual), D shares A's address
    assert sim.tested[-1] == [A["id"], B["id"], C["id"]]
    ev = sim.events[-1]
    assert ev["kind"] == "switch" and (ev["from"], ev["to"]) == (A["id"], B["id"])
    assert "'S1' (000000000001) failed 3 check(s) in a row (connection closed)" in ev["reason"]
    assert "'S2' (000000000002) answered in 20 ms" in ev["reason"] and "WAN up" in ev["reason"]
    assert sim.st["last_switch"]["to"] == B["id"] and sim.st["consecutive_failures"] == 0
    sim.round()
    assert sim.st["last_check"]["ok"] and sim.active == B["id"]


def test_other_sources_are_taken_when_the_own_has_nobody_alive_and_latency_orders_within_a_group():
    results = {B["id"]: bad(), C["id"]: ok(90), srv(5, source="sub:other")["id"]: ok(30)}
    servers = SERVERS + [srv(5, source="sub:other")]
    assert fo.best(servers, A["id"], results) == (srv(5)["id"], 30)
    results[B["id"]] = ok(500)
    assert fo.best(servers, A["id"], results) == (B["id"], 500)
    assert fo.candidates(SERVERS, A["id"], all_down=True) == [A["id"], B["id"], C["id"], D["id"]]
    assert fo.candidates(SERVERS, "gone00000000") == [A["id"], B["id"], C["id"], D["id"]]


def test_a_dead_path_to_a_server_that_answers_on_its_own_restarts_xray_on_it():
    """The live Xray failed (crashed, hung), not the server: the separate test passes."""
    s = side({"fail_threshold": 1})
    st = fo.observe(fo.initial(), A["id"], (False, None, "SOCKS inbound 127.0.0.1:12346: Connection refused"), 100)
    results = {A["id"]: ok(90), B["id"]: ok(20)}
    st, d, _ = fo.decide(st, s, 100, SERVERS, (True, "up"), results)
    assert (d.action, d.to) == (fo.SWITCH, A["id"]) and "answers in a separate test (90 ms)" in d.reason
    st, evs = fo.done(st, d, 100, servers=SERVERS)
    assert (evs[0]["kind"], evs[0]["from"], evs[0]["to"]) == ("switch", A["id"], A["id"])
    assert st["switches"] == [100]  # a restart costs like a switch


def test_wan_down_never_switches_and_is_said_once():
    sim = Sim(side())
    sim.round()
    sim.wan_up = False
    for _ in range(6):
        assert sim.round().action == fo.NONE
    assert sim.st["wan"] == "down" and sim.kinds() == ["wan-down"] and sim.tested == []
    assert sim.st["consecutive_failures"] == 6
    sim.wan_up = True
    sim.round()
    assert sim.kinds() == ["wan-down", "wan-up"] and sim.actions == []


def test_wan_back_but_the_server_still_dead_switches_at_once():
    sim = Sim(side())
    sim.round()
    sim.wan_up = False
    for _ in range(4):
        sim.round()
    sim.wan_up = True
    sim.alive[A["id"]] = False
    d = sim.round()
    assert (d.action, d.to) == (fo.SWITCH, B["id"]) and sim.kinds() == ["wan-down", "wan-up", "switch"]


def test_without_require_wan_the_wan_is_not_checked():
    sim = Sim(side({"require_wan": False, "fail_threshold": 1}))
    sim.alive[A["id"]] = False
    assert sim.round().action == fo.SWITCH and sim.st["wan"] == "unknown"


def test_return_to_the_preferred_only_after_the_hold_and_a_failure_restarts_it():
    sim = Sim(side(return_hold_s=300), preferred=A["id"])
    sim.round()
    sim.alive[A["id"]] = False
    for _ in range(3):
        sim.round()
    assert sim.active == B["id"]
    sim.round()
    assert sim.st["preferred_hold_since"] is None  # A still dead
    sim.alive[A["id"]] = True
    sim.round()
    start = sim.now
    assert sim.st["preferred_hold_since"] == start
    for _ in range(5):
        sim.round()
    sim.alive[A["id"]] = False  # one failed test
    sim.round()
    assert sim.st["preferred_hold_since"] is None
    sim.alive[A["id"]] = True
    sim.round()
    start = sim.now
    while sim.now - start < 300 - 30:
        assert sim.round().action == fo.NONE
    d = sim.round()
    assert (d.action, d.to, sim.now - start) == (fo.RETURN, A["id"], 300)
    assert sim.events[-1]["kind"] == "return" and "passed every check for 300 s" in sim.events[-1]["reason"]
    assert sim.active == A["id"] and sim.st["preferred_hold_since"] is None


def test_a_gap_in_the_preferred_tests_restarts_the_hold():
    sim = Sim(side(return_hold_s=120), preferred=A["id"], active=B["id"])
    sim.round()
    assert sim.st["preferred_hold_since"] == sim.now
    sim.round(advance=30 * 3 + 10 + 1)  # longer than 3 intervals + timeout: not continuous
    assert sim.st["preferred_hold_since"] == sim.now
    sim.round(), sim.round(), sim.round()
    assert sim.round().action == fo.RETURN


def test_flapping_is_bounded_by_max_switches_per_hour_over_any_sliding_hour():
    sim = Sim(side({"fail_threshold": 1}, return_hold_s=60, max_switches_per_hour=5), preferred=A["id"])
    for i in range(240):  # two hours of 30 s rounds; A up 2 minutes, down 1 minute
        sim.alive[A["id"]] = (i % 6) < 4
        sim.round()
    assert len(sim.switches) >= 5
    for t in sim.switches:
        assert len([u for u in sim.switches if t <= u < t + 3600]) <= 5
    assert "limit" in sim.kinds()
    limit = [e for e in sim.events if e["kind"] == "limit"]
    assert "max_switches_per_hour" in limit[0]["reason"]
    # once per stretch of being held back, not every round
    assert len(limit) <= len(sim.switches)


def test_the_limit_survives_in_the_state():
    sim = Sim(side({"fail_threshold": 1}, max_switches_per_hour=1))
    sim.alive[A["id"]] = False
    assert sim.round().action == fo.SWITCH
    saved = dict(sim.st)
    sim.alive[B["id"]] = False
    sim.alive[A["id"]] = True
    sim.st = saved
    assert sim.round().action == fo.NONE and sim.kinds()[-1] == "limit"
    sim.now += 3600
    assert sim.round().action == fo.SWITCH and sim.active == A["id"]


def test_all_down_block_once_then_recovery_by_a_switch():
    sim = Sim(side({"fail_threshold": 2}))
    sim.round()
    for x in SERVERS:
        sim.alive[x["id"]] = False
    sim.round()
    d = sim.round()
    assert (d.action, d.mode) == (fo.ALL_DOWN, "block")
    assert sim.st["all_down"] and sim.st["mode"] == "blocked"
    ev = sim.events[-1]
    assert ev["kind"] == "all-down" and "clients' proxied traffic stops" in ev["reason"]
    assert "'S2' (000000000002): timed out" in ev["reason"]
    for _ in range(5):
        assert sim.round().action == fo.NONE
    assert sim.kinds().count("all-down") == 1
    assert sim.tested[-1] == [A["id"], B["id"], C["id"], D["id"]]  # all down: even A's address is tried
    sim.alive[C["id"]] = True
    d = sim.round()
    assert (d.action, d.to) == (fo.RECOVER, C["id"])
    assert not sim.st["all_down"] and sim.st["mode"] == "proxy" and sim.kinds()[-1] == "recovery"


def test_all_down_direct_and_the_active_coming_back():
    sim = Sim(side({"fail_threshold": 1}, on_all_down="direct"))
    for x in SERVERS:
        sim.alive[x["id"]] = False
    d = sim.round()
    assert (d.action, d.mode, sim.st["mode"]) == (fo.ALL_DOWN, "direct", "direct")
    assert "clients go direct until a server is back" in sim.events[-1]["reason"]
    sim.alive[A["id"]] = True
    d = sim.round()
    assert (d.action, d.to) == (fo.RECOVER, None) and sim.st["mode"] == "proxy"
    assert sim.events[-1]["kind"] == "recovery" and sim.events[-1]["to"] == A["id"]


def test_leaving_all_down_is_not_held_back_by_the_limit():
    sim = Sim(side({"fail_threshold": 1}, max_switches_per_hour=1))
    sim.alive[A["id"]] = False
    sim.round()
    for x in SERVERS:
        sim.alive[x["id"]] = False
    sim.round()
    assert sim.st["all_down"]
    sim.alive[C["id"]] = True
    assert sim.round().action == fo.RECOVER


def test_a_failed_all_down_direct_stays_blocked_and_a_failed_switch_is_an_event():
    s = side({"fail_threshold": 1}, on_all_down="direct")
    st = fo.observe(fo.initial(), A["id"], (False, None, "closed"), 100)
    st, d, _ = fo.decide(st, s, 100, SERVERS, (True, "up"), {B["id"]: bad(), C["id"]: bad()})
    st2, evs = fo.done(st, d, 100, error="iptables failed")
    assert st2["mode"] == "blocked" and "removing the Xray part failed: iptables failed" in evs[0]["reason"]
    st = fo.observe(fo.initial(), A["id"], (False, None, "closed"), 100)
    st, d, _ = fo.decide(st, s, 100, SERVERS, (True, "up"), {B["id"]: ok()})
    st3, evs = fo.done(st, d, 100, error="Xray refused the config")
    assert evs[0]["kind"] == "failed" and st3["active"] == A["id"] and st3["switches"] == [100]
    st = dict(fo.observe(fo.initial(), B["id"], (True, 5, "ok"), 100), preferred_hold_since=0,
              preferred_last={"time": 90, "ok": True, "latency_ms": 5, "reason": ""})
    st, d, _ = fo.decide(st, side(return_hold_s=60), 100, SERVERS, preferred=(A["id"], ok()))
    assert d.action == fo.RETURN
    st, evs = fo.done(st, d, 100, error="the probe through the proxy failed")
    assert evs[0]["reason"] == "return failed: the probe through the proxy failed"
    assert st["preferred_hold_since"] is None and st["active"] == B["id"]


def test_failover_off_and_untested_candidates_decide_nothing():
    st = fo.observe(fo.initial(), A["id"], (False, None, "closed"), 100)
    assert fo.wants(st, side({"fail_threshold": 1}, enabled=False)) == {"wan"}
    _, d, _ = fo.decide(st, side({"fail_threshold": 1}, enabled=False), 100, SERVERS, (True, "up"))
    assert d.action == fo.NONE and "failover is off" in d.reason
    _, d, _ = fo.decide(st, side({"fail_threshold": 1}), 100, SERVERS, (True, "up"), None)
    assert d.action == fo.NONE and "could not be tested" in d.reason


@pytest.mark.parametrize("threshold", [1, 3])
def test_a_manual_switch_resets_the_count(threshold):
    st = fo.initial()
    for t in range(threshold - 1):
        st = fo.observe(st, A["id"], (False, None, "x"), t)
    st = fo.observe(st, B["id"], (False, None, "x"), 10)
    assert st["consecutive_failures"] == 1 and st["active"] == B["id"]
