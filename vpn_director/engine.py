"""The operations behind the CLI: apply, stop, render, each over one desired state."""

import os
import time

from . import (boot, config, desired, killswitch, live, owned, reconcile, servers, setcheck, sets, state, steps,
               watchdog)
from .errors import ToolError
from .dns import pipeline as dnsmod
from .ipv6 import pipeline as ipv6
from .live import LiveState
from .xray import store as xray_store
from .tools import other_backend


def render_batches(full):
    """The batches that build `full` on an empty kernel: {tool: text}."""
    empty = LiveState(ipv6=ipv6.nothing_live(), dns=dnsmod.nothing_live())
    p = ipv6.extend(reconcile.plan(full, empty, "all", {}), full, empty, "all", {})
    p = dnsmod.extend(p, full, empty, "all", {})
    out = {"ipset": "", "iptables": "", "ip": "", "ip6tables": ""}
    for step in p.steps:
        out[step.tool] = out.get(step.tool, "") + step.batch
    return out


def build(cfg, record, scope="all", warn=lambda msg: None, dns=True, tunnel_dns=None):
    """The desired state; server names are resolved only when the Xray part is in scope.
    `tunnel_dns` ({tunnel: TunnelDns}) is looked up (the firmware's tunnel DNS) when not given."""
    resolver = servers.Resolver(record, warn, dns=dns and scope != "tunnel")
    stored = xray_store.addresses(cfg.data_dir, warn) if config.xray_enabled(cfg) else ()
    if tunnel_dns is None:
        tunnel_dns = dnsmod.tunnel_dns(cfg)
    full = desired.build(cfg, resolver=resolver, lan_nets=killswitch.lan_subnets(cfg.lan_interface),
                         stored_servers=stored, tunnel_dns=tunnel_dns)
    full.ipv6 = ipv6.build(cfg, record)
    return full, resolver


def apply(cfg, tools, scope="all", dry_run=False, log=lambda msg: None, warn=None, say=None):
    """Make the kernel match the config for `scope`; return the executed (or dry-run) plan."""
    warn = warn or log
    if dry_run:
        record = state.load_record(cfg.state_dir)
        full, _ = build(cfg, record, scope, warn)
        current = read(tools, cfg, record, full=full)
        reconcile.check_external(full.scoped(scope), current)
        return _plan(full, current, scope, record, warn)
    boot.prepare(cfg, log)
    with state.locked(cfg.state_dir, cfg.lock_timeout, say=say):
        return apply_locked(reread(cfg), tools, scope, warn)


def reread(cfg):
    """The config as its file says once the lock is held. An edit (the operations layer) may have
    changed the file while this run waited for the lock; applying what was read before would undo
    that edit in the kernel until the next run. Unchanged, it is not read and validated again."""
    if cfg.file_id is not None and config.file_id(cfg.path) == cfg.file_id:
        return cfg
    return config.load(cfg.path) if os.path.isfile(cfg.path) else cfg


def apply_locked(cfg, tools, scope="all", warn=lambda msg: None):
    """apply for a caller that already holds the run lock (the operations layer): a second flock
    on the same lock file from this process would wait for itself. No boot wait."""
    watchdog.mark(cfg.state_dir, scope, started=True)  # even if this run fails, the watchdog retries
    # built after the boot wait: server names resolve once the WAN is up
    return _run(cfg, tools, scope, stop=False, warn=warn)


def watch(cfg, tools, scope="all", log=lambda msg: None, warn=None, wait=True):
    """apply --if-changed: (plan, None) after a check, or (None, why nothing was checked).
    wait=False: skip instead of waiting out the re-apply spacing (watchdog.run)."""
    def check(s):
        return _run(reread(cfg), tools, s, stop=False, only_if_changed=True, warn=warn or log)
    return watchdog.run(cfg, check, log, scope, prepare=lambda: boot.prepare(cfg, log), wait=wait)


def stop(cfg, tools, scope="all", dry_run=False, warn=lambda msg: None, say=None):
    if dry_run:
        record = state.load_record(cfg.state_dir)
        full = _stop_state(cfg)
        return _plan(full, read(tools, cfg, record, full=full), scope, record, warn, stop=True)
    with state.locked(cfg.state_dir, cfg.lock_timeout, say=say):
        watchdog.mark(cfg.state_dir, scope, started=False)
        return _run(cfg, tools, scope, stop=True, warn=warn)


def _stop_state(cfg):
    return desired.build(cfg, resolver=lambda name: [], country_loader=sets.no_country)


def read(tools, cfg, record, counters=False, full=None, cheap=False):
    """The live state, with the route tables an earlier config used. With the desired state
    `full`, also the nat/filter tables its DNS objects (or the record's) live in. `cheap` (the
    watchdog): the sets from their headers when the record vouches for them (setcheck)."""
    own = desired.ownership(cfg)
    sets_read = None
    if cheap:
        sets_read = lambda tools: setcheck.trusted_sets(full, record, setcheck.parse_headers(tools.ipset_headers()))  # noqa: E731
    state = live.read(tools, cfg.xray.route_table, counters=counters, extra_tables=owned.route_tables(record, own),
                      sets=sets_read)
    state.ipv6 = ipv6.read(tools, cfg, record, counters=counters)  # None when nothing IPv6 is ours
    state.dns = dnsmod.read(tools, full, record, counters=counters)  # None when no DNS table matters
    return state


