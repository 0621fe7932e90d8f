"""The API's routes: thin handlers over the operations layer (ops.txn and its change functions),
the reports and the Xray actions, so the command line, the web UI and the bot behave the same.

A handler is fn(app, req, session, **params) and returns a JSON-able dict (200) or an
api.Response. Edits answer with what changed: the summary, notes, warnings, the kernel changes
applied, the history version, and the route of the client they are about.
"""

import os
import re
from urllib.parse import parse_qs, unquote

from .. import log
from . import WebError

ROUTES = []  # (method, compiled path regex, handler, needs a session)
MAX_FIELD = 256
MAX_URL = 2048


def route(method, pattern, auth=True):
    def add(fn):
        ROUTES.append((method, re.compile("^/api/v1" + pattern + "$"), fn, auth))
        return fn
    return add


def match(method, path):
    """(handler, params, auth), "method" if only the method is wrong, or None."""
    wrong_method = False
    for m, rx, fn, auth in ROUTES:
        found = rx.match(path)
        if found:
            if m == method:
                return fn, {k: unquote(v) for k, v in found.groupdict().items()}, auth
            wrong_method = True
    return "method" if wrong_method else None


def text(body, key, default=None, required=True):
    """A short string field of the body; WebError 400 when missing or not one."""
    value = body.get(key, default)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_FIELD or not value.isprintable():
        raise WebError("%s: give a short text" % key, 400)
    return value.strip()


def _root(what):
    if os.geteuid() != 0:
        raise WebError("%s reads or changes the kernel's tables: the web UI must run as root" % what, 503)


def edit(app, req, session, change, allow_invalid=False):
    """One edit through the operations layer, as the command line makes it; what changed."""
    from ..ops import txn
    with app.edit_lock:
        res = txn.run(app.config_path, change, allow_invalid=allow_invalid)
    return answer(req, session, res)


def answer(req, session, res):
    """The answer to an edit from its txn Outcome (logged with who made it)."""
    from ..ops import names, route as routes
    shown = names.load(res.cfg) if res.cfg is not None and res.warnings else None
    body = {"changed": bool(res.summary), "summary": res.summary, "notes": res.notes,
            "warnings": [shown.annotate(w) if shown else w for w in res.warnings], "applied": res.scope,
            "changes": list(res.plan.changes) if res.plan is not None else [], "version": res.version}
    if res.subject is not None and res.cfg is not None:
        body["address"] = names.text(res.subject)
        body["route"] = routes.Routes(res.cfg).shown(res.subject)
    if res.summary:
        log.info("web: %s (by %s from %s)" % (res.summary, session.user, req.addr))
    return body


# --- session -------------------------------------------------------------------------------------

@route("POST", "/login", auth=False)
def login(app, req, session):
    return app.login(req, session)


@route("POST", "/logout")
def logout(app, req, session):
    return app.logout(req, session)


@route("GET", "/session", auth=False)
def session_info(app, req, session):
    return app.session(req, session)


# --- reading -------------------------------------------------------------------------------------

@route("GET", "/status")
def status(app, req, session):
    from .. import reports
    from ..ops import names, txn
    _root("status")
    cfg = app.config()
    warnings = list(cfg.warnings)
    rep = reports.status_report(cfg, txn.tools_for(cfg), "all", warn=warnings.append, names=names.load(cfg))
    rep["warnings"] = rep.get("warnings", []) + warnings
    return rep


@route("GET", "/devices")
def devices(app, req, session):
    from ..ops import devices as listing
    cfg = app.config()
    return {"devices": listing.rows(cfg), "vias": listing.vias(cfg), "warnings": cfg.warnings}


@route("POST", "/devices/(?P<address>[^/]+)/route")
def device_route(app, req, session, address):
    from ..ops import clients
    return edit(app, req, session, clients.route_device(address, text(req.json(), "via")))


@route("GET", "/clients")
def clients_list(app, req, session):
    from ..ops import clients, names
    cfg = app.config()
    return {"clients": clients.rows(cfg, names.load(cfg))}


@route("POST", "/clients")
def client_add(app, req, session):
    from ..ops import clients
    body = req.json()
    return edit(app, req, session, clients.add(text(body, "address"), text(body, "via"),
                                               text(body, "name", required=False)))


