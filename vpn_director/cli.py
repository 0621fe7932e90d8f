"""Command line: parse arguments, run one operation, turn every error into one line and an exit code."""

import json
import os
import select
import sys
import types

from . import __version__, config, engine, log
from .errors import EXIT_DRIFT, EXIT_FAILED, EXIT_OK, EXIT_USAGE, ConfigError, UsageError, VpdError
from .tools import Tools

# What only some commands need is imported in them (status, trace, check, render, lab, install,
# and each area's commands): the watchdog runs `apply --if-changed` every minute and from every
# firewall hook, and on a router CPU every module it loads costs several milliseconds.

SCOPES = ("all", "tunnel", "xray")
UNATTENDED = ("apply", "stop", "restart", "update", "install", "uninstall")  # logged to syslog
NEEDS_ROOT = ("apply", "stop", "restart", "update", "status")  # they read or change the kernel's tables


def _need_root(command):
    if os.geteuid() != 0:
        raise VpdError("%s needs root: it reads and changes the kernel's firewall and routing tables" % command)


def _path(text):
    """argparse type: a non-empty path (an empty -c would quietly fall back to the default config)."""
    import argparse
    if not text:
        raise argparse.ArgumentTypeError("an empty path")
    return text


def _port(text):
    """argparse type: a TCP/UDP port number."""
    import argparse
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 65535):
        raise argparse.ArgumentTypeError("%r is not a port (1..65535)" % text)
    return int(text)


# Each area registers its own commands (register(sub, common)); its module loads only when one of
# them runs, or for --help and an unknown command, which list every command.
AREAS = {"client": "ops", "exclude": "ops", "tunnel": "ops", "config": "ops", "xray": "xray", "watch": "xray",
         "web": "web", "bot": "bot"}


def command_of(argv):
    """The command word of an argument list: the first that is neither an option nor -c's value."""
    args = iter(argv)
    for a in args:
        if a in ("-c", "--config"):
            next(args, None)
        elif not a.startswith("-"):
            return a
    return None


def build_parser(command=None):
    """The parser; with `command`, only that command's part (hooks and cron run vpn-director
    often, and building every command's parser costs more than a no-op check)."""
    import argparse
    p = argparse.ArgumentParser(
        prog="vpn-director", formatter_class=_formatter,
        description="Selective routing for Linux routers: Xray TPROXY and VPN tunnels from one JSON file.",
        epilog="Exit codes: 0 ok, 1 operation failed (previous state kept), 2 bad usage or invalid "
               "config (nothing touched), 3 status found differences.")
    common = argparse.ArgumentParser(add_help=False, formatter_class=_formatter)
    for parser, default in ((p, None), (common, argparse.SUPPRESS)):
        # accepted before or after the command; the sub-parser copy must not reset the value
        parser.add_argument("-c", "--config", default=default, type=_path,
                            help="config file (default: $VPD_CONFIG or %s)" % config.DEFAULT_PATH)
        parser.add_argument("-v", "--verbose", action="store_true", default=default or False,
                            help="list every change")
        parser.add_argument("-q", "--quiet", action="store_true", default=default or False,
                            help="print errors only")
    p.add_argument("--version", action="version", version="vpn-director " + __version__)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    add = sub.add_parser

    def sub_add(name, **kw):
        return add(name, parents=[common], formatter_class=_formatter, **kw)
    sub.add_parser = sub_add
    if command in CORE:
        CORE[command](sub, add)
    elif command in AREAS:
        _area(AREAS[command]).register(sub, common)
    else:
        for name in CORE_ORDER:
            CORE[name](sub, add)
        for area in dict.fromkeys(AREAS.values()):
            _area(area).register(sub, common)
        CORE["lab"](sub, add)
    return p


def _formatter(prog):
    """argparse's help formatter, told the width: left to itself it imports shutil (and with it
    the bz2 and lzma libraries) for every parser just to measure the terminal."""
    import argparse
    columns = os.environ.get("COLUMNS", "")
    try:
        width = int(columns) if columns.isdigit() else os.get_terminal_size(sys.__stdout__.fileno()).columns
    except (OSError, AttributeError, ValueError):
        width = 80
    return argparse.HelpFormatter(prog, width=max(width, 40) - 2)


def _area(name):
    import importlib
    return importlib.import_module("vpn_director.%s.cli" % name)


def _scoped(sub, name, help, scopes=SCOPES, dry_run=True):
    c = sub.add_parser(name, help=help)
    c.add_argument("scope", nargs="?", choices=scopes, default="all")
    if dry_run:
        c.add_argument("--dry-run", action="store_true", help="print the changes and batches, touch nothing")
    return c


