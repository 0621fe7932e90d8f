"""One edit of the config, start to finish, under the run lock.

read the file raw -> change it -> validate the whole result (every problem with its JSON path;
nothing written) -> write it atomically -> apply the part it affects -> keep it in the history.
If the apply fails, the previous file is put back byte for byte and the previous routing stays
in force (apply undoes its own finished steps; whatever this edit changed in the kernel beyond
that is applied back from the previous file).

A change is a function `change(raw, cfg, out) -> summary`: it edits `raw` (a copy of the parsed
file, keys in file order) in place, may add lines for the user to `out.notes` and name the
client it is about in `out.subject`, and returns the one-line summary for the history. It
raises Unchanged when the wanted state already holds, and OpsError for bad input.
"""

import copy
import json
import os
from dataclasses import dataclass, field
from typing import List, Optional

from .. import config, engine, lint, listcache, state
from ..errors import EXIT_FAILED, ConfigError, VpdError
from ..model import TUNNEL, XRAY
from ..record import replace
from ..tools import Tools
from . import OpsError, history, rawfile

DISPLAY_ONLY = ("names", "webui", "telegram")  # top-level keys that never reach the kernel (names; the web UI's
# and the bot's own settings)
DISPLAY_ONLY_ADVANCED = ("leases_file",)
# xray keys about the Xray process and its servers, not the kernel's tables (the server store's
# addresses reach the kernel through the store, applied by the command that changed it)
PROCESS_ONLY_XRAY = ("subscriptions", "active_server", "preferred_server", "bittorrent", "health", "failover")


class Unchanged(Exception):
    """The wanted state already holds; the message says so."""


@dataclass
class Outcome:
    summary: str = ""  # one line; "" when nothing changed
    notes: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)  # what the linter finds new in the result
    scope: Optional[str] = None  # what was applied: all, xray, tunnel; None if nothing was
    plan: object = None  # the last apply's plan
    version: Optional[int] = None  # history number of the new file
    cfg: Optional[config.Config] = None  # the config now in the file
    exact: Optional[bytes] = None  # set by a change that restores a file's exact bytes (rollback)
    subject: object = None  # the client network the edit is about, if any


def config_path(path=None, env=os.environ):
    return path or env.get("VPD_CONFIG") or config.DEFAULT_PATH


def load(path=None, warn=None):
    """The config a command reads (the path given, $VPD_CONFIG, or the default), validated; each
    of its warnings passed to `warn`."""
    cfg = config.load(config_path(path))
    for w in cfg.warnings if warn else ():
        warn(w)
    return cfg


def run(path, change, apply=True, make_tools=None, allow_invalid=False):
    """Make one edit; returns an Outcome. `allow_invalid`: the file now in place may be invalid
    (a rollback replaces it whole)."""
    path = config_path(path)
    where = placed(rawfile.read(path).raw, path)
    with state.locked(where.state_dir, where.lock_timeout):
        return _locked(path, change, apply, make_tools or tools_for, allow_invalid)


def run_locked(path, change, apply=True, make_tools=None):
    """run() for a caller that already holds the run lock (an Xray switch records its server)."""
    return _locked(config_path(path), change, apply, make_tools or tools_for, False)


def tools_for(cfg):
    """The kernel tools for a config (its iptables backend, probes cached in its state_dir)."""
    return Tools(cfg.iptables, cache_dir=cfg.state_dir)


def placed(raw, path="<config>"):
    """The validated config, or, when it is invalid, one with only its places (data_dir, state_dir,
    lock timeout; each if valid): enough to take the lock and find the history."""
    try:
        return config.validate(copy.deepcopy(raw), path)
    except ConfigError:
        pass
    raw = raw if isinstance(raw, dict) else {}
    adv = raw.get("advanced") if isinstance(raw.get("advanced"), dict) else {}
    for keep in ({"data_dir": raw.get("data_dir"), "advanced": {k: adv.get(k) for k in ("state_dir", "lock_timeout")}},
                 {"advanced": {"state_dir": adv.get("state_dir")}}, {}):
        try:
            return config.validate(keep)
        except ConfigError:
            continue