@route("POST", "/clients/(?P<address>[^/]+)/move")
def client_move(app, req, session, address):
    from ..ops import clients
    return edit(app, req, session, clients.move(address, text(req.json(), "via")))


@route("POST", "/clients/(?P<address>[^/]+)/pause")
def client_pause(app, req, session, address):
    from ..ops import clients
    return edit(app, req, session, clients.pause(address))


@route("POST", "/clients/(?P<address>[^/]+)/resume")
def client_resume(app, req, session, address):
    from ..ops import clients
    return edit(app, req, session, clients.resume(address))


@route("DELETE", "/clients/(?P<address>[^/]+)")
def client_remove(app, req, session, address):
    from ..ops import clients
    return edit(app, req, session, clients.remove(address))


@route("GET", "/exclusions")
def exclusions(app, req, session):
    from .. import config
    cfg = app.config()

    def split(names):
        return {"countries": [n.lower() for n in names if config.is_country(n)],
                "sets": [n for n in names if not config.is_country(n)]}
    return {"xray": dict(split(cfg.xray.exclude_sets), addresses=[str(n) for n in cfg.xray.exclude_ips]),
            "tunnels": [dict(split(t.exclude), name=t.name) for t in cfg.tunnels]}


@route("POST", "/exclusions")
def exclusion_add(app, req, session):
    from ..ops import excludes
    body = req.json()
    return edit(app, req, session, excludes.add(text(body, "target"), text(body, "via", "xray")))


@route("DELETE", "/exclusions")
def exclusion_remove(app, req, session):
    from ..ops import excludes
    body = req.json()
    return edit(app, req, session, excludes.remove(text(body, "target"), text(body, "via", "xray")))


@route("POST", "/trace")
def trace(app, req, session):
    from .. import reports
    from ..ops import names, txn
    body = req.json()
    token, dst = text(body, "source"), text(body, "destination")
    proto, port, live = body.get("proto", "tcp"), body.get("port"), body.get("live", False)
    cfg = app.config()
    src = names.source(token, cfg)[0]  # an address, a device name or a MAC; OpsError: 400
    reports.check_trace_args(src, dst, proto, port)  # UsageError: 400
    if live:
        _root("a live trace")
    result = reports.trace_report(cfg, src, dst, proto, port, tools=txn.tools_for(cfg) if live else None)
    return dict(result, source=src, src_name=names.load(cfg).get(src), live=bool(live))


@route("GET", "/logs")
def logs(app, req, session):
    from .. import log as logmod
    try:
        lines = int(parse_qs(req.query).get("lines", ["200"])[0])
    except ValueError:
        raise WebError("lines: give a number", 400)
    cfg = app.config()
    if not cfg.log_file:
        return {"file": None, "lines": [], "note": "no log file: set advanced.log.file to keep one (syslog has "
                                                   "the same lines)"}
    return {"file": cfg.log_file, "lines": logmod.tail(cfg.log_file, lines)}


@route("GET", "/config/history")
def history(app, req, session):
    from ..ops import history as hist, rawfile, txn
    snap = rawfile.read(txn.config_path(app.config_path))
    kept = hist.versions(txn.placed(snap.raw).data_dir)
    current = next((v.number for v in reversed(kept) if v.text.encode("utf-8") == snap.data), None)
    return {"current": current, "versions": [v.as_dict() for v in reversed(kept)]}


@route("POST", "/config/rollback")
def rollback(app, req, session):
    from ..ops import history as hist, rawfile, txn
    number = req.json().get("version")
    if isinstance(number, bool) or not isinstance(number, int):
        raise WebError("version: give a version number", 400)
    data_dir = txn.placed(rawfile.read(txn.config_path(app.config_path)).raw).data_dir
    return edit(app, req, session, hist.rollback(data_dir, number), allow_invalid=True)


# --- Xray servers --------------------------------------------------------------------------------

@route("GET", "/servers")
def servers(app, req, session):
    from .. import config
    from ..xray import actions
    cfg = app.config()
    return {"servers": actions.server_rows(cfg), "active": cfg.xray.side.active_server,
            "xray_clients": config.xray_enabled(cfg)}


@route("POST", "/servers/use")
def server_use(app, req, session):
    from ..xray import actions
    key = text(req.json(), "server")
    _root("switching the Xray server")
    cfg = app.config()

    def work():
        server, ms = actions.use(cfg, key)
        log.info("web: xray now uses %s (by %s from %s)" % (server["id"], session.user, req.addr))
        return {"id": server["id"], "name": server.get("name", ""), "latency_ms": ms}
    return app.jobs.start("use %s" % key, work)