def _plan(full, current, scope, record, warn, stop=False):
    p = ipv6.extend(reconcile.plan(full, current, scope, record, stop=stop), full, current, scope, record, stop)
    p = dnsmod.extend(p, full, current, scope, record, stop)
    for w in p.warnings if warn else ():
        warn(w)
    return p


def _run(cfg, tools, scope, stop, warn, only_if_changed=False):
    started = time.monotonic()
    record = state.load_record(cfg.state_dir)
    _check_backend(tools, record, desired.ownership(cfg))
    if stop:
        full, resolver = _stop_state(cfg), None
    else:
        full, resolver = build(cfg, record, scope, warn)
    current = read(tools, cfg, record, full=full, cheap=only_if_changed)
    if current.sets_trusted:
        # the watchdog: a plan made with trusted sets is only a question; any change is planned
        # again with every set member read (the chains, rules and routes were read exactly)
        p = _plan(full, current, scope, record, None, stop=stop)
        if not p.steps:
            for w in p.warnings:
                warn(w)
            p.elapsed = time.monotonic() - started
            return p
        live.read_sets(tools, current)
    if not stop:
        reconcile.check_external(full.scoped(scope), current)
    p = _plan(full, current, scope, record, warn, stop=stop)
    loaded = None if stop else setcheck.loaded(full, full.scoped(scope).sets, record.get("loaded"))
    if only_if_changed and not p.steps:
        if loaded != record.get("loaded"):  # vouch for the sets just read in full: the next check is cheap
            state.save_record(cfg.state_dir, dict(record, loaded=loaded), record.get("hash", ""))
        p.elapsed = time.monotonic() - started
        return p
    extra = {"backend": tools.probe()[0]}
    extra["resolved"] = resolver.known(cfg.xray.servers) if resolver else record.get("resolved", {})
    if loaded is not None:
        extra["loaded"] = loaded
    with steps.Signals() as signals:
        if p.steps:  # written first: a run killed half-way leaves a record of all it may have created
            state.save_record(cfg.state_dir, dict(p.intent, **extra), record.get("hash", ""))
        steps.execute(p, tools, signals)
        state.save_record(cfg.state_dir, dict(p.record, **extra), "" if stop else _fingerprint(full))
    p.elapsed = time.monotonic() - started
    return p


def _check_backend(tools, record, own):
    """Our chains live in one iptables backend: a run with the other would build a second copy
    (or half-remove). Looked at only when the record does not name this backend."""
    backend = tools.probe()[0]
    if record.get("backend") == backend:
        return
    ours = other_backend_chains(tools, record, own)
    if ours:
        other = other_backend(backend)
        raise ToolError("preflight", "vpn-director's chain(s) %s are live in the other iptables backend (%s); "
                        "run `VPD_IPTABLES=%s vpn-director stop` first, or set advanced.iptables to it"
                        % (", ".join(ours), other, other))


def other_backend_chains(tools, record, own):
    """Our chains (the recorded ones and the config's) that exist in the mangle table of the
    iptables backend not in use."""
    text = tools.other_backend_save()
    if text is None:
        return []
    other = LiveState()
    live.parse_iptables_save(text, other)
    names = set(record.get("chains", {})) | {own.xray_chain, own.td_chain}
    return sorted(n for n in names if n in other.chains)


def _fingerprint(full):
    """Hash of what apply built: rules in full, sets by name and size. Only a note for people and
    scripts (the shell tool kept one too); every run still compares against the live state."""
    parts = [c.name + "\n" + "\n".join(c.rules) for c in full.chains]
    parts += [j.spec for j in full.jumps] + ["%d %s" % (r.pref, r.text) for r in full.rules]
    parts += ["%d %s" % (r.table, r.add) for r in full.routes]
    parts += ["%s %d" % (s.name, len(s.members)) for s in full.sets] + list(full.external_sets)
    for td in full.dns or ():
        parts += [td.table] + [c.name + "\n" + "\n".join(c.rules) for c in td.chains]
    return state.digest(*parts)


def bridge_warning():
    """The kernel gotcha from SPEC: bridged packets lose their TPROXY socket when this is 1."""
    try:
        with open("/proc/sys/net/bridge/bridge-nf-call-iptables") as fh:
            if fh.read().strip() == "1":
                return ("net.bridge.bridge-nf-call-iptables=1: TPROXY'd packets routed from the bridge "
                        "may never reach Xray; set it to 0")
    except OSError:
        pass
    return None


EXTRA_FILES = {"iptables-nat": "iptables.nat", "iptables-filter": "iptables.filter"}  # only when not empty


def write_out(directory, batches):
    """render --out DIR: the batch files, written atomically."""
    os.makedirs(directory, exist_ok=True)
    names = {"ipset": "ipset.restore", "iptables": "iptables.mangle", "ip": "ip.batch", "ip6tables": "ip6tables.filter"}
    names.update({t: f for t, f in EXTRA_FILES.items() if batches.get(t)})
    for tool, fname in names.items():
        state.write_atomic(os.path.join(directory, fname), batches[tool] or _empty(tool), mode=0o644)
    return [os.path.join(directory, n) for n in names.values()]


def _empty(tool):
    # iptables-restore needs a table section even with nothing in it; the others accept nothing.
    return {"iptables": "*mangle\nCOMMIT\n", "ip6tables": "*filter\nCOMMIT\n"}.get(tool, "")