def _locked(path, change, apply, make_tools, allow_invalid):
    snap = rawfile.read(path)
    try:
        old = config.validate(copy.deepcopy(snap.raw), path)
    except ConfigError:
        if not allow_invalid:
            raise
        old = None
    raw = copy.deepcopy(snap.raw)
    out = Outcome(cfg=old)
    try:
        summary = change(raw, old, out)
    except Unchanged as e:
        out.notes.append("%s; nothing changed" % e)
        return out
    if same(raw, snap.raw):
        out.notes.append("the config already says so; nothing changed")
        return out
    new = config.validate(copy.deepcopy(raw), path)  # ConfigError: every problem, nothing written
    out.warnings = _new_findings(old, new)
    data = out.exact if out.exact is not None else rawfile.dumps(raw, snap.indent).encode("utf-8")
    scope = scope_of(snap.raw, raw) if apply else None
    if scope:
        out.notes += _fetch_missing(new)
    elif not apply:
        missing = listcache.missing_cache(new, listcache.used(new))
        if missing:
            out.warnings.append("no cached list for %s yet: `vpn-director update` fetches it" % ", ".join(missing))
    rawfile.write(snap.path, data, snap.st)
    if scope:
        try:
            out.plan = _apply(old, new, scope, make_tools)
        except VpdError as e:
            rawfile.restore(snap)
            raise OpsError("apply failed: %s. The config file is back as it was, and %s"
                           % (e, _back(old, scope, make_tools, e)), EXIT_FAILED)
        except BaseException:
            rawfile.restore(snap)
            raise
        out.scope = scope
    out.summary, out.cfg = summary, new
    try:
        out.version = history.record(new.data_dir, snap.data, data, summary)
    except OSError as e:
        out.warnings.append("config history not kept in %s: %s" % (history.directory(new.data_dir),
                                                                   e.strerror or e))
    return out


def _new_findings(old, new):
    seen_w = set(old.warnings) if old else set()
    seen_f = set(lint.lint(old)) if old else set()
    return [w for w in new.warnings if w not in seen_w] + [
        ("error: " if level == lint.ERROR else "") + msg for level, msg in lint.lint(new) if (level, msg) not in seen_f]


def scope_of(old, new):
    """The part of the kernel state an edit of the raw config affects: all, xray, tunnel or None."""
    comps = set()
    for key in list(old) + [k for k in new if k not in old]:
        a, b = old.get(key), new.get(key)
        if same(a, b) or key in DISPLAY_ONLY:
            continue
        if key == "xray":
            if not same(_strip(a, PROCESS_ONLY_XRAY), _strip(b, PROCESS_ONLY_XRAY)):
                comps.add(XRAY)
        elif key == "tunnel_director":
            comps.add(TUNNEL)
        elif key == "advanced" and same(_strip(a, DISPLAY_ONLY_ADVANCED), _strip(b, DISPLAY_ONLY_ADVANCED)):
            continue
        else:
            return "all"
    return "all" if len(comps) == 2 else next(iter(comps), None)


def same(a, b):
    """Equal including key order (`==` on dicts ignores it, and tunnel order matters)."""
    return json.dumps(a) == json.dumps(b)


def _strip(obj, keys):
    return {k: v for k, v in obj.items() if k not in keys} if isinstance(obj, dict) else obj


def _fetch_missing(cfg):
    """Country lists the new config uses but nobody downloaded yet: fetched now, or nothing changes."""
    missing = listcache.missing_cache(cfg, listcache.used(cfg))
    if not missing:
        return []
    from .. import countries  # the download code, only when a list is missing
    done, failed = countries.refresh(cfg, names=missing)
    if failed:
        raise OpsError("%s; nothing changed" % "; ".join(m for _, m in failed), EXIT_FAILED)
    return ["country list %s" % r.summary() for r in done]


def bridge(old, new):
    """The config to apply first when clients leave Xray for a tunnel: the new one with those
    clients still in Xray too. Apply loads the Xray set before it rebuilds the tunnel chain, so
    without this step such a client would go direct for a moment; with it, it keeps going
    through Xray (Xray wins) until the set drops it, and then its tunnel rule is already there."""
    if old is None:
        return None
    old_x, _ = config.effective(old)
    new_x, new_t = config.effective(new)
    tunnelled = [n for _, clients in new_t for n in clients]
    leaving = [n for n in old_x if n not in new_x and any(n.overlaps(t) for t in tunnelled)]
    if not leaving:
        return None
    return replace(new, xray=replace(new.xray, clients=list(new.xray.clients) + leaving))


def _apply(old, new, scope, make_tools):
    """Apply `new` (through the bridge config when there is one); the plan holds every step run."""
    tools = make_tools(new)
    first = bridge(old, new) if scope == "all" else None
    before = engine.apply_locked(first, tools, scope) if first is not None else None
    p = engine.apply_locked(new, tools, scope)
    if before is not None:
        p.steps, p.elapsed = before.steps + p.steps, before.elapsed + p.elapsed
    return p


def _back(old, scope, make_tools, error):
    """Bring the kernel back to the previous file after a failed apply; says how it went."""
    if getattr(error, "step", None) == "preflight":
        return "the kernel was not touched"
    if old is None:
        return "the failed apply undid its finished steps"
    try:
        engine.apply_locked(old, make_tools(old), scope)
    except VpdError as e:
        return "putting the previous routing back failed too (%s): `vpn-director status` shows what differs" % e
    return "the previous routing is in force"