def _p_apply(sub, add):
    a = _scoped(sub, "apply", "make the kernel match the config (changes only what differs)")
    a.add_argument("--if-changed", action="store_true",
                   help="drift watchdog (hooks, cron): re-apply only if something owned is missing or "
                        "different, only for what an explicit apply started, spaced by advanced.watchdog")


def _p_stop(sub, add):
    _scoped(sub, "stop", "remove everything vpn-director owns (jumps first)")


def _p_restart(sub, add):
    _scoped(sub, "restart", "stop, then apply", dry_run=False)


def _p_status(sub, add):
    st = _scoped(sub, "status", "compare the live kernel state with the config (exit 3 on difference)",
                 SCOPES + ("ipset",), dry_run=False)
    st.add_argument("--json", action="store_true", help="one JSON object")


def _p_render(sub, add):
    rd = sub.add_parser("render", help="print the ipset / iptables-restore / ip batches; no kernel access")
    rd.add_argument("--out", metavar="DIR", type=_path,
                    help="write ipset.restore, iptables.mangle, ip.batch and ip6tables.filter into DIR")


def _p_update(sub, add):
    up = sub.add_parser("update", help="refresh the country lists from ipsets.sources, then apply")
    up.add_argument("--force", action="store_true", help="accept a list with half or fewer of the cached entries")


def _p_check(sub, add):
    ck = sub.add_parser("check", help="validate and lint the config and its data; no kernel access")
    ck.add_argument("--live", action="store_true",
                    help="also look for collisions with the firmware and other tools in the live state")


def _p_trace(sub, add):
    tr = sub.add_parser("trace", help="where does a packet from SRC to DST go, and why (offline unless --live)")
    tr.add_argument("src", help="source IPv4 address (a LAN client)")
    tr.add_argument("dst", help="destination IPv4 address")
    tr.add_argument("--proto", choices=("tcp", "udp", "icmp"), default="tcp",
                    help="tcp (default), udp, or icmp (stands for every protocol TPROXY cannot take)")
    tr.add_argument("--dport", type=_port, metavar="N", help="destination port (shown; no rule matches on it)")
    tr.add_argument("--live", action="store_true",
                    help="evaluate the kernel's current state instead, with its own routing verdict")
    tr.add_argument("--json", action="store_true", help="one JSON object")


def _p_install(sub, add, name="install"):
    what = {"install": "put vpn-director on this router: program, init script or systemd units, firmware "
                       "hooks, example config (never overwritten)",
            "uninstall": "remove what install added (the config stays)"}[name]
    i = sub.add_parser(name, help=what)
    i.add_argument("--target", choices=("merlin", "systemd"), default="merlin",
                   help="Asuswrt-Merlin with Entware (default) or a systemd gateway")
    i.add_argument("--root", metavar="DIR", default="/",
                   help="write into this directory tree instead of / (tests, packaging)")


def _p_lab(sub, add):
    import argparse
    lab = add("lab", formatter_class=_formatter, help="throw-away virtual router in network namespaces: apply a config, send real "
                          "TCP/UDP from every client, show expected vs observed paths (needs root)")
    lab.add_argument("action", nargs="?", choices=("run", "down"), default="run",
                     help="run (default) or down: remove a lab left by --keep")
    lab.add_argument("--config", dest="lab_config", metavar="FILE",
                     help="run this config in the lab instead of the built-in one (paths are replaced)")
    lab.add_argument("--keep", action="store_true", help="leave the lab up for exploring")
    lab.add_argument("--backend", choices=("legacy", "nft"), help="iptables backend (default: auto)")
    lab.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS)


CORE = {"apply": _p_apply, "stop": _p_stop, "restart": _p_restart, "status": _p_status, "render": _p_render,
        "update": _p_update, "check": _p_check, "trace": _p_trace, "install": _p_install,
        "uninstall": lambda sub, add: _p_install(sub, add, "uninstall"), "lab": _p_lab}
CORE_ORDER = ("apply", "stop", "restart", "status", "render", "update", "check", "trace", "install", "uninstall")


