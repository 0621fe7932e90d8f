"""`vpn-director watch`: the daemon that keeps the routing and the Xray proxy working.

One round every xray.health.interval_s seconds:
  1. the routing watchdog check (engine.watch: what `apply --if-changed` does);
  2. the subscriptions that are due (actions.due_subscriptions, actions.sub_update);
  3. the health check of the active server through the live Xray (health), the failover
     policy's decision (failover) and its execution: a switch through actions.use (the path of
     `xray use`, under the run lock), the Xray part removed (engine.stop, scope xray) for
     on_all_down "direct" and put back (engine.apply, scope xray) on recovery;
  4. events and the health state file (events).
Each of the three parts runs on its own: a failure in one is logged and the others still run.
One daemon per state_dir: <state_dir>/watchd.pid is locked while it runs. `--once` does one
round (cron). SIGTERM or SIGINT ends the loop after the current round, so a switch in progress
finishes (or is rolled back) first.
"""

import os
import signal
import threading
import time

from .. import config, engine, state, watchdog
from ..errors import VpdError
from ..ops import txn
from . import XrayError, actions, events, failover, health, store

PID = events.PID


class Effects:
    """What a round does to the world, one method each (tests replace them). `tester` stands in
    for prober.test(cfg, servers, urls=, timeout_s=)."""

    def __init__(self, tester=None):
        self.tester = tester

    def tools(self, cfg):
        return txn.tools_for(cfg)

    def routing(self, cfg, out):
        """The routing watchdog check; a line to log when it repaired something."""
        p, _ = engine.watch(cfg, self.tools(cfg), "all", log=out.note, warn=out.warn, wait=False)
        if p is not None and p.steps:
            return "watch: routing drift repaired: %d change(s) in %.2fs" % (len(p.changes), p.elapsed)
        return None

    def refresh(self, cfg, sub):
        return actions.sub_update(cfg, sub)

    def check_active(self, cfg):
        h = cfg.xray.side.health
        return health.check_active(cfg, h.urls, h.timeout_s)

    def check_wan(self, cfg, servers, exclude):
        return health.check_wan(cfg, servers, cfg.xray.side.health.timeout_s, exclude)

    def test(self, cfg, servers):
        h = cfg.xray.side.health
        if self.tester:
            return self.tester(cfg, servers, urls=h.urls, timeout_s=h.timeout_s)
        from . import prober  # loaded only when candidates are tested
        return prober.test(cfg, servers, urls=h.urls, timeout_s=h.timeout_s)

    def use(self, cfg, server_id):
        actions.use(cfg, server_id)

    def proxy_off(self, cfg, out):
        engine.stop(cfg, self.tools(cfg), "xray", warn=out.warn)

    def proxy_on(self, cfg, out):
        engine.apply(cfg, self.tools(cfg), "xray", log=out.note, warn=out.warn)


