"""The `client`, `exclude`, `tunnel` and `config` commands: argument parsing and printing only.

The main command line calls register() to add them and runs `args.ops(args, out)`; every change
goes through txn, and errors reach the main command line as one OpsError or ConfigError.
"""

import json

from .. import config, log
from ..errors import EXIT_OK
from . import HISTORY_KEEP, OpsError

# The editing modules (and through them apply, countries, the linter) load only when a command
# of this area runs: every hook and cron run of vpn-director parses these commands' arguments.

VIA = "xray, a tunnel's table name"


def register(sub, common):
    """Add the four command groups to the main parser's sub-parsers."""
    def group(name, help, description):
        p = sub.add_parser(name, help=help, description=description)
        actions = p.add_subparsers(dest="action", metavar="ACTION")
        actions.required = True
        return actions

    def action(actions, name, handler, help, edit=True):
        p = actions.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(ops=handler)
        if edit:
            p.add_argument("--no-apply", action="store_true", help="only save the config; apply later")
        return p

    c = group("client", "list and edit the LAN clients: who goes through Xray, which tunnel, or direct",
              "Every edit validates the whole config, writes it atomically, applies what it changed and "
              "keeps a history version; a failed apply puts the previous file and routing back.")
    p = action(c, "list", cmd_client_list, "every client: address, name, route, paused, lists", edit=False)
    p.add_argument("--json", action="store_true", help="one JSON object")
    for name, handler, help in (("add", cmd_client_add, "route a client via Xray or a tunnel"),
                                ("move", cmd_client_move, "route a client another way: one write; its traffic takes the old path or the new one, never a third")):
        p = action(c, name, handler, help)
        p.add_argument("addr", metavar="ADDR", help="IPv4 address, CIDR, or a device name or MAC from the DHCP leases")
        p.add_argument("--via", required=True, metavar="VIA",
                       help=VIA + (", or direct (in no list)" if name == "move" else ""))
        if name == "add":
            p.add_argument("--name", help="also name the device in the config's `names`")
    for name, handler, help in (("pause", cmd_client_pause, "take a client out of every list for now (goes direct)"),
                                ("resume", cmd_client_resume, "undo pause"),
                                ("remove", cmd_client_remove, "remove a client from every list and from paused")):
        action(c, name, handler, help).add_argument("addr", metavar="ADDR", help="IPv4 address, CIDR, device name or MAC")

    e = group("exclude", "destinations that skip Xray or a tunnel (go direct)",
              "A two-letter country code (a country list, downloaded when first used) or an IPv4 address "
              "or CIDR (Xray only).")
    for name, handler in (("add", cmd_exclude_add), ("remove", cmd_exclude_remove)):
        p = action(e, name, handler, "%s an exclusion" % name)
        p.add_argument("target", metavar="CC|IP|CIDR")
        p.add_argument("--for", dest="where", default="xray", metavar="VIA", help=VIA + " (default: xray)")

    t = group("tunnel", "add, remove and order the tunnels (order decides mark, priority and first match)",
              "A tunnel is a routing table (from rt_tables, a number, or main) that VPN traffic is routed by.")
    p = action(t, "add", cmd_tunnel_add, "add a tunnel after the others")
    p.add_argument("table", metavar="TABLE")
    p.add_argument("--exclude", default="", metavar="CC,CC", help="country lists that skip this tunnel")
    action(t, "remove", cmd_tunnel_remove, "remove a tunnel (its clients go direct)").add_argument("table", metavar="TABLE")
    action(t, "order", cmd_tunnel_order, "put these tunnels first, in this order").add_argument(
        "tables", metavar="TABLE", nargs="+")

    h = group("config", "the config's history: list, compare and roll back versions",
              "The last %d versions are kept under <data_dir>/history/." % HISTORY_KEEP)
    p = action(h, "history", cmd_history, "list the kept versions", edit=False)
    p.add_argument("--json", action="store_true", help="one JSON object")
    p = action(h, "diff", cmd_diff, "what version N changed; with M (a version or `current`): from N to M",
               edit=False)
    p.add_argument("n", metavar="N", type=int)
    p.add_argument("m", metavar="M", nargs="?")
    action(h, "rollback", cmd_rollback, "put version N back (as a new version) and apply it").add_argument(
        "n", metavar="N", type=int)


# --- editing -----------------------------------------------------------------------------------

def _edit(args, out, change, allow_invalid=False):
    from . import names, route, txn
    log.setup(args.verbose)
    res = txn.run(args.config, change, apply=not args.no_apply, allow_invalid=allow_invalid)
    problem = log.configure(res.cfg.log_syslog, res.cfg.log_file, res.cfg.log_max_bytes) if res.cfg else None
    if problem:
        out.warn(problem)
    for n in res.notes:
        out.info(n)
    if res.summary:
        out.note(res.summary)  # what changed, also for the log
        tail = "; route now: %s" % route.Routes(res.cfg).shown(res.subject) if res.subject is not None else ""
        if res.plan is not None:
            out.info("applied %s: %d change(s) in %.2fs%s" % (res.scope, len(res.plan.changes), res.plan.elapsed,
                                                            tail))
            for c in res.plan.changes:
                out.detail("  " + c)
        elif args.no_apply:
            out.info("saved, not applied: `vpn-director apply` applies it%s" % tail)
        else:
            out.info("saved; nothing to apply (names only)")
        if res.version:
            out.detail("history: version %d" % res.version)
    shown = names.load(res.cfg) if res.cfg is not None and res.warnings else None
    for w in res.warnings:
        out.warn(shown.annotate(w) if shown else w)
    return EXIT_OK