def watchdog_args(argv):
    """The watchdog's own command lines — `[-c FILE] [-q|-v] apply [SCOPE] --if-changed`, the
    words in any order argparse takes them — parsed without argparse: importing it and building
    even one command's parser costs about 3 ms, a tenth of the no-op check the hooks and cron run
    every minute. Anything else (a combined `-qv`, a typo, `--help`) is None: argparse parses it."""
    args = {"command": None, "scope": None, "config": None, "quiet": False, "verbose": False,
            "if_changed": False, "dry_run": False}
    words = iter(argv)
    for word in words:
        if word in ("-c", "--config") or word.startswith("--config="):
            value = word[len("--config="):] if "=" in word else next(words, "")
            if not value or value.startswith("-") or args["config"] is not None:
                return None
            args["config"] = value
        elif word in ("-q", "--quiet", "-v", "--verbose"):
            args["quiet" if word in ("-q", "--quiet") else "verbose"] = True
        elif word == "--if-changed":
            args["if_changed"] = True
        elif word == "apply" and args["command"] is None:
            args["command"] = word
        elif word in SCOPES and args["command"] and args["scope"] is None:
            args["scope"] = word
        else:
            return None
    if args["command"] != "apply" or not args["if_changed"]:
        return None
    args["scope"] = args["scope"] or "all"
    return types.SimpleNamespace(**args)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = watchdog_args(argv)
    if args is None:
        try:
            args = build_parser(command_of(argv)).parse_args(argv)
        except SystemExit as e:
            return EXIT_USAGE if e.code not in (0, None) else EXIT_OK
    out = Output(args.quiet, args.verbose)
    try:
        code = _run(args, out)
        sys.stdout.flush()  # a reader that went away shows here, not in the interpreter's last flush
        return code
    except BrokenPipeError as e:
        if not _stdout_gone():
            return _internal_error(out, e)
        # `vpn-director trace ... | head`: nobody reads the rest, so nothing more to say; stdout
        # now points at /dev/null so that the final flush at exit has nowhere to fail
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except ConfigError as e:
        for line in e.lines():
            out.err(line)
        return e.exit_code
    except VpdError as e:
        out.err("error: %s" % e)
        return e.exit_code
    except KeyboardInterrupt:
        out.err("interrupted")
        return EXIT_FAILED
    except Exception as e:  # the CLI edge: one line, never a bare traceback
        return _internal_error(out, e)
    finally:
        _write_stats()


def _internal_error(out, e):
    if os.environ.get("VPD_DEBUG"):
        raise e
    out.err("internal error: %s: %s (set VPD_DEBUG=1 for a traceback)" % (type(e).__name__, e))
    return EXIT_FAILED


def _stdout_gone():
    """True if stdout is a pipe whose reader has gone (poll reports an error on its write end)."""
    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poll.poll(0))
    except (OSError, ValueError):
        return False


def _run(args, out):
    if args.command == "lab":
        return cmd_lab(args, out)
    if args.command in UNATTENDED:
        log.setup(args.verbose)
    if args.command in ("install", "uninstall"):
        return cmd_install(args, out)
    if getattr(args, "ops", None):  # the editing commands load the config under the run lock
        return args.ops(args, out)
    cfg = config.load(args.config)
    if args.command in UNATTENDED:
        problem = log.configure(cfg.log_syslog, cfg.log_file, cfg.log_max_bytes)
        if problem:
            out.warn(problem)
    for w in cfg.warnings:
        out.warn(w)
    if args.command in NEEDS_ROOT or getattr(args, "live", False):
        _need_root(args.command)
    return COMMANDS[args.command](args, cfg, out)


class Output:
    def __init__(self, quiet, verbose):
        self.quiet, self.verbose = quiet, verbose

    def info(self, msg):
        if not self.quiet:
            print(msg)

    def note(self, msg):
        """info that also goes to the log (syslog, file): what unattended runs did."""
        self.info(msg)
        log.info(msg)

    def detail(self, msg):
        if self.verbose and not self.quiet:
            print(msg)

    def warn(self, msg):
        log.warning(msg)
        if not self.quiet:
            print("warning: %s" % msg, file=sys.stderr)

    def err(self, msg):
        log.error(msg.strip())
        print("vpn-director: %s" % msg if not msg.startswith(" ") else msg, file=sys.stderr)


_TOOLS = []  # every Tools of this run, for VPD_STATS


def _tools(cfg):
    tools = Tools(cfg.iptables, cache_dir=cfg.state_dir)
    _TOOLS.append(tools)
    return tools


def _write_stats():
    """VPD_STATS=FILE: how many kernel-tool processes this run spawned (the benchmark reads it)."""
    path = os.environ.get("VPD_STATS")
    if path:
        with open(path, "w") as fh:
            json.dump({"calls": sum(t.calls for t in _TOOLS), "writes": sum(len(t.log) for t in _TOOLS),
                       "steps": [argv[0] for t in _TOOLS for argv, _ in t.log],
                       "reads": [argv for t in _TOOLS for argv in t.reads],
                       "first_call": min((t.first_call for t in _TOOLS if t.first_call), default=None)}, fh)


