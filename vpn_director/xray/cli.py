"""The `xray ...` commands: argument parsing and printing only; the work is in actions.

The main command line calls register() to add them (and the top-level `watch`, the daemon of the
health checks and failover) and runs `args.ops(args, out)`. The modules
doing the work load only when one of these commands runs (hooks and cron parse these arguments
too).
"""

import json
import os
import sys
import time

from .. import log
from ..errors import EXIT_OK
from . import XrayError


def register(sub, common):
    x = sub.add_parser("xray", help="Xray servers and subscriptions: import, list, test, switch, render, status",
                       description="Servers come from share links (vless, vmess, trojan, ss, hysteria2) and "
                                   "subscriptions; every stored server's address bypasses the proxy. "
                                   "`xray use` generates Xray's config, tests it, restarts Xray and probes "
                                   "the proxy, and puts the previous config back on any failure.")
    acts = x.add_subparsers(dest="action", metavar="ACTION")
    acts.required = True

    def action(name, handler, help, parent=acts):
        p = parent.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(ops=handler)
        return p

    p = action("import", cmd_import, "store the servers of share links: one link, a file of links or a "
                                     "subscription body, or - for stdin")
    p.add_argument("source", metavar="LINK|FILE|-")
    x_sub = action("sub", None, "subscriptions: add, remove, list, update")
    subs = x_sub.add_subparsers(dest="sub_action", metavar="ACTION")
    subs.required = True
    p = action("add", cmd_sub_add, "add a subscription and fetch it", subs)
    p.add_argument("id", metavar="ID", help="a short name: a-z 0-9 _ -")
    p.add_argument("url", metavar="URL", help="the subscription address (kept secret: never printed)")
    p.add_argument("--interval", type=int, default=12, metavar="H", help="refresh every H hours (default 12)")
    p.add_argument("--user-agent", metavar="UA", help="User-Agent to fetch with (some panels answer by it)")
    p.add_argument("--no-update", action="store_true", help="only save it; fetch later with `xray sub update`")
    action("remove", cmd_sub_remove, "remove a subscription and its servers", subs).add_argument("id", metavar="ID")
    action("list", cmd_sub_list, "the subscriptions: id, address (shortened), servers, last update",
           subs).add_argument("--json", action="store_true", help="one JSON object")
    p = action("update", cmd_sub_update, "fetch subscriptions again (all enabled ones, or ID); a failed or "
                                         "empty answer keeps the previous list", subs)
    p.add_argument("id", metavar="ID", nargs="?")
    p.add_argument("--due", action="store_true",
                   help="only those whose interval_h has passed since their last update (for cron)")
    action("servers", cmd_servers, "the stored servers: number, id, name, kind, address, last latency, status"
           ).add_argument("--json", action="store_true", help="one JSON object (no credentials)")
    action("use", cmd_use, "switch Xray to a server (id, number from `xray servers`, or name): test, "
                           "restart, probe; the previous config comes back on any failure").add_argument(
        "server", metavar="ID|#|NAME")
    p = action("test", cmd_test, "real-delay test of servers through a separate prober Xray (the live one is "
                                 "not touched): the active server, the ones named, or --all; exit 0 only if "
                                 "every tested server answered HTTP 204")
    p.add_argument("servers", metavar="ID|#|NAME", nargs="*")
    p.add_argument("--all", action="store_true", help="every stored server")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S", help="seconds per server (default 10)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    action("render", cmd_render, "print the Xray config that `xray use` would write (it holds credentials)"
           ).add_argument("--server", metavar="ID|#|NAME", help="default: the active server")
    action("status", cmd_status, "Xray's version, service, config file, active server, ports, last error; exit 3 "
                                 "when something is wrong (not running, not listening, a foreign config)"
           ).add_argument("--json", action="store_true", help="one JSON object")
    action("restart", cmd_restart, "restart Xray on its current config and probe the proxy")
    w = sub.add_parser("watch", help="the daemon: routing watchdog, due subscriptions, Xray health checks and "
                                     "failover, every xray.health.interval_s",
                       description="Every xray.health.interval_s seconds: the drift check of `apply --if-changed`, "
                                   "the subscriptions whose interval_h has passed, and a check of the active Xray "
                                   "server through Xray's SOCKS inbound. After xray.health.fail_threshold failures "
                                   "in a row, and only if a direct check shows the WAN works, the other servers are "
                                   "tested in a separate Xray and the best one is switched to like `xray use` does "
                                   "(xray.failover). Events go to syslog and <state_dir>/events.jsonl, the state to "
                                   "<state_dir>/xray-health.json (`xray status` shows it). One daemon per state_dir; "
                                   "SIGTERM ends it after the current round.")
    w.add_argument("--once", action="store_true", help="one round, then exit (for cron); does nothing while the "
                                                        "daemon runs")
    w.set_defaults(ops=cmd_watch)


