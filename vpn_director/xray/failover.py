"""The failover policy: plain data in, one decision out. No I/O; the time is an argument.

Each round the watch daemon calls:

  st = observe(st, active_id, (ok, latency_ms, reason), now)     count the active path's check
  want = wants(st, settings, preferred_id)        what else to look at: "wan", "candidates", "preferred"
  ... checks the WAN / tests candidates or the preferred server in the prober, as asked ...
  st, decision, events = decide(st, settings, now, servers, wan, results, preferred)
  ... carries the decision out (xray use; the Xray part removed or put back) ...
  st, events = done(st, decision, now, switched, error, servers)

The rules:
  * Dead: fail_threshold consecutive failed checks of the active path (every round once all
    servers are down).
  * A dead server is acted on only after a passing direct WAN check (health.require_wan):
    a WAN outage never causes a switch, an all-down or a count towards the limit.
  * Candidates: the dead server itself and every stored server not sharing its address or IPs
    (a blocked address takes all its servers; once everything is down, those are tried too).
    The dead server alive in the separate test means the live Xray is what failed: Xray is put
    on it again (a "switch" to itself: a restart). Otherwise the best alive one is the lowest
    latency among the dead server's own source (subscription or manual), then the others.
  * At most max_switches_per_hour switches and returns within any sliding hour (the times are
    kept in the state, so a restart does not reset them). A failed attempt counts too. Leaving
    all-down is never held back by the limit (there is no working path to protect), but counts.
  * Nothing alive: all-down, once: "block" keeps TPROXY (clients' proxied traffic stops),
    "direct" has the Xray part removed. All down, the active path passing again or any server
    alive is a recovery (with a switch when needed; the Xray part comes back if it was removed).
  * Return to the preferred server: while the active one passes and is not the preferred, the
    preferred is tested every round; after return_hold_s of passes with no failure and no gap
    longer than 3 intervals + timeout, the daemon switches back.
"""

from __future__ import annotations

from ..record import Record

NONE, SWITCH, RETURN, RECOVER, ALL_DOWN = "none", "switch", "return", "recover", "all-down"
KIND = {SWITCH: "switch", RETURN: "return", RECOVER: "recovery", ALL_DOWN: "all-down"}
HOUR = 3600
NO_LATENCY = 10 ** 9


class Decision(Record):
    action: str = NONE
    to: str | None = None  # the server to switch to (switch, return; recover when the active stays dead)
    reason: str = ""
    mode: str = ""  # all-down: "block" or "direct"


def initial():
    """The state before the first round (also what a missing or damaged state file reads as)."""
    return {"active": None, "consecutive_failures": 0, "last_check": None, "wan": "unknown", "wan_how": "",
            "all_down": False, "mode": "proxy", "last_switch": None, "switches": [], "limited": False,
            "preferred_hold_since": None, "preferred_last": None}


def observe(st, active, check, now):
    """The state after one check of the active path; check = (ok, latency_ms, reason)."""
    st = dict(st)
    ok, ms, why = check
    if st["active"] != active:  # a manual `xray use`, or the first round
        st.update(active=active, consecutive_failures=0, preferred_hold_since=None)
    st["consecutive_failures"] = 0 if ok else st["consecutive_failures"] + 1
    st["last_check"] = {"time": now, "ok": ok, "latency_ms": ms, "reason": why}
    return st


def dead(st, s):
    last = st["last_check"]
    return bool(last) and not last["ok"] and (st["consecutive_failures"] >= s.health.fail_threshold or st["all_down"])


def wants(st, s, preferred=None):
    out = set()
    if dead(st, s):
        if s.health.require_wan:
            out.add("wan")
        if s.failover.enabled:
            out.add("candidates")
    elif (s.failover.enabled and s.failover.return_to_preferred and preferred and preferred != st["active"]
          and st["last_check"] and st["last_check"]["ok"] and not st["all_down"]):
        out.add("preferred")
    return out


def candidates(servers, active, all_down=False):
    """Ids to test in the prober when `active` is dead (see the rules): active first."""
    gone = next((s for s in servers if s["id"] == active), None)
    ips = set(gone.get("ips") or []) if gone and not all_down else set()
    address = gone.get("address") if gone and not all_down else None
    others = [s["id"] for s in servers if s["id"] != active and not ips & set(s.get("ips") or [])
              and not (address and s.get("address") == address)]
    return ([active] if gone else []) + others


def best(servers, active, results):
    """(id, latency) of the alive candidate to take, or None: the active one if it is alive."""
    source = next((s.get("source") for s in servers if s["id"] == active), None)
    alive = [(s["id"] != active, 0 if s.get("source") == source else 1, _ms(results[s["id"]]), i, s["id"])
             for i, s in enumerate(servers) if (results.get(s["id"]) or {}).get("ok")]
    if not alive:
        return None
    pick = min(alive)
    return pick[4], results[pick[4]].get("latency_ms")


def budget(st, s, now):
    return s.failover.max_switches_per_hour - len([t for t in st["switches"] if 0 <= now - t < HOUR])


