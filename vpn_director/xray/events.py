"""What the watch daemon leaves for people and programs: an event queue and the current state.

<state_dir>/events.jsonl, one JSON object a line, oldest first:
    {"time": 1764600000.25, "kind": "switch", "from": "e31da8bad6c5", "to": "187241fded99",
     "reason": "'Server A' (e31da8bad6c5) failed 3 check(s) in a row (...); 'Server B' ... answered in 84 ms"}
  kinds: switch, return (to the preferred server), recovery (out of all-down), all-down,
  wan-down, wan-up, limit (a switch held back by max_switches_per_hour), failed (a switch or
  the Xray part's removal/restoration did not work). Each event is also one syslog line.
  The file keeps the last MAX_LINES events (at most MAX_BYTES); it is rewritten atomically on
  every event (events are rare), so a reader never sees half a line. read(state_dir, since)
  returns the events newer than `since`: a bot or web UI polls with the last time it saw
  (times strictly increase within the file).

<state_dir>/xray-health.json, rewritten atomically every round: failover.initial()'s keys
(active, consecutive_failures, last_check, wan, all_down, mode, last_switch, switches,
preferred_hold_since ...) plus "updated", "note" (why nothing was checked or switched, if so),
"direct_mark" (when the daemon removed the Xray part itself) and "sub_tried" (the last attempt
per subscription).

Neither file holds a credential: server ids and names only.
"""

import json
import os

from .. import log, state
from . import failover

PID = "watchd.pid"  # the running daemon's lock and PID (watch.lock)
EVENTS = "events.jsonl"
HEALTH = "xray-health.json"
MAX_LINES = 500
MAX_BYTES = 256 * 1024
LOUD = ("switch", "all-down", "failed", "wan-down", "limit")  # logged as warnings


def events_path(state_dir):
    return os.path.join(state_dir, EVENTS)


def read(state_dir, since=None):
    """The stored events (dicts), oldest first; only those with time > since if given."""
    return [ev for ev in state.read_json_lines(events_path(state_dir))
            if isinstance(ev.get("time"), (int, float)) and (since is None or ev["time"] > since)]


def append(state_dir, event):
    """Add one event; the file is capped (the oldest go first). Times strictly increase (an event
    at the same time as the last one is put 1 ms later), so polling with `since` misses none."""
    try:
        with open(events_path(state_dir), "rb") as f:
            old = f.read().splitlines()
    except OSError:
        old = []
    last = _time(old[-1]) if old else None
    if last is not None and event["time"] <= last:
        event = dict(event, time=round(last + 0.001, 3))
    lines = old[-(MAX_LINES - 1):] + [json.dumps(event, ensure_ascii=False, sort_keys=True).encode("utf-8")]
    while len(lines) > 1 and sum(len(ln) + 1 for ln in lines) > MAX_BYTES:
        lines.pop(0)
    state.write_atomic(events_path(state_dir), b"\n".join(lines) + b"\n", mode=0o644)


def _time(raw):
    try:
        t = json.loads(raw).get("time")
    except (ValueError, AttributeError):
        return None
    return t if isinstance(t, (int, float)) else None


def line(event):
    """The event as one log line."""
    moved = ""
    if event.get("from") or event.get("to"):
        moved = " %s -> %s" % (event.get("from") or "-", event.get("to") or "-")
    return "xray %s%s: %s" % (event["kind"], moved, event.get("reason", ""))


def emit(state_dir, event, say=None):
    """Store the event and log it: say(text, loud) if given, else syslog (warning or info)."""
    append(state_dir, event)
    loud = event["kind"] in LOUD
    if say:
        say(line(event), loud)
    elif loud:
        log.warning(line(event))
    else:
        log.info(line(event))


def load_state(state_dir):
    """The health state; failover.initial() when there is none or it is unreadable."""
    st = failover.initial()
    try:
        with open(os.path.join(state_dir, HEALTH), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return st
    if not isinstance(data, dict):
        return st
    for key, value in data.items():
        if key in TYPES and isinstance(value, TYPES[key]) and not (isinstance(value, bool) and bool not in TYPES[key]):
            st[key] = value
    st["switches"] = [t for t in st["switches"] if isinstance(t, (int, float)) and not isinstance(t, bool)]
    if st["mode"] not in ("proxy", "blocked", "direct"):
        st["mode"] = "proxy"
    return st


_NUM = (int, float)
TYPES = {"active": (str, type(None)), "consecutive_failures": (int,), "last_check": (dict, type(None)),
         "wan": (str,), "wan_how": (str,), "all_down": (bool,), "mode": (str,), "last_switch": (dict, type(None)),
         "switches": (list,), "limited": (bool,), "preferred_hold_since": _NUM + (type(None),),
         "preferred_last": (dict, type(None)), "updated": _NUM, "note": (str,), "direct_mark": _NUM + (type(None),),
         "sub_tried": (dict,)}


def save_state(state_dir, st):
    state.write_atomic(os.path.join(state_dir, HEALTH),
                       json.dumps(st, indent=1, sort_keys=True, ensure_ascii=False) + "\n", mode=0o644)


def daemon_pid(state_dir):
    """The running daemon's PID, or None."""
    try:
        with open(os.path.join(state_dir, PID)) as f:
            pid = int(f.read().strip() or 0)
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return pid if b"watch" in f.read() else None
    except (OSError, ValueError):
        return None