def cmd_client_add(args, out):
    from . import clients
    return _edit(args, out, clients.add(args.addr, args.via, args.name))


def cmd_client_move(args, out):
    from . import clients
    return _edit(args, out, clients.move(args.addr, args.via))


def cmd_client_pause(args, out):
    from . import clients
    return _edit(args, out, clients.pause(args.addr))


def cmd_client_resume(args, out):
    from . import clients
    return _edit(args, out, clients.resume(args.addr))


def cmd_client_remove(args, out):
    from . import clients
    return _edit(args, out, clients.remove(args.addr))


def cmd_exclude_add(args, out):
    from . import excludes
    return _edit(args, out, excludes.add(args.target, args.where))


def cmd_exclude_remove(args, out):
    from . import excludes
    return _edit(args, out, excludes.remove(args.target, args.where))


def cmd_tunnel_add(args, out):
    from . import tunnels
    return _edit(args, out, tunnels.add(args.table, [c.strip() for c in args.exclude.split(",") if c.strip()]))


def cmd_tunnel_remove(args, out):
    from . import tunnels
    return _edit(args, out, tunnels.remove(args.table))


def cmd_tunnel_order(args, out):
    from . import tunnels
    return _edit(args, out, tunnels.order(args.tables))


def cmd_rollback(args, out):
    from . import history, rawfile, txn
    data_dir = txn.placed(rawfile.read(txn.config_path(args.config)).raw).data_dir
    return _edit(args, out, history.rollback(data_dir, args.n), allow_invalid=True)


# --- reading -----------------------------------------------------------------------------------

def cmd_client_list(args, out):
    from . import clients, names, txn
    cfg = config.load(txn.config_path(args.config))
    for w in cfg.warnings:
        out.warn(w)
    rows = clients.rows(cfg, names.load(cfg))
    if args.json:
        print(json.dumps({"clients": rows}, indent=1, ensure_ascii=False))
        return EXIT_OK
    table = [("ADDRESS", "NAME", "ROUTE", "PAUSED", "LISTED IN")]
    for r in rows:
        listed = ", ".join(r["listed_in"]) or ("inside " + ", ".join(r["inside"]) if r["inside"] else "-")
        table.append((r["address"], r["name"] or "-", r["via"], "yes" if r["paused"] else "-", listed))
    if not rows:
        out.info("no clients: every device goes direct (`vpn-director client add ADDR --via xray|TABLE`)")
        return EXIT_OK
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        out.info("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return EXIT_OK


def _kept(args):
    from . import rawfile, txn
    snap = rawfile.read(txn.config_path(args.config))
    return snap, txn.placed(snap.raw).data_dir


def cmd_history(args, out):
    from . import history
    snap, data_dir = _kept(args)
    kept = history.versions(data_dir)
    current = next((v.number for v in reversed(kept) if v.text.encode("utf-8") == snap.data), None)
    if args.json:
        print(json.dumps({"directory": history.directory(data_dir), "current": current,
                          "versions": [v.as_dict() for v in kept]}, indent=1, ensure_ascii=False))
        return EXIT_OK
    if not kept:
        out.info("no history yet: the first edit keeps the file as found, then each change (%s)"
                 % history.directory(data_dir))
        return EXIT_OK
    for v in kept:
        out.info("%s%4d  %s  %s" % ("*" if v.number == current else " ", v.number, v.when(), v.summary))
    if current is None:
        out.info("(the file now differs from every kept version: edited outside vpn-director)")
    return EXIT_OK


def cmd_diff(args, out):
    from . import history
    snap, data_dir = _kept(args)
    v = history.get(data_dir, args.n)
    if args.m is None:
        before = history.previous(data_dir, args.n)
        old, old_label = (before.text, "version %d" % before.number) if before else ("", "(nothing kept before it)")
        new, new_label = v.text, "version %d: %s" % (v.number, v.summary)
    elif args.m == "current":
        old, old_label, new, new_label = v.text, "version %d" % v.number, snap.data.decode("utf-8"), "current file"
    else:
        try:
            other = history.get(data_dir, int(args.m))
        except ValueError:
            raise OpsError("M must be a version number or `current`, not %r" % args.m)
        old, old_label, new, new_label = v.text, "version %d" % v.number, other.text, "version %d" % other.number
    text = history.diff(old, new, old_label, new_label)
    out.info(text.rstrip("\n") if text else "no differences")
    return EXIT_OK