def _cfg(args, out):
    from ..ops import txn
    return txn.load(args.config, out.warn)


def _logged(cfg, out):
    """Commands that change something also log it (syslog, log file), like apply."""
    log.setup(False)
    problem = log.configure(cfg.log_syslog, cfg.log_file, cfg.log_max_bytes)
    if problem:
        out.warn(problem)


def _need_root(what):
    if os.geteuid() != 0:
        raise XrayError("xray %s needs root: it changes the routing and controls the Xray service" % what)


def cmd_import(args, out):
    from . import actions
    cfg = _cfg(args, out)
    _need_root("import")
    _logged(cfg, out)
    counts, added, known = actions.import_text(cfg, actions.read_input(args.source))
    line = "import: %s; %d new, %d already stored" % (actions.counts_text(counts), added, known)
    out.note(line)
    return EXIT_OK if counts.get("stored") else 1


def cmd_sub_add(args, out):
    from . import actions
    cfg = _cfg(args, out)
    _need_root("sub add")
    _logged(cfg, out)
    res = actions.sub_add(args.config, args.id, args.url, args.interval, args.user_agent)
    out.note(res.summary)
    if args.no_update:
        return EXIT_OK
    return _update(res.cfg, actions.subscriptions(res.cfg, args.id), out)


def cmd_sub_remove(args, out):
    from . import actions
    cfg = _cfg(args, out)
    _need_root("sub remove")
    _logged(cfg, out)
    res, n = actions.sub_remove(args.config, args.id)
    out.note("%s (%d server(s) forgotten)" % (res.summary, n))
    return EXIT_OK


def cmd_sub_list(args, out):
    from . import actions
    cfg = _cfg(args, out)
    rows = actions.sub_rows(cfg)
    if args.json:
        print(json.dumps({"subscriptions": rows}, indent=1, ensure_ascii=False))
        return EXIT_OK
    if not rows:
        out.info("no subscriptions (`vpn-director xray sub add ID URL`)")
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["updated"])) if r["updated"] else "never"
        out.info("%-12s %-32s %3d server(s)  every %dh  updated %s%s%s" % (
            r["id"], r["url"], r["servers"], r["interval_h"], when, "" if r["enabled"] else "  (disabled)",
            "  last error: %s" % r["error"] if r["error"] else ""))
    return EXIT_OK


def cmd_sub_update(args, out):
    from . import actions
    cfg = _cfg(args, out)
    _need_root("sub update")
    _logged(cfg, out)
    subs = actions.subscriptions(cfg, args.id or None)
    if args.due:
        subs = actions.due_subscriptions(cfg, subs)
        if not subs:
            out.detail("xray sub update --due: no subscription is due")
    return _update(cfg, subs, out)


def _update(cfg, subs, out):
    from . import actions
    failed = 0
    for s in subs:
        try:
            counts, added, removed = actions.sub_update(cfg, s)
        except XrayError as e:
            out.err("error: %s" % e)
            failed += 1
            continue
        out.note("subscription %s: %s; %d new, %d gone" % (s.id, actions.counts_text(counts), added, removed))
    return 1 if failed else EXIT_OK


