"""The desired DNS objects in the nat and filter tables, from the config and each tunnel's resolver.

nat, chain VPD_DNS_TUN (component tunnel), jumped at the top of nat PREROUTING for DNS to the
router itself (`-i LAN -p udp|tcp --dport 53 -m addrtype --dst-type LOCAL`):
    -m mark --mark XRAY/XRAYMASK -j RETURN          TPROXY'd to Xray: never ours to rewrite
    -s PAUSED -j RETURN                             a paused address inside a tunnel's CIDR
    -s CLIENT -m mark ! --mark 0x0/MASK -j DNAT --to-destination RESOLVER
    -s CLIENT -j RETURN                             a client whose tunnel has no resolver
The client entries follow TUN_DIR's first-match order (up to the last DNAT: nothing after it
can change a verdict). The DNAT keeps the packet's tunnel mark, so the query goes through the
tunnel, and the kill switch's guard refuses it while the tunnel is down. It fires only for a
packet TUN_DIR marked: a client that is no longer routed (or a TUN_DIR flushed behind our back)
keeps the router's resolver instead of a DNAT'd query that would leave by the WAN. For the same
reason TUN_DIR's kill-switch LAN returns skip the router's own addresses while a DNAT is set
(desired.py), so DNS to the router is marked.

filter, with advanced.dns.block_dot, chains VPD_DOT_XRAY and VPD_DOT_TUN jumped at the top of
FORWARD (tunnel clients' DNS over TLS) and INPUT (Xray clients' TPROXY'd DoT, delivered to the
router) for `-i LAN -p tcp --dport 853`: a TCP reset per routed client, so the device falls
back at once to plain DNS, which follows its route.
"""


from .. import config as cfgmod
from ..model import TUNNEL, XRAY, ChainSpec, JumpSpec, TableDesired
from . import DNS_PORT, DOT_CHAINS, DOT_PORT, NAT_CHAINS
from ..patterns import compiled

REJECT = "-p tcp -j REJECT --reject-with tcp-reset"
NAT_RULE_RE = compiled(r"^ (?:-s \S+ )?(?:-m mark (?:! )?--mark 0x[0-9a-f]+/0x[0-9a-f]+ )?"
                         r"-j (?:RETURN|DNAT --to-destination [0-9.]+)$")
DOT_RULE_RE = compiled(r"^ (?:-s \S+ )?(?:-p tcp (?:-m set --match-set \S+ src )?-j REJECT --reject-with tcp-reset"
                         r"|-j RETURN)$")


def nat_empty():
    return TableDesired("nat", ("PREROUTING",), dict(NAT_CHAINS), NAT_RULE_RE, jumps={"PREROUTING": []})


def filter_empty():
    return TableDesired("filter", ("INPUT", "FORWARD"), dict(DOT_CHAINS), DOT_RULE_RE,
                        jumps={"INPUT": [], "FORWARD": []})


def build(cfg, tunnel_dns):
    """The desired DNS tables: (nat, filter)."""
    return nat(cfg, tunnel_dns), dot(cfg)


def empty():
    return nat_empty(), filter_empty()


def targets(cfg, tunnel_dns):
    """{tunnel name: resolver address} for the tunnels whose clients' DNS is DNAT'd."""
    tunnel_dns = tunnel_dns or {}
    out = {}
    for t in cfg.tunnels:
        d = tunnel_dns.get(t.name)
        if t.table != cfgmod.MAIN_TABLE and d is not None and d.target:
            if cfgmod.resolver_address(d.target) != d.target:  # only a validated address reaches iptables
                raise ValueError("not a resolver address: %r" % (d.target,))
            out[t.name] = d.target
    return out


def dnat_active(cfg, tunnel_dns):
    """Is any routed client's DNS DNAT'd? (TUN_DIR then marks DNS to the router.)"""
    hits = targets(cfg, tunnel_dns)
    return any(clients and t.name in hits for t, clients in cfgmod.effective(cfg)[1])


def _lan(cfg):
    if not cfgmod.IFNAME_RE.match(cfg.lan_interface):
        raise ValueError("not an interface name: %r" % (cfg.lan_interface,))
    return cfg.lan_interface


def nat(cfg, tunnel_dns):
    """TableDesired for nat: empty unless some tunnel client has a resolver."""
    td = nat_empty()
    _, tunnels = cfgmod.effective(cfg)
    hits = targets(cfg, tunnel_dns)
    entries = [(t, n) for t, clients in tunnels for n in clients]
    dnat = [i for i, (t, _) in enumerate(entries) if t.name in hits]
    if not dnat:
        return td
    x = cfg.xray
    marked = "-m mark ! --mark 0x0/%#x" % cfg.td_mark_mask
    rules = ["-m mark --mark %#x/%#x -j RETURN" % (x.fwmark, x.fwmark_mask)]
    rules += ["-s %s -j RETURN" % p for p in cfgmod.paused_inside(cfg, [n for _, n in entries])]
    for t, net in entries[:dnat[-1] + 1]:
        if t.name in hits:
            rules.append("-s %s %s -j DNAT --to-destination %s" % (net, marked, hits[t.name]))
        else:
            rules.append("-s %s -j RETURN" % net)
    name = NAT_CHAINS[TUNNEL]
    td.chains.append(ChainSpec(name, tuple(rules), TUNNEL))
    lan = _lan(cfg)
    td.jumps["PREROUTING"] = [
        JumpSpec(name, "-i %s -p %s -m %s --dport %d -m addrtype --dst-type LOCAL -j %s"
                 % (lan, proto, proto, DNS_PORT, name), True, TUNNEL) for proto in ("udp", "tcp")]
    return td


def dot(cfg):
    """TableDesired for filter: empty unless advanced.dns.block_dot and some client is routed."""
    td = filter_empty()
    if not cfg.block_dot:
        return td
    xclients, tunnels = cfgmod.effective(cfg)
    lan = _lan(cfg)
    if xclients:
        name = DOT_CHAINS[XRAY]
        rule = "-p tcp -m set --match-set %s src -j REJECT --reject-with tcp-reset" % cfg.xray.clients_ipset
        td.chains.append(ChainSpec(name, (rule,), XRAY))
    entries = [(t, n) for t, clients in tunnels for n in clients]
    routed = [i for i, (t, _) in enumerate(entries) if t.table != cfgmod.MAIN_TABLE]
    if routed:
        rules = ["-s %s -j RETURN" % p for p in cfgmod.paused_inside(cfg, [n for _, n in entries])]
        for t, net in entries[:routed[-1] + 1]:
            rules.append("-s %s %s" % (net, REJECT) if t.table != cfgmod.MAIN_TABLE else "-s %s -j RETURN" % net)
        td.chains.append(ChainSpec(DOT_CHAINS[TUNNEL], tuple(rules), TUNNEL))
    for c in td.chains:
        for parent in td.parents:
            td.jumps[parent].append(JumpSpec(c.name, "-i %s -p tcp -m tcp --dport %d -j %s" % (lan, DOT_PORT, c.name),
                                             True, c.component))
    return td
