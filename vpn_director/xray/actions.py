"""The Xray side's operations, each whole under the run lock: import, subscriptions, use, restart.

A change to the server store changes the Xray servers set, so it is applied (scope xray) before
the command returns; if that apply fails, the store's previous bytes are put back and the
kernel keeps the previous set. A config edit (a subscription added or removed, the active
server recorded) goes through the operations layer's transaction like every other edit.
"""

import os
import sys
import time

from .. import config, engine, state
from ..errors import VpdError
from ..ops import txn
from ..ops.txn import Unchanged
from . import XrayError, service, store, subscription, switch

ACTIVE_MISSING = "the active server is no longer in the store"


def _lock(cfg):
    return state.locked(cfg.state_dir, cfg.lock_timeout)


def _apply_store(cfg, before, make_tools):
    """Apply the Xray part after a store change; put the store back if that fails."""
    if not config.xray_enabled(cfg):
        return None
    try:
        return engine.apply_locked(engine.reread(cfg), make_tools(cfg), "xray")
    except VpdError as e:
        store.put_back(cfg.data_dir, before)
        raise XrayError("applying the new server addresses failed: %s. The server list is back as it was" % e)


def edit_store(cfg, mutate, make_tools=txn.tools_for):
    """Run mutate(store) -> result under the lock; save if the store changed, and apply if its
    addresses did (a refresh's time or error alone changes nothing in the kernel)."""
    with _lock(cfg):
        before = store.raw_bytes(cfg.data_dir)
        st = store.load(cfg.data_dir)
        addresses = st.addresses()
        result = mutate(st)
        data = st.dumps().encode("utf-8")
        if data != (before or store.Store().dumps().encode("utf-8")):
            store.save(cfg.data_dir, st)
            if st.addresses() != addresses:
                _apply_store(cfg, before, make_tools)
        return result


def not_a_subscription(text):
    """XrayError (usage) if `text` is a subscription's address rather than links or a body: that
    is added as a subscription (its address stays a secret), not imported."""
    if text.strip()[:16].lower().startswith(("http://", "https://")):
        raise XrayError("%s is a subscription address: add it as a subscription (`xray sub add ID URL`)"
                        % subscription.redact(text.strip()), exit_code=2)


def read_input(source, stdin=None):
    """The text of `xray import`'s argument: a share link, a file, or - for stdin."""
    if source == "-":
        return (stdin or sys.stdin).read()
    not_a_subscription(source)
    if "://" in source[:16]:
        return source
    try:
        with open(source, "rb") as f:
            return f.read(4 << 20).decode("utf-8", errors="replace")
    except OSError as e:
        raise XrayError("cannot read %s: %s" % (source, e.strerror or e), exit_code=2)


def import_text(cfg, text, make_tools=txn.tools_for, resolve=store.resolve):
    """Store every server in a link list / subscription body. Returns (counts, added, known)."""
    entries = subscription.parse_body(text.encode("utf-8") if isinstance(text, str) else text)
    servers = [e for e in entries if isinstance(e, dict)]
    counts = subscription.counts(entries)

    def mutate(st):
        return st.add(store.MANUAL, servers, resolve)
    added, known = edit_store(cfg, mutate, make_tools) if servers else (0, 0)
    return counts, added, known


def sub_update(cfg, sub, fetch=subscription.fetch, make_tools=txn.tools_for, resolve=store.resolve, now=time.time):
    """Refresh one subscription. A fetch that fails, or a body with no usable server, keeps the
    previous list (the error is remembered in the store and raised). Returns (counts, added, removed)."""
    source = store.sub_source(sub.id)
    try:
        body, headers = fetch(sub.url, sub.user_agent)
        entries = subscription.parse_body(body)
        servers = [e for e in entries if isinstance(e, dict)]
        if not servers:
            raise XrayError("no usable server in the answer (%s)" % counts_text(subscription.counts(entries)))
    except XrayError as e:
        why = str(e)

        def remember(st):
            st.sources.setdefault(source, {})["error"] = why
        edit_store(cfg, remember, make_tools)
        raise XrayError("subscription %s: %s; its previous list is kept" % (sub.id, why))
    counts = subscription.counts(entries)

    def mutate(st):
        added, removed = st.replace_source(source, servers, resolve)
        meta = {"updated": int(now()), "count": len(st.from_source(source)), "error": ""}
        info = subscription.userinfo(headers)
        if info:
            meta["userinfo"] = info
        st.sources[source] = meta
        return added, removed
    added, removed = edit_store(cfg, mutate, make_tools)
    return counts, added, removed