def cmd_apply(args, cfg, out):
    tools = _tools(cfg)
    if getattr(args, "if_changed", False) and not args.dry_run:
        return _watch(args, cfg, tools, out)
    p = engine.apply(cfg, tools, args.scope, dry_run=args.dry_run, log=out.note, warn=out.warn, say=out.note)
    if args.dry_run:
        return _print_plan(out, p)
    _summary(out, "apply %s" % args.scope, p)
    warning = engine.bridge_warning() if cfg.xray.clients else None
    if warning:
        out.warn(warning)
    return EXIT_OK


def _print_plan(out, p):
    """--dry-run: each step, its changes, and the exact batch it would feed to the tool."""
    if not p.steps:
        out.info("no changes: the live state already matches the config")
    for step in p.steps:
        out.info("== %s (%s)" % (step.name, step.tool))
        for c in step.changes:
            out.info("  # %s" % c)
        out.info(step.batch.rstrip("\n"))
    return EXIT_OK


def _watch(args, cfg, tools, out):
    p, why = engine.watch(cfg, tools, args.scope, log=out.note, warn=out.warn)
    if p is None or not p.steps:
        # the usual outcome every minute: kept out of syslog unless -v
        msg = why or "live state matches the config (checked in %.2fs)" % p.elapsed
        out.detail("apply %s --if-changed: %s" % (args.scope, msg))
        log.debug("apply %s --if-changed: %s" % (args.scope, msg))
        return EXIT_OK
    _summary(out, "apply %s --if-changed: drift repaired" % args.scope, p)
    return EXIT_OK


def _summary(out, what, p):
    """One line for the terminal and the log: what changed, by step, and how long it took."""
    changes = p.changes
    line = "%s: %s in %.2fs" % (what, "%d change(s)" % len(changes) if changes else "no changes", p.elapsed)
    steps = ["%s: %d" % (s.name, len(s.changes)) for s in p.steps if s.changes]
    if steps:
        line += " (%s)" % "; ".join(steps)
    out.note(line)
    for c in changes:
        out.detail("  " + c)
        log.debug(c)


def cmd_stop(args, cfg, out):
    p = engine.stop(cfg, _tools(cfg), args.scope, dry_run=getattr(args, "dry_run", False), warn=out.warn,
                    say=out.note)
    if getattr(args, "dry_run", False):
        return _print_plan(out, p)
    _summary(out, "stop %s" % args.scope, p)
    return EXIT_OK


def cmd_restart(args, cfg, out):
    cmd_stop(args, cfg, out)
    args.dry_run = False
    return cmd_apply(args, cfg, out)


def cmd_update(args, cfg, out):
    """Refresh the country lists, then apply. A set whose sources all fail keeps its cached list
    (so its live set stays as it is); the others are refreshed and applied; the exit code is 1."""
    from . import countries, listcache
    done, failed = countries.refresh(cfg, force=args.force)
    for r in done:
        out.note(r.summary())  # what the daily cron run fetched belongs in the log
    for _, message in failed:
        out.err("error: %s" % message)
    uncached = listcache.missing_cache(cfg, [cc for cc, _ in failed])
    if uncached:
        out.err("error: update: no cached list for %s: nothing applied" % ", ".join(uncached))
        return EXIT_FAILED
    args.scope, args.dry_run = "all", False
    code = cmd_apply(args, cfg, out)
    return EXIT_FAILED if failed else code


def cmd_status(args, cfg, out):
    from . import reports, status
    shown = _names(cfg)
    rep = reports.status_report(cfg, _tools(cfg), args.scope, warn=out.warn, names=shown if args.json else None)
    if args.json:
        print(json.dumps(rep, indent=1, ensure_ascii=False))
    else:
        out.info(shown.annotate_rules(status.format_text(rep)))
        if rep.get("xray"):
            out.info(rep["xray"])
            out.info(rep["xray_health"])
        for warning in rep.get("warnings", ()):
            out.warn(warning)
    return EXIT_OK if rep["ok"] else EXIT_DRIFT


