"""The read-only reports every front end shows (command line, web UI, bot): status and trace as
plain dicts, built from the same desired state and the same kernel reads."""

import ipaddress

from . import config, engine, killswitch, state, status
from .dns import report as dnsreport
from .errors import UsageError, VpdError


def recorded(cfg):
    """The record for reports that only read it (render, check, trace): none if unreadable."""
    try:
        return state.load_record(cfg.state_dir)
    except VpdError:
        return {}


def status_report(cfg, tools, scope="all", warn=None, names=None):
    """What `status --json` prints: every owned object compared with the kernel, tunnels up/down,
    DNS paths, the Xray version and health (when Xray is on); `names` adds device names to rules."""
    record = state.load_record(cfg.state_dir)
    full, _ = engine.build(cfg, record, warn=warn)
    current = engine.read(tools, cfg, record, counters=True, full=full)
    rep = status.report(full, current, scope, record, data_dir=cfg.data_dir)
    if scope in ("all", "tunnel"):
        rep["tunnels"] = killswitch.tunnel_states(tools, cfg, full, current)
    if scope != "ipset":
        rep["dns"] = dnsreport.paths(cfg, full.tunnel_dns, scope)
    warning = engine.bridge_warning() if cfg.xray.clients else None
    if warning:
        rep["warnings"] = [warning]
    if scope in ("all", "xray") and config.xray_enabled(cfg):
        from .xray import status as xray_status  # runs `xray version`
        rep["xray"] = xray_status.version_line(cfg)
        rep["xray_health"] = xray_status.health_line(cfg)
    if names is not None:
        for r in (r for o in rep["objects"] for r in o.get("rules", [])):
            name = names.of_rule(r["rule"])
            if name:
                r["name"] = name
    return rep


def check_trace_args(src, dst, proto="tcp", dport=None):
    """UsageError for a packet trace cannot follow (the front ends share the wording)."""
    for what, value in (("SRC", src), ("DST", dst)):
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            raise UsageError("%s %r is not an IPv4 address" % (what, value))
    if proto not in ("tcp", "udp", "icmp"):
        raise UsageError("protocol %r: tcp, udp or icmp" % proto)
    if dport is not None and proto == "icmp":
        raise UsageError("--dport needs --proto tcp or udp")
    if dport is not None and not (isinstance(dport, int) and 1 <= dport <= 65535):
        raise UsageError("port %r is not a port (1..65535)" % dport)


def trace_report(cfg, src, dst, proto="tcp", dport=None, tools=None, warn=None):
    """What `trace --json` prints: the verdict of the desired state, or with `tools` (live, root)
    the kernel's current state, its differences from the desired one and `ip route get`."""
    from . import lint, live, trace  # only traces need the packet walker
    from .dns import pipeline as dnspipeline
    check_trace_args(src, dst, proto, dport)
    full, _ = engine.build(cfg, recorded(cfg), warn=warn)
    local = [lint.interface_address(cfg.lan_interface)]  # DNS to the router: its LAN address
    want = trace.trace(trace.from_desired(full, cfg, local), src, dst, proto, dport, cfg.lan_interface)
    if tools is None:
        return want.as_dict()
    tunnel_tables = [t.table for t in cfg.tunnels if t.table not in (config.MAIN_TABLE, cfg.xray.route_table)]
    current = live.read(tools, cfg.xray.route_table, extra_tables=tunnel_tables)  # empty table: down
    current.dns = dnspipeline.read(tools, full, recorded(cfg))
    seen = trace.trace(trace.from_live(current, cfg, local), src, dst, proto, dport, cfg.lan_interface)
    result = seen.as_dict()
    result["desired"] = want.as_dict()
    result["differs"] = trace.difference(want, seen)
    result["kernel"] = _kernel_route(tools, cfg, src, dst, seen.mark)
    return result


def _kernel_route(tools, cfg, src, dst, mark):
    """The kernel's own answer (`ip route get`); every argument is a validated address or name."""
    argv = ["ip", "-N", "route", "get", dst, "from", src, "iif", cfg.lan_interface, "mark", "%#x" % mark]
    try:
        return " ".join(tools.run("kernel route", argv).split())
    except VpdError as e:
        why = killswitch.refusal(e)  # an ip rule refused it (a kill-switch guard)
        return "refused: %s" % why if why else "unavailable (%s)" % e