def due_subscriptions(cfg, subs=None, now=None, tried=None, retry_s=3600):
    """Those of `subs` (default: the enabled subscriptions) whose interval_h has passed since their
    last good update: the `--due` rule of cron and the watch daemon. `tried` ({id: time of the
    last attempt}) holds a failing one back for retry_s, so a daemon does not fetch it every round."""
    st = store.load(cfg.data_dir)
    now = time.time() if now is None else now
    tried = tried or {}
    subs = [s for s in cfg.xray.side.subscriptions if s.enabled] if subs is None else subs
    return [s for s in subs if now - (st.sources.get(store.sub_source(s.id), {}).get("updated") or 0) >= s.interval_h * 3600
            and not 0 <= now - tried.get(s.id, -retry_s - 1) < retry_s]


def _sub_change(mutate):
    """A config change of xray.subscriptions: mutate(the raw list) -> summary."""
    def change(raw, cfg, out):
        xr = raw.setdefault("xray", {})
        if not isinstance(xr, dict):
            raise XrayError("xray in the config is not an object", exit_code=2)
        subs = xr.setdefault("subscriptions", [])
        if not isinstance(subs, list):
            raise XrayError("xray.subscriptions in the config is not a list", exit_code=2)
        return mutate(subs)
    return change


def sub_add(path, sub_id, url, interval_h=12, user_agent=None):
    """`xray sub add`: the subscription goes into the config (validated, written, kept in the
    history; nothing to apply); fetching it is sub_update's. Returns the txn Outcome (its cfg
    holds the new subscription)."""
    def mutate(subs):
        if any(isinstance(s, dict) and s.get("id") == sub_id for s in subs):
            raise XrayError("subscription %r exists (`xray sub remove %s` first)" % (sub_id, sub_id), exit_code=2)
        entry = {"id": sub_id, "url": url, "interval_h": interval_h}
        if user_agent:
            entry["user_agent"] = user_agent
        subs.append(entry)
        return "xray: subscription %s added" % sub_id
    return txn.run(path, _sub_change(mutate), apply=False)


def sub_remove(path, sub_id, make_tools=txn.tools_for):
    """`xray sub remove`: out of the config, then its servers out of the store (applied).
    Returns (the txn Outcome, how many servers were forgotten)."""
    def mutate(subs):
        keep = [s for s in subs if not (isinstance(s, dict) and s.get("id") == sub_id)]
        if len(keep) == len(subs):
            raise XrayError("no subscription %r (`xray sub list`)" % sub_id, exit_code=2)
        subs[:] = keep
        return "xray: subscription %s removed" % sub_id
    res = txn.run(path, _sub_change(mutate), apply=False)
    return res, edit_store(res.cfg, lambda st: st.remove_source(store.sub_source(sub_id)), make_tools)


def subscriptions(cfg, sub_id=None):
    """The subscription `sub_id` (XrayError if there is none), or every enabled one: what
    `xray sub update [ID]` fetches."""
    if sub_id is None:
        return [s for s in cfg.xray.side.subscriptions if s.enabled]
    found = [s for s in cfg.xray.side.subscriptions if s.id == sub_id]
    if not found:
        raise XrayError("no subscription %r (`xray sub list`)" % sub_id, exit_code=2)
    return found


def sub_rows(cfg, st=None):
    """`xray sub list`'s rows: id, the address shortened to its host (subscription.redact: the
    token never), enabled, interval, server count, last update, last error, the panel's quota."""
    st = store.load(cfg.data_dir) if st is None else st
    rows = []
    for s in cfg.xray.side.subscriptions:
        meta = st.sources.get(store.sub_source(s.id), {})
        rows.append({"id": s.id, "url": subscription.redact(s.url), "enabled": s.enabled, "interval_h": s.interval_h,
                     "servers": len(st.from_source(store.sub_source(s.id))), "updated": meta.get("updated"),
                     "error": meta.get("error", ""), "userinfo": meta.get("userinfo", {})})
    return rows