def cmd_render(args, cfg, out):
    from . import reports
    full, _ = engine.build(cfg, reports.recorded(cfg), warn=out.warn)
    batches = engine.render_batches(full)
    if args.out:
        if os.path.exists(args.out) and not os.path.isdir(args.out):
            raise UsageError("render --out %s: exists and is not a directory" % args.out)
        try:
            paths = engine.write_out(args.out, batches)
        except OSError as e:
            raise VpdError("render --out %s: cannot write there: %s" % (args.out, e.strerror or e))
        for path in paths:
            out.info("wrote %s" % path)
        return EXIT_OK
    for tool, title in (("ipset", "ipset restore"), ("ip", "ip -batch"),
                        ("iptables", "iptables-restore --noflush"), ("iptables-nat", "iptables-restore --noflush (nat)"),
                        ("iptables-filter", "iptables-restore --noflush (filter)"),
                        ("ip6tables", "ip6tables-restore --noflush")):
        if tool in engine.EXTRA_FILES and not batches.get(tool):
            continue  # the DNS tables only when the config uses them
        print("### %s" % title)
        sys.stdout.write(batches[tool] or engine._empty(tool))
    return EXIT_OK


def cmd_check(args, cfg, out):
    from . import lint, reports
    from .dns import report as dnsreport
    record = reports.recorded(cfg)
    full, _ = engine.build(cfg, record, dns=False)  # check never needs DNS: no server address is linted
    xc, tuns = config.effective(cfg)
    findings = lint.lint(cfg) + dnsreport.findings(cfg, full.tunnel_dns)
    if args.live:
        tools = _tools(cfg)
        findings += lint.lint_live(cfg, engine.read(tools, cfg, record, full=full), full, record)
        findings += lint.other_backend(engine.other_backend_chains(tools, record, full.ownership),
                                       tools.probe()[0])
    shown = _names(cfg)
    for level, msg in ((level, shown.annotate(msg)) for level, msg in findings):
        if level == lint.ERROR:
            out.err("error: %s" % msg)
        else:
            out.warn(msg)
    if any(level == lint.ERROR for level, _ in findings):
        return EXIT_USAGE
    out.info("config OK: %s; %d Xray client(s); %d tunnel(s), %d with clients; %d set(s) (%d external)" % (
        cfg.path, len(xc), len(tuns), sum(1 for _, c in tuns if c), len(full.sets) + len(full.external_sets),
        len(full.external_sets)))
    return EXIT_OK


def _names(cfg):
    """Device names to print beside client addresses (the config's `names`, then the DHCP leases)."""
    from .ops import names  # only the commands that print client addresses
    return names.load(cfg)


def cmd_install(args, out):
    from . import install  # install/uninstall only
    inst = install.Installer(args.target, args.root, say=out.note)
    if args.command == "install":
        inst.install()
    else:
        inst.uninstall()
    return EXIT_OK


def cmd_lab(args, out):
    from . import lab  # only the lab needs it
    if os.geteuid() != 0:
        out.err("error: the lab needs root (network namespaces)")
        return EXIT_FAILED
    if args.action == "down":
        lab.Lab().down()
        out.info("lab removed")
        return EXIT_OK
    # The owner's config is validated with the lab's paths before anything is built.
    raw = config.read_raw(args.lab_config) if args.lab_config else lab.DEFAULT_CONFIG
    try:
        ok = lab.run(raw, keep=args.keep, backend=args.backend, out=out.info)
    except lab.LabError as e:
        out.err("error: lab: %s" % e)
        return EXIT_FAILED
    return EXIT_OK if ok else EXIT_FAILED


def cmd_trace(args, cfg, out):
    from . import reports
    try:
        reports.check_trace_args(args.src, args.dst, args.proto, args.dport)
    except UsageError as e:
        out.err("error: %s" % e)
        return EXIT_USAGE
    result = reports.trace_report(cfg, args.src, args.dst, args.proto, args.dport,
                                  tools=_tools(cfg) if args.live else None, warn=out.warn)
    src_name = _names(cfg).get(args.src)
    if args.json:
        print(json.dumps(dict(result, src_name=src_name), indent=1, ensure_ascii=False))
        return EXIT_OK
    port = ":%d" % args.dport if args.dport else ""
    src = "%s (%s)" % (args.src, src_name) if src_name else args.src
    out.info("%s → %s%s %s (%s)" % (src, args.dst, port, args.proto,
                                    "live kernel state" if args.live else "desired state"))
    for i, step in enumerate(result["steps"], start=1):
        out.info("  %d. %s" % (i, step))
    out.info("route: %s  table: %s  mark: %s" % (result["route"], result["table"], result["mark"]))
    if args.live:
        out.info("kernel: %s" % result["kernel"])
        out.info("desired state: %s" % (result["differs"] or "agrees"))
    return EXIT_OK


COMMANDS = {"trace": cmd_trace, "apply": cmd_apply, "stop": cmd_stop, "restart": cmd_restart, "status": cmd_status,
            "render": cmd_render, "check": cmd_check, "update": cmd_update}