@route("POST", "/servers/test")
def server_test(app, req, session):
    from ..xray import actions
    body = req.json()
    keys = body.get("servers") or []
    if not isinstance(keys, list) or not all(isinstance(k, str) and 0 < len(k) <= 64 for k in keys):
        raise WebError("servers: give a list of server ids", 400)
    _root("testing servers")
    cfg = app.config()

    def work():
        rows = actions.test(cfg, keys, bool(body.get("all")))
        return {"results": [{"number": n, "id": s["id"], "name": s.get("name", ""), "ok": r["ok"],
                             "latency_ms": r.get("latency_ms"), "reason": r.get("reason", "")} for n, s, r in rows]}
    return app.jobs.start("test", work)


@route("POST", "/servers/import")
def server_import(app, req, session):
    """`xray import`: share links or a subscription body in `text`; a job."""
    from ..xray import actions
    body = req.json().get("text")
    if not isinstance(body, str) or not body.strip():
        raise WebError("text: give share links (one a line) or a subscription body", 400)
    actions.not_a_subscription(body)  # an address is added as a subscription: 400
    _root("importing servers")
    cfg = app.config()

    def work():
        counts, added, known = actions.import_text(cfg, body)
        log.info("web: xray import: %s; %d new (by %s from %s)" % (actions.counts_text(counts), added, session.user,
                                                                     req.addr))
        return {"counts": actions.counts_text(counts), "stored": counts.get("stored", 0), "added": added,
                "known": known}
    return app.jobs.start("import", work)


# --- subscriptions: their addresses are secrets, never answered (sub_rows shows the host only) ---

@route("GET", "/subscriptions")
def subscriptions(app, req, session):
    from ..xray import actions
    return {"subscriptions": actions.sub_rows(app.config())}


@route("POST", "/subscriptions")
def subscription_add(app, req, session):
    """`xray sub add ID URL --interval H`: the config edit, then its first fetch as a job."""
    from ..xray import actions
    body = req.json()
    sub_id, url, interval = text(body, "id"), body.get("url"), body.get("interval_h", 12)
    if not isinstance(url, str) or not url.strip() or len(url) > MAX_URL or not url.isprintable():
        raise WebError("url: give the subscription's http:// or https:// address", 400)
    if isinstance(interval, bool) or not isinstance(interval, int):
        raise WebError("interval_h: give a whole number of hours", 400)
    _root("adding a subscription")
    with app.edit_lock:
        res = actions.sub_add(app.config_path, sub_id, url.strip(), interval)
    return dict(answer(req, session, res), job=_fetch(app, req, session, res.cfg, sub_id))


@route("DELETE", "/subscriptions")
def subscription_remove(app, req, session):
    """`xray sub remove ID`: out of the config, its servers out of the store."""
    from ..xray import actions
    sub_id = text(req.json(), "id")
    _root("removing a subscription")
    with app.edit_lock:
        res, forgotten = actions.sub_remove(app.config_path, sub_id)
    return dict(answer(req, session, res), forgotten=forgotten)


@route("POST", "/subscriptions/(?P<sub_id>[^/]+)/update")
def subscription_update(app, req, session, sub_id):
    """`xray sub update ID`: a job."""
    _root("updating a subscription")
    return _fetch(app, req, session, app.config(), sub_id)


def _fetch(app, req, session, cfg, sub_id):
    from ..xray import actions
    sub = actions.subscriptions(cfg, sub_id)[0]  # XrayError (400) if there is none

    def work():
        counts, added, removed = actions.sub_update(cfg, sub)
        log.info("web: subscription %s: %s; %d new, %d gone (by %s from %s)" % (
            sub.id, actions.counts_text(counts), added, removed, session.user, req.addr))
        return {"id": sub.id, "counts": actions.counts_text(counts), "added": added, "removed": removed}
    return app.jobs.start("update %s" % sub.id, work)


@route("GET", "/jobs/(?P<job_id>[0-9a-f]{16})")
def job(app, req, session, job_id):
    found = app.jobs.get(job_id)
    if found is None:
        raise WebError("no such job (finished jobs are kept for a while)", 404)
    return found