def decide(st, s, now, servers, wan=None, results=None, preferred=None):
    """-> (state, Decision, events). wan = (up, how) if checked; results = {id: prober result} if
    candidates were tested (None: not, or the test itself failed); preferred = (id, prober
    result) if the preferred server was tested."""
    st = dict(st, switches=[t for t in st["switches"] if 0 <= now - t < HOUR])
    events = []
    ok = bool(st["last_check"] and st["last_check"]["ok"])
    if wan is not None:
        events += _wan(st, wan[0], wan[1], now)
    elif ok:
        events += _wan(st, True, "the proxy answers", now)
    if budget(st, s, now) > 0:
        st["limited"] = False
    if st["all_down"] and ok:
        return st, Decision(RECOVER, None, "%s answers again" % _name(servers, st["active"])), events
    if not dead(st, s):
        d = _preferred(st, s, now, servers, preferred)
        return st, _held(st, s, now, d, events), events
    if not s.failover.enabled:
        return st, Decision(reason="failover is off (xray.failover.enabled)"), events
    if s.health.require_wan and not (wan and wan[0]):
        return st, Decision(reason="WAN down: no switch"), events
    if results is None:
        return st, Decision(reason="the other servers could not be tested"), events
    pick = best(servers, st["active"], results)
    failed = "%s failed %d check(s) in a row (%s)" % (_name(servers, st["active"]), st["consecutive_failures"],
                                                      st["last_check"]["reason"])
    if pick:
        to, ms = pick
        why = "%s; %s answered in %s ms" % (failed, _name(servers, to), ms)
        if to == st["active"]:
            why = "%s, but answers in a separate test (%s ms): Xray is put on it again" % (failed, ms)
        if wan:
            why += "; WAN up: %s" % wan[1]
        if st["all_down"]:
            return st, Decision(RECOVER, to, why), events
        return st, _held(st, s, now, Decision(SWITCH, to, why), events), events
    if st["all_down"]:
        return st, Decision(reason="every server is still down"), events
    tested = [(x["id"], results[x["id"]]) for x in servers if x["id"] in results and x["id"] != st["active"]]
    why = "%s; %s" % (failed, "; ".join("%s: %s" % (_name(servers, i), r.get("reason", "failed"))
                                        for i, r in tested[:3]) + (" (%d more)" % (len(tested) - 3)
                                                                    if len(tested) > 3 else "")
                      if tested else "no other server to try")
    return st, Decision(ALL_DOWN, None, why, s.failover.on_all_down), events


def _held(st, s, now, d, events):
    """A switch or return past the hourly limit becomes no decision (and one "limit" event)."""
    if d.action not in (SWITCH, RETURN) or budget(st, s, now) > 0:
        return d
    if not st["limited"]:
        st["limited"] = True
        events.append(_event(now, "limit", st["active"], d.to, "%s held back: %d switches in the last hour "
                             "(xray.failover.max_switches_per_hour)" % (d.action, len(st["switches"]))))
    return Decision(reason="switch limit reached")


def _preferred(st, s, now, servers, preferred):
    if not preferred:  # not tested this round: a later test after too long a gap starts the hold again
        return Decision()
    pid, result = preferred
    last = st["preferred_last"]
    st["preferred_last"] = {"time": now, "ok": bool(result.get("ok")), "latency_ms": result.get("latency_ms"),
                            "reason": result.get("reason", "")}
    if not result.get("ok"):
        st["preferred_hold_since"] = None
        return Decision()
    gap = 3 * s.health.interval_s + s.health.timeout_s
    if st["preferred_hold_since"] is None or not last or not last["ok"] or not 0 <= now - last["time"] <= gap:
        st["preferred_hold_since"] = now
    held = now - st["preferred_hold_since"]
    if held < s.failover.return_hold_s:
        return Decision()
    return Decision(RETURN, pid, "preferred server %s passed every check for %d s (now %s ms)"
                    % (_name(servers, pid), held, result.get("latency_ms")))


def done(st, d, now, switched=None, error=None, servers=()):
    """-> (state, events) after the daemon carried out `d`. switched: whether the server switch of
    d.to took place (default: no error); error: what failed, if anything."""
    st = dict(st)
    switched = error is None if switched is None else switched
    if d.to and d.action in (SWITCH, RETURN, RECOVER):
        st["switches"] = st["switches"] + [now]  # an attempt costs a restart: it counts
    events = []
    if d.to and switched:
        st["last_switch"] = {"time": now, "from": st["active"], "to": d.to, "why": d.reason}
        st.update(active=d.to, consecutive_failures=0, preferred_hold_since=None, preferred_last=None)
    if d.action == ALL_DOWN:
        st["all_down"] = True
        st["mode"] = "direct" if d.mode == "direct" and not error else "blocked"
        why = d.reason + ("; on_all_down %s: %s" % (d.mode, "clients go direct until a server is back"
                                                    if st["mode"] == "direct" else "clients' proxied traffic stops"))
        if error:
            why += " (removing the Xray part failed: %s; clients stay blocked)" % error
        return st, [_event(now, "all-down", st["active"], None, why)]
    if error:
        if d.action == RETURN:
            st["preferred_hold_since"] = None  # the preferred server has to pass the whole hold again
        return st, [_event(now, "failed", st["active"] if not switched else st["last_switch"]["from"], d.to,
                           "%s failed: %s" % (KIND[d.action], error))]
    if d.action == RECOVER:
        st.update(all_down=False, mode="proxy")
    if d.action in KIND:
        frm = st["last_switch"]["from"] if d.to else st["active"]
        events.append(_event(now, KIND[d.action], frm, st["active"], d.reason))
    return st, events


def _wan(st, up, how, now):
    new = "up" if up else "down"
    old, st["wan"], st["wan_how"] = st["wan"], new, how
    if old == new or (old == "unknown" and up):
        return []
    return [_event(now, "wan-" + new, None, None, how)]


def _event(now, kind, frm, to, reason):
    return {"time": now, "kind": kind, "from": frm, "to": to, "reason": reason}


def _name(servers, sid):
    s = next((s for s in servers if s["id"] == sid), None)
    return "%r (%s)" % (s.get("name") or sid, sid) if s else (sid or "no server")


def _ms(result):
    ms = result.get("latency_ms")
    return ms if isinstance(ms, int) else NO_LATENCY
