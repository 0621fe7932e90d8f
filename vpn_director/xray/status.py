"""`xray status` (and the Xray line of `status`): what runs, on which config, and whether it is ours.

Plain data out: the report is a dict that `lines()` prints and `--json` dumps. It never holds
a credential or a subscription address.
"""

import hashlib
import os

from . import XrayError, generate, service, store, switch, version


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
    rep["last_error"] = switch.log_tail(log, max(0, switch.log_size(log) - (1 << 15)))
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
