"""Command line: parse arguments, run one operation, turn every error into one line and an exit code."""

import argparse
import json
import os
import select
import sys

from . import __version__, config, engine, lint, log, reports, status
from .dns import report as dnsreport
from .errors import EXIT_DRIFT, EXIT_FAILED, EXIT_OK, EXIT_USAGE, ConfigError, UsageError, VpdError
from .ops import cli as ops_cli
from .xray import cli as xray_cli
from .web import cli as web_cli
from .tools import Tools

SCOPES = ("all", "tunnel", "xray")
UNATTENDED = ("apply", "stop", "restart", "update", "install", "uninstall")  # logged to syslog
NEEDS_ROOT = ("apply", "stop", "restart", "update", "status")  # they read or change the kernel's tables


def _need_root(command):
    if os.geteuid() != 0:
        raise VpdError("%s needs root: it reads and changes the kernel's firewall and routing tables" % command)


def _path(text):
    """argparse type: a non-empty path (an empty -c would quietly fall back to the default config)."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path")
    return text


def _port(text):
    """argparse type: a TCP/UDP port number."""
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 65535):
        raise argparse.ArgumentTypeError("%r is not a port (1..65535)" % text)
    return int(text)


def build_parser():
    p = argparse.ArgumentParser(
        prog="vpn-director",
        description="Selective routing for Linux routers: Xray TPROXY and VPN tunnels from one JSON file.",
        epilog="Exit codes: 0 ok, 1 operation failed (previous state kept), 2 bad usage or invalid "
               "config (nothing touched), 3 status found differences.")
    common = argparse.ArgumentParser(add_help=False)
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
        return add(name, parents=[common], **kw)
    sub.add_parser = sub_add

    a = sub.add_parser("apply", help="make the kernel match the config (changes only what differs)")
    a.add_argument("scope", nargs="?", choices=SCOPES, default="all")
    a.add_argument("--dry-run", action="store_true", help="print the changes and batches, touch nothing")
    a.add_argument("--if-changed", action="store_true",
                   help="drift watchdog (hooks, cron): re-apply only if something owned is missing or "
                        "different, only for what an explicit apply started, spaced by advanced.watchdog")
    s = sub.add_parser("stop", help="remove everything vpn-director owns (jumps first)")
    s.add_argument("scope", nargs="?", choices=SCOPES, default="all")
    s.add_argument("--dry-run", action="store_true", help="print the changes and batches, touch nothing")
    r = sub.add_parser("restart", help="stop, then apply")
    r.add_argument("scope", nargs="?", choices=SCOPES, default="all")
    st = sub.add_parser("status", help="compare the live kernel state with the config (exit 3 on difference)")
    st.add_argument("scope", nargs="?", choices=SCOPES + ("ipset",), default="all")
    st.add_argument("--json", action="store_true", help="one JSON object")
    rd = sub.add_parser("render", help="print the ipset / iptables-restore / ip batches; no kernel access")
    rd.add_argument("--out", metavar="DIR", type=_path,
                    help="write ipset.restore, iptables.mangle, ip.batch and ip6tables.filter into DIR")
    up = sub.add_parser("update", help="refresh the country lists from ipsets.sources, then apply")
    up.add_argument("--force", action="store_true", help="accept a list with half or fewer of the cached entries")
    ck = sub.add_parser("check", help="validate and lint the config and its data; no kernel access")
    ck.add_argument("--live", action="store_true",
                    help="also look for collisions with the firmware and other tools in the live state")
    tr = sub.add_parser("trace", help="where does a packet from SRC to DST go, and why (offline unless --live)")
    tr.add_argument("src", help="source IPv4 address (a LAN client)")
    tr.add_argument("dst", help="destination IPv4 address")
    tr.add_argument("--proto", choices=("tcp", "udp", "icmp"), default="tcp",
                    help="tcp (default), udp, or icmp (stands for every protocol TPROXY cannot take)")
    tr.add_argument("--dport", type=_port, metavar="N", help="destination port (shown; no rule matches on it)")
    tr.add_argument("--live", action="store_true",
                    help="evaluate the kernel's current state instead, with its own routing verdict")
    tr.add_argument("--json", action="store_true", help="one JSON object")
    for name, what in (("install", "put vpn-director on this router: program, init script or systemd "
                                   "units, firmware hooks, example config (never overwritten)"),
                       ("uninstall", "remove what install added (the config stays)")):
        i = sub.add_parser(name, help=what)
        i.add_argument("--target", choices=("merlin", "systemd"), default="merlin",
                       help="Asuswrt-Merlin with Entware (default) or a systemd gateway")
        i.add_argument("--root", metavar="DIR", default="/",
                       help="write into this directory tree instead of / (tests, packaging)")
    ops_cli.register(sub, common)  # client, exclude, tunnel, config
    xray_cli.register(sub, common)  # xray import/sub/servers/use/render/status/restart
    web_cli.register(sub, common)  # web: the web UI
    lab = add("lab", help="throw-away virtual router in network namespaces: apply a config, send real "
                          "TCP/UDP from every client, show expected vs observed paths (needs root)")
    lab.add_argument("action", nargs="?", choices=("run", "down"), default="run",
                     help="run (default) or down: remove a lab left by --keep")
    lab.add_argument("--config", dest="lab_config", metavar="FILE",
                     help="run this config in the lab instead of the built-in one (paths are replaced)")
    lab.add_argument("--keep", action="store_true", help="leave the lab up for exploring")
    lab.add_argument("--backend", choices=("legacy", "nft"), help="iptables backend (default: auto)")
    lab.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS)
    return p


def main(argv=None):
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
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
                       "steps": [argv[0] for t in _TOOLS for argv, _ in t.log]}, fh)


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
    from . import countries
    done, failed = countries.refresh(cfg, force=args.force)
    for r in done:
        out.note(r.summary())  # what the daily cron run fetched belongs in the log
    for _, message in failed:
        out.err("error: %s" % message)
    uncached = countries.missing_cache(cfg, [cc for cc, _ in failed])
    if uncached:
        out.err("error: update: no cached list for %s: nothing applied" % ", ".join(uncached))
        return EXIT_FAILED
    args.scope, args.dry_run = "all", False
    code = cmd_apply(args, cfg, out)
    return EXIT_FAILED if failed else code


def cmd_status(args, cfg, out):
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