def use(cfg, key, backend=None):
    """Switch to a server; record it as xray.active_server. Returns (server, latency ms)."""
    with _lock(cfg):
        cfg = engine.reread(cfg)
        st = store.load(cfg.data_dir)
        server = st.find(key)
        before = store.raw_bytes(cfg.data_dir)
        try:
            ms = switch.switch(cfg, server, backend)
        except XrayError as e:
            _status(cfg, st, before, server["id"], error=str(e))
            raise
        _status(cfg, st, before, server["id"], latency=ms)
        if cfg.xray.side.active_server != server["id"]:
            txn.run_locked(cfg.path, _set_active(server["id"]), apply=False)
        return server, ms


def _set_active(server_id):
    def change(raw, cfg, out):
        xr = raw.setdefault("xray", {})
        if not isinstance(xr, dict):
            raise Unchanged("xray is not an object")
        xr["active_server"] = server_id
        return "xray: active server %s" % server_id
    return change


def _status(cfg, st, before, server_id, latency=None, error=""):
    """Remember the last check of a server (not applied: addresses do not change)."""
    _statuses(cfg, st, before, {server_id: (latency, error)})


def _statuses(cfg, st, before, checks):
    """Remember the last checks {server id: (latency ms or None, error)} in one save."""
    now = int(time.time())
    found = [st.by_id(server_id) for server_id in checks]
    if not any(found):
        return
    for s, (latency, error) in zip(found, checks.values()):
        if s is not None:
            s["status"] = {"latency_ms": latency, "checked": now, "error": error}
    try:
        store.save(cfg.data_dir, st)
    except VpdError:
        store.put_back(cfg.data_dir, before)


def test(cfg, keys=(), every=False, timeout_s=10.0):
    """`xray test`: servers (by id, number or name; every stored one; or the active one) through
    the prober. The probing runs outside the run lock (it takes up to a probe timeout); the
    results are recorded under it. Returns [(number, server, result)] in the store's order."""
    from . import prober
    st = store.load(cfg.data_dir)
    if every:
        chosen = list(st.servers)
    elif keys:
        chosen = [st.find(k) for k in keys]
    elif cfg.xray.side.active_server:
        chosen = [st.find(cfg.xray.side.active_server)]
    else:
        raise XrayError("no active server: give server ids or --all (`xray servers` lists them)", exit_code=2)
    if not chosen:
        raise XrayError("no servers (`vpn-director xray import LINK` or `xray sub add ID URL`)", exit_code=2)
    results = prober.test(cfg, chosen, timeout_s=timeout_s)
    with _lock(cfg):
        st = store.load(cfg.data_dir)
        before = store.raw_bytes(cfg.data_dir)
        _statuses(cfg, st, before, {i: (r["latency_ms"], "" if r["ok"] else r["reason"]) for i, r in results.items()})
    number = {s["id"]: i for i, s in enumerate(st.servers, start=1)}
    seen, out = set(), []
    for s in chosen:
        if s["id"] not in seen:
            seen.add(s["id"])
            out.append((number.get(s["id"]), s, results[s["id"]]))
    return sorted(out, key=lambda row: row[0] or 0)


def restart(cfg, backend=None):
    """Restart Xray on the config in place; returns the probe latency (None without a server)."""
    backend = backend or service.pick(cfg)
    with _lock(cfg):
        if not os.path.isfile(service.config_path(cfg, backend)):
            raise XrayError("no Xray config at %s yet: `vpn-director xray use ID` writes one"
                            % service.config_path(cfg, backend))
        return switch.restart(cfg, backend)


def server_rows(cfg, st=None):
    """The stored servers as rows for lists (`xray servers`, the web UI, the bot): number, id,
    name, kind, address, port, resolved addresses, source, active, last check. No credentials."""
    st = store.load(cfg.data_dir) if st is None else st
    rows = []
    for i, s in enumerate(st.servers, start=1):
        status = s.get("status") or {}
        rows.append({"number": i, "id": s["id"], "name": s.get("name", ""), "label": s.get("label", ""),
                     "address": s.get("address", ""), "port": s.get("port"), "ips": s.get("ips", []),
                     "source": s.get("source", ""), "active": s["id"] == cfg.xray.side.active_server,
                     "latency_ms": status.get("latency_ms"), "error": status.get("error", ""),
                     "checked": status.get("checked")})
    return rows


def counts_text(counts):
    """"stored 12, insecure 2, plaintext 1" from subscription.counts()."""
    return ", ".join("%s %d" % (k, v) for k, v in counts.items() if v) or "nothing"
