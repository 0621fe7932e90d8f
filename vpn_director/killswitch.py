"""The kill switch: a guard ip rule per tunnel, and how each tunnel's clients fare right now.

A marked packet whose tunnel table has no route (the link is down, the firmware flushed the
table on a restart, the interface is gone) falls through to the main table and leaves by the
WAN. A guard rule with the tunnel's fwmark, after every lookup rule and before main, stops it
there: `pref GUARD fwmark M/K unreachable`. It does not depend on the table's contents, so it
survives the firmware's flushes (a route kept inside wgcN/ovpncN would not), and it sits outside
the firmware's rule band, so the firmware's rule clean-ups leave it alone.
"""

import ipaddress

from . import config as cfgmod
from .errors import VpdError
from .model import TUNNEL, RuleSpec

# Where `status` asks the kernel to route a tunnel's mark: a documentation address (RFC 5737),
# so only a default route answers for it, never a route to somewhere specific.
PROBE = "198.51.100.1"
UP, BLOCKED, LEAKING, UNKNOWN = "UP", "DOWN → BLOCKED", "DOWN → LEAKING", "UNKNOWN"


def guard(cfg, tun):
    """The guard rule for a tunnel, or None (table main, or the kill switch off for it)."""
    if not cfgmod.guarded(cfg, tun):
        return None
    return RuleSpec(cfg.guard_pref_base + tun.slot - 1, cfg.td_mark(tun.slot), cfg.td_mark_mask, 0, TUNNEL,
                    action=cfg.kill_action)


def lan_subnets(lan, path="/proc/net/route"):
    """The IPv4 subnets connected to the LAN interface (main-table routes without a gateway).

    Guarded clients' traffic to them is not marked: it stays on the router's LAN while the
    tunnel is down. Read from /proc: no process, and it is the router's namespace's view.
    """
    try:
        with open(path) as fh:
            lines = fh.read().splitlines()[1:]
    except OSError:
        return []
    out = []
    for line in lines:
        f = line.split()
        if len(f) < 8 or f[0] != lan:
            continue
        try:
            dst, gw, flags, mask = (int(f[i], 16) for i in (1, 2, 3, 7))
        except ValueError:
            continue
        if gw or flags & 0x2 or not mask:  # RTF_GATEWAY, or the default route
            continue
        addr = ipaddress.IPv4Address(int.from_bytes(dst.to_bytes(4, "little"), "big"))  # stored little-endian
        plen = bin(mask).count("1")
        net = ipaddress.IPv4Network("%s/%d" % (addr, plen), strict=False)
        if net not in out:
            out.append(net)
    return out


def refusal(error):
    """The kernel's reason when an `ip route get` was refused by an ip rule (a guard), else None."""
    text = str(error)
    return text.split("RTNETLINK answers: ")[-1] if "RTNETLINK answers: " in text else None


def tunnel_states(tools, cfg, full, current):
    """Per tunnel with clients and a table of its own: UP, DOWN → BLOCKED or DOWN → LEAKING.

    From the kernel's own verdict for the tunnel's mark (`ip route get PROBE mark M`): answered
    from the tunnel's table is UP; refused is BLOCKED; answered from any other table is LEAKING.
    The guard's presence is reported beside it: BLOCKED by something else is still BLOCKED.
    """
    live_rules = set(current.rules)
    out = []
    _, tunnels = cfgmod.effective(cfg)
    for tun, clients in tunnels:
        if not clients or tun.table == cfgmod.MAIN_TABLE:
            continue
        g = guard(cfg, tun)
        mark = cfg.td_mark(tun.slot)
        entry = {"tunnel": tun.name, "table": tun.table, "mark": "%#x" % mark,
                 "guard": bool(g and (g.pref, g.text) in live_rules), "kill_switch": bool(g)}
        argv = ["ip", "-N", "route", "get", PROBE, "mark", "%#x" % mark]
        try:
            answer = " ".join(tools.run("tunnel state", argv).split())
        except VpdError as e:
            why = refusal(e)  # refused by a rule; anything else is no answer
            entry.update(state=BLOCKED if why else UNKNOWN, kernel=why or str(e))
        else:
            words = answer.split()
            table = words[words.index("table") + 1] if "table" in words[:-1] else str(cfgmod.MAIN_TABLE)
            entry.update(state=UP if table == str(tun.table) else LEAKING, kernel=answer)
        out.append(entry)
    return out


def format_states(states):
    lines = []
    for s in states:
        guard_note = "guard %s" % ("present" if s["guard"] else "MISSING") if s["kill_switch"] else "kill switch off"
        lines.append("%-16s tunnel %s (table %s, mark %s, %s)  kernel: %s"
                     % (s["state"], s["tunnel"], s["table"], s["mark"], guard_note, s["kernel"]))
    return lines
