"""`xray status` (and the Xray lines of `status`): what runs, on which config, whether it is ours,
and what the watch daemon last saw and did (health checks, failover).

Plain data out: the report is a dict that `lines()` prints and `--json` dumps. It never holds
a credential or a subscription address.
"""

import hashlib
import os
import time

from . import XrayError, events, failover, service, store, version


def report(cfg):
    backend = service.pick(cfg)
    path = service.config_path(cfg, backend)
    rep = {"ok": True, "service": backend.name, "config_path": path, "problems": [], "version": None,
           "running": False, "listening": {}, "active": None, "config": "missing", "last_error": ""}
    try:
        ver = version.detect(service.binary_argv(cfg.xray.side))
        rep["version"] = version.text(ver) if ver else None
        if ver is None:
            rep["problems"].append("`xray version` gave no version")
    except XrayError as e:
        rep["problems"].append(str(e))
    rep["running"] = backend.running()
    rep["listening"] = {"tproxy %d" % cfg.xray.tproxy_port: service.listening(cfg.xray.tproxy_port),
                        "socks %d" % cfg.xray.side.socks_port: service.listening(cfg.xray.side.socks_port)}
    rep["problems"] += backend.problems(path)
    active = cfg.xray.side.active_server
    try:
        st = store.load(cfg.data_dir)
    except XrayError as e:
        st = store.Store()
        rep["problems"].append(str(e))
    server = st.by_id(active) if active else None
    if active and server is None:
        rep["problems"].append("xray.active_server %s is not in the server store" % active)
    if server:
        rep["active"] = {"id": server["id"], "name": server.get("name"), "label": server.get("label"),
                         "address": server.get("address"), "port": server.get("port"),
                         "status": server.get("status") or {}}
    rep["config"] = _config_state(cfg, backend, path, server)
    if rep["config"] == "differs":
        rep["problems"].append("%s is not what `xray use` would write for the active server (edited by hand, or "
                               "the config changed: `xray use %s` writes it again)" % (path, active))
    log = service.error_log(cfg, backend)
    from . import switch  # `xray status` only, not the main status
    rep["last_error"] = switch.log_tail(log, max(0, switch.log_size(log) - (1 << 15)))
    rep["health"] = health(cfg)
    if rep["health"]["all_down"]:
        rep["problems"].append("every server failed its checks: %s" % _MODES[rep["health"]["mode"]])
    if not rep["running"]:
        rep["problems"].append("Xray is not running")
    elif not all(rep["listening"].values()):
        rep["problems"].append("Xray does not listen on %s" % ", ".join(k for k, v in rep["listening"].items() if not v))
    rep["ok"] = not rep["problems"]
    return rep


def _config_state(cfg, backend, path, server):
    try:
        with open(path, "rb") as f:
            have = f.read()
    except OSError:
        return "missing"
    if server is None:
        return "present"
    try:
        from . import generate
        want = generate.render(cfg, server, service.error_log(cfg, backend))
    except XrayError:
        return "present"
    return "matches" if hashlib.sha256(have).digest() == hashlib.sha256(want).digest() else "differs"


def lines(rep):
    out = ["xray: %s, service %s, %s" % ("Xray " + rep["version"] if rep["version"] else "version unknown",
                                          rep["service"], "running" if rep["running"] else "NOT RUNNING")]
    a = rep["active"]
    if a:
        st = a["status"]
        checked = ("last probe %d ms" % st["latency_ms"]) if st.get("latency_ms") is not None else \
            ("last probe failed" if st.get("error") else "not probed yet")
        out.append("server: %s (%s, %s, %s:%s) — %s" % (a["name"], a["id"], a["label"], a["address"], a["port"], checked))
    else:
        out.append("server: none chosen (`vpn-director xray use ID`)")
    out.append("config: %s (%s)" % (rep["config_path"], rep["config"]))
    out.append("ports: " + ", ".join("%s %s" % (k, "listening" if v else "CLOSED") for k, v in rep["listening"].items()))
    if rep["last_error"]:
        out.append("last error: %s" % rep["last_error"])
    out += health_lines(rep["health"])
    for p in rep["problems"]:
        out.append("problem: %s" % p)
    return out