def cmd_servers(args, out):
    from . import actions
    cfg = _cfg(args, out)
    rows = actions.server_rows(cfg)
    if args.json:
        print(json.dumps({"servers": rows, "active": cfg.xray.side.active_server}, indent=1, ensure_ascii=False))
        return EXIT_OK
    if not rows:
        out.info("no servers (`vpn-director xray import LINK` or `xray sub add ID URL`)")
        return EXIT_OK
    table = [("", "#", "ID", "NAME", "KIND", "ADDRESS", "LATENCY", "STATUS")]
    for r in rows:
        latency = "%d ms" % r["latency_ms"] if r["latency_ms"] is not None else "-"
        table.append(("*" if r["active"] else "", str(r["number"]), r["id"], r["name"], r["label"],
                      _hostport(r["address"], r["port"]), latency, "failed" if r["error"] else
                      ("ok" if r["checked"] else "-")))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        out.info("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return EXIT_OK


def _hostport(host, port):
    return "[%s]:%s" % (host, port) if ":" in host else "%s:%s" % (host, port)


def cmd_use(args, out):
    from . import actions
    cfg = _cfg(args, out)
    _need_root("use")
    _logged(cfg, out)
    server, ms = actions.use(cfg, args.server)
    out.note("xray: now using %r (%s, %s), probe answered in %d ms"
             % (server.get("name"), server["id"], server.get("label"), ms))
    return EXIT_OK


def cmd_test(args, out):
    from . import actions
    cfg = _cfg(args, out)
    _need_root("test")
    if args.all and args.servers:
        raise XrayError("give server ids or --all, not both", exit_code=2)
    if not 0 < args.timeout <= 300:
        raise XrayError("--timeout must be between 0 and 300 seconds", exit_code=2)
    start = time.monotonic()
    rows = actions.test(cfg, args.servers, args.all, args.timeout)
    elapsed = int((time.monotonic() - start) * 1000)
    passed = sum(1 for _, _, r in rows if r["ok"])
    if args.json:
        print(json.dumps({"results": [dict(r, number=n, id=s["id"], name=s.get("name", ""), label=s.get("label", ""))
                                      for n, s, r in rows], "passed": passed, "tested": len(rows),
                          "elapsed_ms": elapsed}, indent=1, ensure_ascii=False))
    else:
        table = [("#", "ID", "NAME", "KIND", "RESULT")]
        for n, s, r in rows:
            table.append((str(n or "-"), s["id"], s.get("name", ""), s.get("label", ""),
                          "%d ms" % r["latency_ms"] if r["ok"] else "failed: %s" % r["reason"]))
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
        for row in table:
            out.info("  ".join([c.ljust(w) for c, w in zip(row, widths)] + [row[-1]]).rstrip())
        out.info("%d of %d passed in %.1fs" % (passed, len(rows), elapsed / 1000.0))
    return EXIT_OK if passed == len(rows) else 1


def cmd_render(args, out):
    from . import generate, service, store
    cfg = _cfg(args, out)
    st = store.load(cfg.data_dir)
    key = args.server or cfg.xray.side.active_server
    if not key:
        raise XrayError("no active server: give --server ID (`xray servers` lists them)", exit_code=2)
    server = st.find(key)
    sys.stdout.write(generate.render(cfg, server, service.error_log(cfg)).decode("utf-8"))
    return EXIT_OK


def cmd_status(args, out):
    from . import status
    cfg = _cfg(args, out)
    rep = status.report(cfg)
    if args.json:
        print(json.dumps(rep, indent=1, ensure_ascii=False))
    else:
        for line in status.lines(rep):
            out.info(line)
    return EXIT_OK if rep["ok"] else 3


def cmd_watch(args, out):
    from . import watch
    cfg = _cfg(args, out)
    if os.geteuid() != 0:
        raise XrayError("watch needs root: it changes the routing and controls the Xray service")
    _logged(cfg, out)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # under systemd each line reaches the journal at once
    return watch.run(cfg, out, once=args.once)


def cmd_restart(args, out):
    from . import actions
    cfg = _cfg(args, out)
    _need_root("restart")
    _logged(cfg, out)
    ms = actions.restart(cfg)
    out.note("xray: restarted; probe answered in %d ms" % ms)
    return EXIT_OK