class Daemon:
    def __init__(self, cfg, out, effects=None, clock=time.time):
        self.cfg, self.out, self.fx, self.clock = cfg, out, effects or Effects(), clock

    def round(self):
        try:
            self.cfg = engine.reread(self.cfg)
        except VpdError as e:
            self.out.err("watch: the config no longer loads (%s); going on with the previous one" % e)
        cfg = self.cfg
        self._part("routing watchdog", lambda: self._note(self.fx.routing(cfg, self.out)))
        self._part("subscriptions", lambda: self._subscriptions(cfg))
        self._part("health check", lambda: self._health(cfg))

    def _part(self, what, fn):
        try:
            fn()
        except VpdError as e:
            self.out.err("watch: %s: %s" % (what, e))
        except Exception as e:  # a daemon outlives one bad round; the error is logged
            if os.environ.get("VPD_DEBUG"):
                raise
            self.out.err("watch: %s: internal error: %s: %s" % (what, type(e).__name__, e))

    def _note(self, line):
        if line:
            self.out.note(line)

    def _subscriptions(self, cfg):
        st = events.load_state(cfg.state_dir)
        tried = dict(st.get("sub_tried") or {})
        now = self.clock()
        for sub in actions.due_subscriptions(cfg, now=now, tried=tried):
            tried[sub.id] = now
            _save(cfg.state_dir, lambda s: s.update(sub_tried=tried))
            try:
                counts, added, removed = self.fx.refresh(cfg, sub)
            except XrayError as e:
                self.out.err("watch: %s (tried again in an hour)" % e)
                continue
            self.out.note("watch: subscription %s: %s; %d new, %d gone"
                          % (sub.id, actions.counts_text(counts), added, removed))

    def _emit(self, cfg, evs):
        for ev in evs:
            events.emit(cfg.state_dir, ev, say=lambda text, loud: (self.out.warn if loud else self.out.note)(text))

    def _health(self, cfg):
        side, now = cfg.xray.side, self.clock()
        st = events.load_state(cfg.state_dir)
        started = "xray" in watchdog.active(cfg.state_dir)
        if st["mode"] == "direct" and started:
            st["mode"] = "blocked"  # someone applied the Xray part while all servers were down
        elif st["mode"] == "direct" and not (side.health.enabled and side.failover.enabled
                                             and side.failover.on_all_down == "direct"):
            self._undo_direct(cfg, st)
            started = "xray" in watchdog.active(cfg.state_dir)
        st.update(note=_why_not(cfg, st, started), updated=now)
        if st["note"]:
            events.save_state(cfg.state_dir, st)
            return
        servers = store.load(cfg.data_dir).servers
        by_id = {s["id"]: s for s in servers}
        st = failover.observe(st, side.active_server, self.fx.check_active(cfg), now)
        pid = side.preferred_server if side.preferred_server in by_id else None
        want = failover.wants(st, side, pid)
        wan = results = preferred = None
        if "wan" in want:
            wan = self.fx.check_wan(cfg, servers, side.active_server)
        if "candidates" in want and (wan is None or wan[0]):
            ids = failover.candidates(servers, side.active_server, st["all_down"])
            results = self._test(cfg, [by_id[i] for i in ids]) if ids else {}
        if "preferred" in want:
            got = self._test(cfg, [by_id[pid]])
            preferred = (pid, got.get(pid) or {"ok": False, "reason": "not tested"}) if got is not None else None
        st, decision, evs = failover.decide(st, side, now, servers, wan, results, preferred)
        if decision.action != failover.NONE:
            switched, error = self._carry_out(cfg, st, decision)
            st, more = failover.done(st, decision, self.clock(), switched, error, servers)
            evs += more
        st["note"] = "" if decision.action != failover.NONE or not decision.reason else decision.reason
        events.save_state(cfg.state_dir, st)  # first: whoever sees an event finds the state that goes with it
        self._emit(cfg, evs)

    def _undo_direct(self, cfg, st):
        """The config no longer has the daemon send clients direct: what it removed comes back
        (fail closed), unless another command started or stopped the Xray part meanwhile."""
        if st.get("direct_mark") == _mark(cfg.state_dir):
            self.fx.proxy_on(cfg, self.out)  # on failure the next round tries again
            self.out.note("watch: on_all_down direct is off now: the Xray part is applied again")
        managed = cfg.xray.side.health.enabled and cfg.xray.side.failover.enabled
        st.update(mode="blocked" if managed else "proxy", all_down=st["all_down"] and managed)

    def _test(self, cfg, servers):
        try:
            return self.fx.test(cfg, servers)
        except (VpdError, ImportError) as e:
            self.out.err("watch: testing servers failed: %s" % e)
            return None

    def _carry_out(self, cfg, st, d):
        """Do what `d` says; (whether the server switch happened, error text or None)."""
        switched = False
        try:
            if d.to:
                self.fx.use(cfg, d.to)
                switched = True
            if d.action == failover.ALL_DOWN and d.mode == "direct":
                self.fx.proxy_off(cfg, self.out)
                st["direct_mark"] = _mark(cfg.state_dir)
            elif d.action == failover.RECOVER and st["mode"] == "direct":
                if "xray" in watchdog.active(cfg.state_dir):
                    pass  # already back: someone applied it
                elif st.get("direct_mark") == _mark(cfg.state_dir):
                    self.fx.proxy_on(cfg, self.out)
                else:
                    d.reason += ("; the Xray part was started or stopped by another command meanwhile, so it "
                                 "is left as it is (`vpn-director apply xray` puts it back)")
        except VpdError as e:
            return switched, str(e)
        return switched, None


def _why_not(cfg, st, started):
    """Why the health check does not run this round ("" if it does)."""
    side = cfg.xray.side
    if not side.health.enabled:
        return "health checks are off (xray.health.enabled)"
    if not config.xray_enabled(cfg):
        return "no Xray clients in the config"
    if not side.active_server:
        return "no active server (`vpn-director xray use ID`)"
    if not started and st["mode"] != "direct":
        return "the Xray part is not started (`vpn-director apply`)"
    return ""


def _mark(state_dir):
    """When the watchdog's record of started parts last changed (another command's apply/stop)."""
    try:
        return os.stat(os.path.join(state_dir, watchdog.ACTIVE)).st_mtime_ns
    except OSError:
        return None


def _save(state_dir, change):
    st = events.load_state(state_dir)
    change(st)
    events.save_state(state_dir, st)


def lock(state_dir):
    """The daemon's lock: an open fd holding <state_dir>/watchd.pid, or XrayError naming the holder."""
    state.ensure_dir(state_dir)
    try:
        return state.pid_lock(os.path.join(state_dir, PID), mode=0o644)
    except state.Held as e:
        raise XrayError("another watch daemon runs%s" % e.holder)


def run(cfg, out, once=False, effects=None, clock=time.time, stop=None):
    """The loop (or one round); returns the exit code. `stop` (a threading.Event) ends it, as
    SIGTERM and SIGINT do."""
    try:
        fd = lock(cfg.state_dir)
    except XrayError as e:
        if once:
            out.detail("watch --once: %s; nothing to do" % e)
            return 0
        raise
    stop = stop or threading.Event()
    old = {}
    if not once and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            old[sig] = signal.signal(sig, lambda *a: stop.set())
    daemon = Daemon(cfg, out, effects, clock)
    try:
        if not once:
            h = cfg.xray.side.health
            out.note("watch: started (PID %d), a round every %d s; health checks %s, failover %s"
                     % (os.getpid(), h.interval_s, "on" if h.enabled else "off",
                        "on" if cfg.xray.side.failover.enabled else "off"))
        while True:
            began = time.monotonic()
            daemon.round()
            if once or stop.is_set():
                break
            stop.wait(max(0.0, daemon.cfg.xray.side.health.interval_s - (time.monotonic() - began)))
            if stop.is_set():
                break
        if not once:
            out.note("watch: stopped")
        return 0
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        os.ftruncate(fd, 0)
        os.close(fd)