def version_line(cfg):
    """One short line for the main `status`: the Xray version and the active server, or why not."""
    try:
        ver = version.detect(service.binary_argv(cfg.xray.side))
    except XrayError:
        ver = None
    active = cfg.xray.side.active_server
    name = None
    if active and os.path.exists(store.path(cfg.data_dir)):
        try:
            s = store.load(cfg.data_dir).by_id(active)
            name = s and "%s (%s)" % (s.get("name"), s.get("label"))
        except XrayError:
            name = None
    return "xray: %s; server %s" % ("Xray " + version.text(ver) if ver else "no xray command found",
                                     name or active or "not chosen by vpn-director")


_MODES = {"proxy": "proxy", "blocked": "BLOCKED (TPROXY stays: clients' proxied traffic stops)",
          "direct": "DIRECT (the Xray part is removed: clients go out by the WAN)"}


def health(cfg):
    """The watch daemon's view (plain data, no credentials): events.load_state plus the daemon's PID."""
    side = cfg.xray.side
    st = events.load_state(cfg.state_dir)
    now = time.time()
    return {"daemon_pid": events.daemon_pid(cfg.state_dir), "enabled": side.health.enabled,
            "failover": side.failover.enabled, "fail_threshold": side.health.fail_threshold,
            "active": st["active"], "consecutive_failures": st["consecutive_failures"],
            "last_check": st["last_check"], "wan": st["wan"], "wan_how": st["wan_how"], "all_down": st["all_down"],
            "mode": st["mode"], "last_switch": st["last_switch"], "note": st.get("note", ""),
            "switches_last_hour": len([t for t in st["switches"] if 0 <= now - t < failover.HOUR]),
            "max_switches_per_hour": side.failover.max_switches_per_hour, "preferred": side.preferred_server,
            "preferred_hold_since": st["preferred_hold_since"], "return_hold_s": side.failover.return_hold_s,
            "updated": st.get("updated")}


def _ago(t, now):
    return "%d s ago" % max(0, now - t) if now - t < 3600 else time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def _check(h, now):
    c = h["last_check"]
    if not c:
        return "not checked yet"
    if c["ok"]:
        return "passed %s (%s ms)" % (_ago(c["time"], now), c["latency_ms"])
    return "FAILED %s, %d in a row, threshold %d (%s)" % (_ago(c["time"], now), h["consecutive_failures"],
                                                h["fail_threshold"], c["reason"])


def health_lines(h, now=None):
    now = time.time() if now is None else now
    out = ["watch: %s; health checks %s, failover %s" % (
        "daemon running (PID %d)" % h["daemon_pid"] if h["daemon_pid"] else "daemon not running",
        "on" if h["enabled"] else "off", "on" if h["failover"] else "off")]
    out.append("health: %s; WAN %s%s" % (_check(h, now), h["wan"].upper() if h["wan"] == "down" else h["wan"],
                                         ": " + h["wan_how"] if h["wan"] == "down" else ""))
    if h["note"]:
        out.append("health: %s" % h["note"])
    out.append("failover: %s; %d of %d switches in the last hour" % (_MODES[h["mode"]], h["switches_last_hour"],
                                                                     h["max_switches_per_hour"]))
    sw = h["last_switch"]
    if sw:
        out.append("last switch: %s, %s -> %s: %s" % (_ago(sw["time"], now), sw["from"], sw["to"], sw["why"]))
    if h["preferred"] and h["preferred"] != h["active"]:
        hold = h["preferred_hold_since"]
        out.append("preferred: %s, %s" % (h["preferred"], "passing for %d s of %d" % (now - hold, h["return_hold_s"])
                                          if hold is not None else "not passing yet"))
    return out


def health_line(cfg):
    """One line for the main `status`."""
    h = health(cfg)
    if not h["enabled"]:
        return "xray health: checks off (xray.health.enabled)"
    now = time.time()
    line = "xray health: %s; WAN %s; %s" % (_check(h, now), h["wan"], h["mode"])
    if h["last_switch"]:
        line += "; last switch %s to %s" % (_ago(h["last_switch"]["time"], now), h["last_switch"]["to"])
    if not h["daemon_pid"]:
        line += "; the watch daemon is not running"
    return line
