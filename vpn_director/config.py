"""Load and validate vpn-director.json into a typed model; every problem is reported with its JSON path."""

from __future__ import annotations

import ipaddress
import json
import os
import re

from .record import Record, factory
from . import tables
from .bot import settings as bot_settings
from .xray import settings as xray_settings
from .web import settings as web_settings
from .errors import ConfigError
from .render import TMP_PREFIX
from .patterns import compiled

DEFAULT_PATH = "/opt/vpn-director/vpn-director.json"

# ipset names: the kernel allows 31 bytes; we also keep them shell- and parser-safe. Names with
# the prefix of apply's temporary swap sets are reserved (apply would collide with or destroy them).
SET_NAME_RE = compiled(r"^(?!%s)[A-Za-z0-9_.:-]{1,31}$" % re.escape(TMP_PREFIX))
# iptables chain names: 28 usable characters; iptables-nft refuses a leading '-'.
CHAIN_NAME_RE = compiled(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,27}$")
IFNAME_RE = compiled(r"^[A-Za-z0-9_.@:-]{1,15}$")
HOSTNAME_RE = compiled(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
COUNTRY_RE = compiled(r"^[A-Za-z]{2}$")
# A number with a leading zero: ipaddress reads the prefix length in `192.168.1.9/08` as /8.
LEADING_ZERO_RE = compiled(r"(^|[./])0\d")
DEFAULT_LEASES = "/var/lib/misc/dnsmasq.leases"  # dnsmasq's default: Asuswrt-Merlin and Debian alike
NAME_MAX = 64  # characters of a device name in `names`
BUILTIN_CHAINS = {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}
# A chain may not share a target's name: iptables refuses it (nft; legacy for the verdicts) or,
# worse, `-j MARK`/`-j TPROXY` would jump into the chain instead of running the target.
TARGET_NAMES = {
    "ACCEPT", "DROP", "QUEUE", "RETURN", "ERROR", "standard", "AUDIT", "CHECKSUM", "CLASSIFY",
    "CLUSTERIP", "CONNMARK", "CONNSECMARK", "CT", "DNAT", "DNPT", "DSCP", "ECN", "HL", "HMARK",
    "IDLETIMER", "LED", "LOG", "MARK", "MASQUERADE", "NAT", "NETMAP", "NFLOG", "NFQUEUE", "NOTRACK",
    "RATEEST", "REDIRECT", "REJECT", "SECMARK", "SET", "SNAT", "SNPT", "SYNPROXY", "TCPMSS",
    "TCPOPTSTRIP", "TEE", "TOS", "TPROXY", "TRACE", "TTL", "ULOG",
}
IPTABLES_BACKENDS = ("auto", "legacy", "nft")
KILL_ACTIONS = ("unreachable", "prohibit", "blackhole")
IPV6_MODES = ("block", "ignore")
OTHER_PROTOCOLS = ("direct", "drop")
XRAY_DNS = ("router", "xray")  # xray.dns: who answers Xray clients' DNS
TUNNEL_DNS = ("auto", "router")  # tunnel_director.tunnels.<t>.dns, besides a list of addresses
DEFAULT_XRAY_DNS_SERVERS = ["1.1.1.1", "8.8.8.8"]  # xray.dns_servers: queried through the proxy
MAC_RE = compiled(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
MAIN_TABLE = tables.BUILTIN["main"]  # a tunnel into it sends its clients out by the WAN
MERLIN_BAND = (10000, 12220)  # Asuswrt-Merlin's own VPN Director and kill-switch rule priorities


class Xray(Record):
    clients: list[ipaddress.IPv4Network]
    servers: list[str]  # addresses/CIDRs or hostnames (resolved at apply)
    exclude_ips: list[ipaddress.IPv4Network]
    exclude_sets: list[str]
    tproxy_port: int
    route_table: int
    rule_pref: int
    fwmark: int
    fwmark_mask: int
    chain: str
    clients_ipset: str
    servers_ipset: str
    other_protocols: str = "direct"  # protocols TPROXY cannot take (ICMP, GRE...): direct | drop
    dns: str = "router"  # router: the document's chain; xray: clients' port 53 is TPROXY'd to Xray
    dns_servers: list[str] = factory(lambda: list(DEFAULT_XRAY_DNS_SERVERS))
    side: object = None  # xray.settings.XraySide: servers, subscriptions, Xray's own process and files


class Tunnel(Record):
    name: str  # as written in the file (table name)
    table: int
    slot: int  # 1-based position in the file
    clients: list[ipaddress.IPv4Network]
    exclude: list[str]
    kill_switch: bool | None = None  # per-tunnel override of advanced.kill_switch.enabled
    dns: object = "auto"  # "auto" (the firmware's tunnel DNS), "router", or [IPv4 address, ...]


class Config(Record):
    path: str
    data_dir: str
    state_dir: str
    lan_interface: str
    rt_tables: str
    paused_clients: list[ipaddress.IPv4Network]
    xray: Xray
    tunnels: list[Tunnel]
    td_chain: str
    td_pref_base: int
    td_mark_mask: int
    td_mark_shift: int
    boot_min_time: int
    boot_wait_delay: int
    iptables: str
    lock_timeout: int
    ipset_sources: list[str]
    warnings: list[str] = factory(list)
    ipset_timeout: int = 30  # seconds per source (IPSET_TIMEOUT)
    ipset_max_bytes: int = 8 << 20  # IPSET_MAX_BYTES
    boot_interface_wait: int = 10  # seconds, at boot, for the LAN and tunnel interfaces
    log_syslog: bool = True
    log_file: str | None = None
    log_max_bytes: int = 256 << 10
    watchdog_min_interval: int = 10  # seconds between two re-applies by `apply --if-changed`
    names: dict[ipaddress.IPv4Network, str] = factory(dict)  # device names, shown with addresses
    leases_file: str = DEFAULT_LEASES  # DHCP leases: more device names, and names/MACs for `client add`
    file_id: tuple[int, int, int] | None = None  # the file as loaded: (inode, size, mtime in ns)
    kill_switch: bool = True  # a guard rule per tunnel: its clients never fall through to main
    kill_action: str = "unreachable"
    guard_pref_base: int = 16640
    ipv6_mode: str = "block"  # block: routed clients' IPv6 is rejected by MAC; ignore: not touched
    ipv6_macs: dict[ipaddress.IPv4Address, str] = factory(dict)  # pinned MACs
    block_dot: bool = False  # advanced.dns.block_dot: routed clients' TCP/853 (DNS over TLS) is rejected
    webui: object = None  # web.settings.WebSettings: the web UI's port, addresses, certificate, login file
    telegram: object = None  # bot.settings.Telegram: the bot's settings (never reach the kernel)

    def td_mark(self, slot):
        return (slot << self.td_mark_shift) & self.td_mark_mask

    @property
    def td_max_slots(self):
        return self.td_mark_mask >> self.td_mark_shift


KNOWN = {
    "": {"data_dir", "paused_clients", "xray", "tunnel_director", "advanced", "ipsets", "names", "webui",
         "telegram"},
    "webui": web_settings.KNOWN,
    "xray": {"clients", "servers", "exclude_ips", "exclude_sets", "other_protocols", "dns", "dns_servers"}
    | xray_settings.KNOWN_XRAY,
    "tunnel_director": {"tunnels"},
    "tunnel": {"clients", "exclude", "kill_switch", "dns"},
    "advanced": {"xray", "tunnel_director", "boot", "lan_interface", "state_dir", "rt_tables",
                 "iptables", "lock_timeout", "log", "watchdog", "leases_file", "kill_switch", "ipv6", "dns"},
    "advanced.kill_switch": {"enabled", "action", "guard_pref_base"},
    "advanced.ipv6": {"mode", "macs"},
    "advanced.dns": {"block_dot"},
    "advanced.xray": {"tproxy_port", "route_table", "rule_pref", "fwmark", "fwmark_mask", "chain",
                      "clients_ipset", "servers_ipset", "bypass_ipset"} | xray_settings.KNOWN_ADVANCED,
    "advanced.tunnel_director": {"chain", "pref_base", "mark_mask", "mark_shift"},
    "advanced.boot": {"min_time", "wait_delay", "interface_wait"},
    "advanced.log": {"syslog", "file", "max_kb"},
    "advanced.watchdog": {"min_interval"},
    "ipsets": {"sources", "timeout", "max_bytes"},
}

# Per-country aggregated IPv4 lists, tried in order: ipdeny (what the shell tool used), then
# ipverse's daily RIR export (formerly ipverse/rir-ip) as a fallback.
DEFAULT_SOURCES = [
    "https://www.ipdeny.com/ipblocks/data/aggregated/{cc}-aggregated.zone",
    "https://raw.githubusercontent.com/ipverse/country-ip-blocks/master/country/{cc}/ipv4-aggregated.txt",
]
IPSET_TIMEOUT = 30  # seconds per source, connect to last byte
IPSET_MAX_BYTES = 8 << 20  # the largest aggregated country list is well under 1 MiB
MAX_CONFIG_BYTES = 1 << 20  # a real config is a few KiB
MAX_CONFIG_DEPTH = 32  # a real config nests 5 deep; validating deeper JSON would exhaust the stack


def parse_net(text):
    """An IPv4 address or CIDR -> network; host bits are masked off (as iptables does)."""
    if not isinstance(text, str) or not text.strip() or text != text.strip() or LEADING_ZERO_RE.search(text):
        raise ValueError
    net = ipaddress.IPv4Network(text, strict=False)
    return net


class _Checker:
    """Collects problems while walking the raw JSON."""

    def __init__(self):
        self.problems = []
        self.warnings = []

    def err(self, path, msg):
        self.problems.append("%s: %s" % (path or "<root>", msg))

    def obj(self, raw, path):
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.err(path, "must be an object, got %s" % _tname(raw))
            return {}
        return raw

    def unknown(self, raw, kind, path):
        for key in raw:
            if key not in KNOWN[kind]:
                self.warnings.append("%s: unknown key (ignored)" % _join(path, key))

    def lst(self, raw, path):
        if raw is None:
            return []
        if not isinstance(raw, list):
            self.err(path, "must be a list, got %s" % _tname(raw))
            return []
        return raw

    def nets(self, raw, path):
        out = []
        for i, item in enumerate(self.lst(raw, path)):
            p = "%s[%d]" % (path, i)
            try:
                net = parse_net(item)
            except (ValueError, TypeError):
                self.err(p, "%r is not an IPv4 address or CIDR" % (item,))
                continue
            if net.prefixlen == 0:
                self.err(p, "0.0.0.0/0 cannot be stored in a hash:net set; use 0.0.0.0/1 and 128.0.0.0/1")
                continue
            if "/" in item and str(net) != item:
                self.warnings.append("%s: %r has host bits set; using %s" % (p, item, net))
            out.append(net)
        return out

    def servers(self, raw, path):
        out = []
        for i, item in enumerate(self.lst(raw, path)):
            p = "%s[%d]" % (path, i)
            if not isinstance(item, str):
                self.err(p, "%r is not an IPv4 address, CIDR or hostname" % (item,))
                continue
            try:
                net = parse_net(item)
                if net.prefixlen == 0:
                    raise ValueError
                out.append(str(net))
                continue
            except ValueError:
                pass
            if re.match(r"^[0-9./]+$", item) or not HOSTNAME_RE.match(item):
                self.err(p, "%r is not an IPv4 address, CIDR or hostname" % (item,))
                continue
            out.append(item.lower().rstrip("."))
        return out

    def set_names(self, raw, path):
        out = []
        for i, item in enumerate(self.lst(raw, path)):
            p = "%s[%d]" % (path, i)
            if not isinstance(item, str) or not SET_NAME_RE.match(item):
                self.err(p, "%r is not a valid set name (1-31 characters of A-Z a-z 0-9 _ . : -, not starting "
                         "with %s)" % (item, TMP_PREFIX))
                continue
            if COUNTRY_RE.match(item):
                item = item.lower()  # country codes are normalised, never silently ignored
            if item in out:
                self.warnings.append("%s: %r listed twice" % (p, item))
                continue
            out.append(item)
        return out

    def integer(self, raw, path, default, lo, hi):
        if raw is None:
            return default
        if isinstance(raw, bool) or not isinstance(raw, int):
            if isinstance(raw, str) and raw.strip().isascii() and raw.strip().isdigit():
                raw = int(raw)
            else:
                self.err(path, "must be an integer, got %r" % (raw,))
                return default
        if not lo <= raw <= hi:
            self.err(path, "%d is out of range %d..%d" % (raw, lo, hi))
            return default
        return raw

    def boolean(self, raw, path, default):
        if raw is None:
            return default
        if not isinstance(raw, bool):
            self.err(path, "must be true or false, got %r" % (raw,))
            return default
        return raw

    def choice(self, raw, path, default, choices):
        if raw is None:
            return default
        if raw not in choices:
            self.err(path, "%r is not one of %s" % (raw, ", ".join(choices)))
            return default
        return raw

    def resolvers(self, raw, path):
        """A non-empty list of DNS server addresses: unicast IPv4, written plainly (no CIDR)."""
        if not isinstance(raw, list) or not raw:
            self.err(path, "must be a non-empty list of IPv4 addresses, got %r" % (raw,))
            return []
        out = []
        for i, item in enumerate(raw):
            addr = resolver_address(item)
            if addr is None:
                self.err("%s[%d]" % (path, i), "%r is not a unicast IPv4 address of a DNS server" % (item,))
            elif addr in out:
                self.warnings.append("%s[%d]: %r listed twice" % (path, i, item))
            else:
                out.append(addr)
        return out

    def mark(self, raw, path, default):
        if raw is None:
            return default
        try:
            if isinstance(raw, bool):
                raise ValueError
            value = raw if isinstance(raw, int) else int(str(raw), 0)
        except ValueError:
            self.err(path, "%r is not a mark (integer or hex string like \"0x100\")" % (raw,))
            return default
        if not 0 <= value < 2 ** 32:
            self.err(path, "%r does not fit in 32 bits" % (raw,))
            return default
        return value

    def name(self, raw, path, default, regex, what):
        if raw is None:
            return default
        if not isinstance(raw, str) or not regex.match(raw):
            self.err(path, "%r is not a valid %s" % (raw, what))
            return default
        return raw

    def path(self, raw, path, default):
        if raw is None:
            return default
        if not isinstance(raw, str) or not raw.startswith("/") or "\0" in raw:
            self.err(path, "must be an absolute path, got %r" % (raw,))
            return default
        return raw


def _tname(v):
    return {dict: "object", list: "list", str: "string", bool: "boolean", int: "number",
            float: "number", type(None): "null"}.get(type(v), type(v).__name__)


def _join(path, key):
    return "%s.%s" % (path, key) if path else key


def _pairs_hook(pairs):
    # Keep tunnel order and catch duplicate keys (json.load would keep the last silently).
    out = {}
    for k, v in pairs:
        if k in out:
            out.setdefault("\0duplicates", []).append(k)
        out[k] = v
    return out


def load(path=None, env=os.environ):
    """Read and validate the config file; raise ConfigError listing every problem."""
    path = path or env.get("VPD_CONFIG") or DEFAULT_PATH
    ident = file_id(path)  # taken before reading: a change after it shows as a different id
    cfg = validate(read_raw(path), path)
    cfg.file_id = ident
    return cfg


def file_id(path):
    """(inode, size, mtime in ns) of a file, or None: an edit (a rename over it) changes it."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def read_raw(path):
    """The parsed JSON of a config file, not yet validated."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)  # bounded: `-c /dev/zero` must not fill memory
    except OSError as e:
        raise ConfigError(["%s: cannot read config: %s" % (path, e.strerror or e)])
    return parse_bytes(data, path)


def parse_bytes(data, path="<config>"):
    """A config file's bytes (at most MAX_CONFIG_BYTES + 1 of them read) -> raw config."""
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(["%s: larger than %d KiB: not a vpn-director config" % (path, MAX_CONFIG_BYTES >> 10)])
    try:
        text = data.decode("utf-8-sig")  # editors on Windows start the file with a BOM
    except UnicodeDecodeError as e:
        raise ConfigError(["%s: not UTF-8 text (byte %d)" % (path, e.start)])
    return parse_text(text, path)


def parse_text(text, path="<config>"):
    """JSON text -> raw config: key order kept (tunnel order is semantic), duplicate keys marked
    so that validate() reports them; nesting bounded (validation recurses)."""
    try:
        raw = json.loads(text, object_pairs_hook=_pairs_hook)
        too_deep = _depth(raw) > MAX_CONFIG_DEPTH
    except ValueError as e:
        raise ConfigError(["%s: not valid JSON: %s" % (path, e)])
    except RecursionError:
        too_deep = True
    if too_deep:
        raise ConfigError(["%s: nested more than %d levels deep" % (path, MAX_CONFIG_DEPTH)])
    return raw


def _depth(raw):
    """How deeply objects and lists nest, found without recursion (validation recurses)."""
    deepest, todo = 0, [(raw, 1)]
    while todo:
        value, depth = todo.pop()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, depth)
            todo.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return deepest


def validate(raw, path="<config>"):
    c = _Checker()
    if not isinstance(raw, dict):
        raise ConfigError(["<root>: must be an object, got %s" % _tname(raw)])
    _dups(c, raw, "")
    c.unknown(raw, "", "")

    adv = c.obj(raw.get("advanced"), "advanced")
    c.unknown(adv, "advanced", "advanced")
    ax = c.obj(adv.get("xray"), "advanced.xray")
    c.unknown(ax, "advanced.xray", "advanced.xray")
    atd = c.obj(adv.get("tunnel_director"), "advanced.tunnel_director")
    c.unknown(atd, "advanced.tunnel_director", "advanced.tunnel_director")
    boot = c.obj(adv.get("boot"), "advanced.boot")
    c.unknown(boot, "advanced.boot", "advanced.boot")

    rt_path = c.path(adv.get("rt_tables"), "advanced.rt_tables", "/etc/iproute2/rt_tables")
    names = tables.read_rt_tables(rt_path)

    xr = c.obj(raw.get("xray"), "xray")
    c.unknown(xr, "xray", "xray")
    servers_key = "servers_ipset" if "servers_ipset" in ax else "bypass_ipset"
    xray = Xray(
        clients=c.nets(xr.get("clients"), "xray.clients"),
        servers=c.servers(xr.get("servers"), "xray.servers"),
        exclude_ips=c.nets(xr.get("exclude_ips"), "xray.exclude_ips"),
        exclude_sets=c.set_names(xr.get("exclude_sets", ["ru"]), "xray.exclude_sets"),
        tproxy_port=c.integer(ax.get("tproxy_port"), "advanced.xray.tproxy_port", 12345, 1, 65535),
        route_table=_table(c, ax.get("route_table"), "advanced.xray.route_table", 100, names),
        rule_pref=c.integer(ax.get("rule_pref"), "advanced.xray.rule_pref", 200, 1, 32765),
        fwmark=c.mark(ax.get("fwmark"), "advanced.xray.fwmark", 0x100),
        fwmark_mask=c.mark(ax.get("fwmark_mask"), "advanced.xray.fwmark_mask", 0x100),
        chain=c.name(ax.get("chain"), "advanced.xray.chain", "XRAY_TPROXY", CHAIN_NAME_RE, "chain name"),
        clients_ipset=c.name(ax.get("clients_ipset"), "advanced.xray.clients_ipset", "XRAY_CLIENTS",
                             SET_NAME_RE, "set name"),
        servers_ipset=c.name(ax.get(servers_key), "advanced.xray." + servers_key, "XRAY_SERVERS",
                             SET_NAME_RE, "set name"),
        other_protocols=c.choice(xr.get("other_protocols"), "xray.other_protocols", "direct", OTHER_PROTOCOLS),
        dns=c.choice(xr.get("dns"), "xray.dns", "router", XRAY_DNS),
    )
    if xr.get("dns_servers") is not None:
        xray.dns_servers = c.resolvers(xr.get("dns_servers"), "xray.dns_servers")
    xray.side = xray_settings.check(c, xr, ax, xray.tproxy_port)
    if "servers_ipset" in ax and "bypass_ipset" in ax and ax["servers_ipset"] != ax["bypass_ipset"]:
        c.err("advanced.xray.bypass_ipset", "conflicts with advanced.xray.servers_ipset (%r); keep one"
              % ax["servers_ipset"])

    td_chain = c.name(atd.get("chain"), "advanced.tunnel_director.chain", "TUN_DIR", CHAIN_NAME_RE,
                      "chain name")
    pref_base = c.integer(atd.get("pref_base"), "advanced.tunnel_director.pref_base", 16384, 1, 32765)
    mark_mask = c.mark(atd.get("mark_mask"), "advanced.tunnel_director.mark_mask", 0x00FF0000)
    mark_shift = c.integer(atd.get("mark_shift"), "advanced.tunnel_director.mark_shift", 16, 0, 31)

    cfg = Config(
        path=path,
        data_dir=c.path(raw.get("data_dir"), "data_dir", "/opt/vpn-director/data"),
        state_dir=c.path(adv.get("state_dir"), "advanced.state_dir", "/tmp/tunnel_director"),
        lan_interface=c.name(adv.get("lan_interface"), "advanced.lan_interface", "br0", IFNAME_RE,
                             "interface name"),
        rt_tables=rt_path,
        paused_clients=c.nets(raw.get("paused_clients"), "paused_clients"),
        xray=xray,
        tunnels=[],
        td_chain=td_chain,
        td_pref_base=pref_base,
        td_mark_mask=mark_mask,
        td_mark_shift=mark_shift,
        boot_min_time=c.integer(boot.get("min_time"), "advanced.boot.min_time", 120, 0, 86400),
        boot_wait_delay=c.integer(boot.get("wait_delay"), "advanced.boot.wait_delay", 60, 0, 3600),
        iptables=c.choice(adv.get("iptables"), "advanced.iptables", "auto", IPTABLES_BACKENDS),
        lock_timeout=c.integer(adv.get("lock_timeout"), "advanced.lock_timeout", 120, 0, 3600),
        ipset_sources=_sources(c, raw.get("ipsets")),
    )
    ips = raw.get("ipsets") if isinstance(raw.get("ipsets"), dict) else {}
    cfg.ipset_timeout = c.integer(ips.get("timeout"), "ipsets.timeout", IPSET_TIMEOUT, 1, 600)
    cfg.ipset_max_bytes = c.integer(ips.get("max_bytes"), "ipsets.max_bytes", IPSET_MAX_BYTES, 1024, 1 << 30)
    _service(c, adv, boot, cfg)
    cfg.names = _names(c, raw.get("names"))
    cfg.leases_file = c.path(adv.get("leases_file"), "advanced.leases_file", DEFAULT_LEASES)
    _check_marks(c, cfg)
    cfg.tunnels = _tunnels(c, raw.get("tunnel_director"), names, cfg)
    _check_collisions(c, cfg)
    _leaks(c, adv, cfg)
    cfg.webui = web_settings.check(c, raw.get("webui"))
    cfg.telegram = bot_settings.check(c, raw.get("telegram"))
    if c.problems:
        raise ConfigError(c.problems)
    cfg.warnings = c.warnings
    return cfg


def _dups(c, raw, path):
    for k in raw.get("\0duplicates", []):
        c.err(_join(path, k), "key appears more than once")
    raw.pop("\0duplicates", None)
    for k, v in raw.items():
        if isinstance(v, dict):
            _dups(c, v, _join(path, k))
        elif isinstance(v, list):
            for i, item in enumerate(v):
                if isinstance(item, dict):
                    _dups(c, item, "%s[%d]" % (_join(path, k), i))


def _sources(c, raw):
    ips = c.obj(raw, "ipsets")
    c.unknown(ips, "ipsets", "ipsets")
    if "sources" not in ips:
        return list(DEFAULT_SOURCES)
    out = []
    for i, s in enumerate(c.lst(ips["sources"], "ipsets.sources")):
        p = "ipsets.sources[%d]" % i
        if not isinstance(s, str) or not re.match(r"^(https?|file)://", s) or not _cc_in_path_only(s):
            c.err(p, "%r must be an http(s):// or file:// URL with {cc} in its path" % (s,))
            continue
        out.append(s)
    return out


def _cc_in_path_only(url):
    """{cc} is in the URL's path and nowhere else: a file:// URL ignores its query and fragment,
    so `file:///etc/shadow?{cc}` would read /etc/shadow for every country."""
    try:
        import urllib.parse  # only configs that name their own list sources
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return False
    return "{cc}" in parts.path and "{cc}" not in parts.netloc + parts.query + parts.fragment


def _table(c, raw, path, default, names):
    if raw is None:
        return default
    num = _resolve(str(raw), names) if isinstance(raw, (str, int)) and not isinstance(raw, bool) else None
    if num is None:
        c.err(path, "%r is not a routing table number or a name in rt_tables" % (raw,))
        return default
    if num in (253, 254, 255):
        c.err(path, "table %d is reserved (default/main/local)" % num)
        return default
    return num


def _resolve(name, names):
    # str.isdigit() is true for '²' or '١٢٣', which are no table numbers (int('²') even raises)
    if name.isdigit() and not name.isascii():
        return names.get(name)
    return tables.resolve(name, names)


def _tunnels(c, raw, names, cfg):
    td = c.obj(raw, "tunnel_director")
    c.unknown(td, "tunnel_director", "tunnel_director")
    tuns = c.obj(td.get("tunnels"), "tunnel_director.tunnels")
    out = []
    for slot, (name, body) in enumerate(tuns.items(), start=1):
        p = "tunnel_director.tunnels.%s" % name
        table = _resolve(name, names) if name else None
        if table is None:
            c.err(p, "table %r is not in %s (nor numeric, nor 'main')" % (name, cfg.rt_tables))
        elif table in (0, 253, 255):
            c.err(p, "table %r (%d) cannot carry tunnel traffic" % (name, table))
        if not isinstance(body, dict):
            c.err(p, "must be an object with 'clients' and 'exclude', got %s" % _tname(body))
            continue
        c.unknown(body, "tunnel", p)
        ks = c.boolean(body.get("kill_switch"), p + ".kill_switch", None)
        out.append(Tunnel(name=name, table=table or 0, slot=slot,
                          clients=c.nets(body.get("clients"), p + ".clients"),
                          exclude=c.set_names(body.get("exclude"), p + ".exclude"), kill_switch=ks,
                          dns=_tunnel_dns(c, body.get("dns"), p + ".dns")))
    if len(out) > cfg.td_max_slots > 0:
        c.err("tunnel_director.tunnels", "%d tunnels do not fit in mark mask %#x (%d slots)"
              % (len(out), cfg.td_mark_mask, cfg.td_max_slots))
    # The whole slot range is ours (temporary marks use free slots during a reorder), and all
    # of it must sit before the main table's rule at 32766.
    m = cfg.td_mark_mask
    slots = m >> ((m & -m).bit_length() - 1) if m else 0  # from the mask alone: a bad shift is reported apart
    if cfg.td_pref_base + max(slots, len(out), 1) - 1 > 32765:
        c.err("advanced.tunnel_director.pref_base", "%d + %d slots would reach past priority 32765"
              % (cfg.td_pref_base, max(slots, len(out))))
    return out


def _service(c, adv, boot, cfg):
    """Keys for running unattended: boot interface wait, logging, watchdog spacing."""
    cfg.boot_interface_wait = c.integer(boot.get("interface_wait"), "advanced.boot.interface_wait", 10, 0, 600)
    lg = c.obj(adv.get("log"), "advanced.log")
    c.unknown(lg, "advanced.log", "advanced.log")
    cfg.log_syslog = c.boolean(lg.get("syslog"), "advanced.log.syslog", True)
    if lg.get("file") is not None:
        cfg.log_file = c.path(lg.get("file"), "advanced.log.file", None)
    cfg.log_max_bytes = c.integer(lg.get("max_kb"), "advanced.log.max_kb", 256, 1, 1 << 20) << 10
    wd = c.obj(adv.get("watchdog"), "advanced.watchdog")
    c.unknown(wd, "advanced.watchdog", "advanced.watchdog")
    cfg.watchdog_min_interval = c.integer(wd.get("min_interval"), "advanced.watchdog.min_interval", 10, 0, 3600)


def _leaks(c, adv, cfg):
    """advanced.kill_switch and advanced.ipv6: what keeps routed clients off the WAN."""
    ks = c.obj(adv.get("kill_switch"), "advanced.kill_switch")
    c.unknown(ks, "advanced.kill_switch", "advanced.kill_switch")
    cfg.kill_switch = c.boolean(ks.get("enabled"), "advanced.kill_switch.enabled", True)
    cfg.kill_action = c.choice(ks.get("action"), "advanced.kill_switch.action", "unreachable", KILL_ACTIONS)
    # Guards sit after every lookup rule (the whole slot range), before main at 32766, and
    # outside the firmware's band, whose rules Merlin deletes by priority. By default they
    # start just past the lookups' range plus one (16640 with the default 16384 and 255 slots).
    m = cfg.td_mark_mask
    slots = max(m >> ((m & -m).bit_length() - 1) if m else 1, len(cfg.tunnels), 1)
    last_lookup = cfg.td_pref_base + slots - 1
    base = c.integer(ks.get("guard_pref_base"), "advanced.kill_switch.guard_pref_base", last_lookup + 2, 1, 32765)
    cfg.guard_pref_base = base
    p = "advanced.kill_switch.guard_pref_base"
    if not (cfg.kill_switch or any(t.kill_switch for t in cfg.tunnels)):
        pass  # no guards: their priorities do not matter
    elif base <= last_lookup:
        c.err(p, "%d must be above the tunnel lookup priorities %d..%d" % (base, cfg.td_pref_base, last_lookup))
    elif base + slots - 1 > 32765:
        c.err(p, "%d + %d slots would reach past priority 32765" % (base, slots))
    elif base <= MERLIN_BAND[1] and base + slots - 1 >= MERLIN_BAND[0]:
        c.err(p, "%d..%d overlaps the firmware's rule priorities %d..%d"
              % (base, base + slots - 1, MERLIN_BAND[0], MERLIN_BAND[1]))
    elif base <= cfg.xray.rule_pref <= base + slots - 1:
        c.err(p, "%d..%d contains advanced.xray.rule_pref %d" % (base, base + slots - 1, cfg.xray.rule_pref))

    dns = c.obj(adv.get("dns"), "advanced.dns")
    c.unknown(dns, "advanced.dns", "advanced.dns")
    cfg.block_dot = c.boolean(dns.get("block_dot"), "advanced.dns.block_dot", False)

    v6 = c.obj(adv.get("ipv6"), "advanced.ipv6")
    c.unknown(v6, "advanced.ipv6", "advanced.ipv6")
    cfg.ipv6_mode = c.choice(v6.get("mode"), "advanced.ipv6.mode", "block", IPV6_MODES)
    for key, mac in c.obj(v6.get("macs"), "advanced.ipv6.macs").items():
        p = "advanced.ipv6.macs.%s" % key
        try:
            if LEADING_ZERO_RE.search(key):
                raise ValueError
            addr = ipaddress.IPv4Address(key)
        except ValueError:
            c.err(p, "%r is not an IPv4 address" % (key,))
            continue
        if not isinstance(mac, str) or not MAC_RE.match(mac.lower().replace("-", ":")):
            c.err(p, "%r is not a MAC address (aa:bb:cc:dd:ee:ff)" % (mac,))
            continue
        cfg.ipv6_macs[addr] = mac.lower().replace("-", ":")


def resolver_address(text):
    """A DNS server's address as iptables prints it, or None: a plain unicast IPv4 address that
    a DNAT may point at (not loopback, multicast, broadcast or 0.0.0.0)."""
    if not isinstance(text, str) or text != text.strip() or LEADING_ZERO_RE.search(text):
        return None
    try:
        addr = ipaddress.IPv4Address(text)
    except ValueError:
        return None
    if addr.is_loopback or addr.is_multicast or addr.is_unspecified or addr == ipaddress.IPv4Address("255.255.255.255"):
        return None
    return str(addr)


def _tunnel_dns(c, raw, path):
    """tunnel_director.tunnels.<t>.dns: "auto" (default), "router" or a list of resolvers."""
    if raw is None or raw in TUNNEL_DNS:
        return raw or "auto"
    if isinstance(raw, list):
        return c.resolvers(raw, path)
    c.err(path, "%r is not \"auto\", \"router\" or a list of IPv4 addresses" % (raw,))
    return "auto"


def guarded(cfg, tun):
    """Does this tunnel get a kill-switch guard? Never for the main table (it is the WAN)."""
    if tun.table == MAIN_TABLE:
        return False
    return cfg.kill_switch if tun.kill_switch is None else tun.kill_switch


def _names(c, raw):
    """`names`: IPv4 address or CIDR -> a device name shown wherever that client is printed."""
    out = {}
    for key, value in c.obj(raw, "names").items():
        p = "names.%s" % key
        try:
            net = parse_net(key)
        except ValueError:
            c.err(p, "%r is not an IPv4 address or CIDR" % (key,))
            continue
        if not isinstance(value, str) or not value.strip() or len(value) > NAME_MAX or not value.isprintable():
            c.err(p, "%r is not a name (1-%d printable characters)" % (value, NAME_MAX))
        elif net in out:
            c.err(p, "%s is named twice" % net)
        else:
            out[net] = value.strip()
    return out


def _check_marks(c, cfg):
    x = cfg.xray
    if x.fwmark_mask == 0 or x.fwmark & ~x.fwmark_mask or x.fwmark == 0:
        c.err("advanced.xray.fwmark", "%#x must be non-zero and inside fwmark_mask %#x" % (x.fwmark, x.fwmark_mask))
    m = cfg.td_mark_mask
    if m == 0:
        c.err("advanced.tunnel_director.mark_mask", "must be non-zero")
        return
    low = (m & -m).bit_length() - 1
    if (m >> low) & ((m >> low) + 1):
        c.err("advanced.tunnel_director.mark_mask", "%#x is not a contiguous bit field" % m)
    elif cfg.td_mark_shift != low:
        c.err("advanced.tunnel_director.mark_shift", "%d does not match mark_mask %#x (its lowest bit is %d)"
              % (cfg.td_mark_shift, m, low))
    if m & x.fwmark_mask:
        c.err("advanced.tunnel_director.mark_mask", "%#x overlaps the Xray fwmark_mask %#x" % (m, x.fwmark_mask))


def _check_collisions(c, cfg):
    if cfg.xray.chain == cfg.td_chain:
        c.err("advanced.tunnel_director.chain", "same name as advanced.xray.chain (%r)" % cfg.td_chain)
    for path, ch in (("advanced.xray.chain", cfg.xray.chain), ("advanced.tunnel_director.chain", cfg.td_chain)):
        if ch in BUILTIN_CHAINS:
            c.err(path, "%r is a built-in chain" % ch)
        elif ch in TARGET_NAMES:
            c.err(path, "%r is the name of an iptables target" % ch)
    if cfg.xray.clients_ipset == cfg.xray.servers_ipset:
        c.err("advanced.xray.servers_ipset", "same name as advanced.xray.clients_ipset")
    n = max(len(cfg.tunnels), 1)
    if cfg.td_pref_base <= cfg.xray.rule_pref < cfg.td_pref_base + n:
        c.err("advanced.xray.rule_pref", "%d collides with the tunnel priorities %d..%d"
              % (cfg.xray.rule_pref, cfg.td_pref_base, cfg.td_pref_base + n - 1))
    for t in cfg.tunnels:
        if t.table == cfg.xray.route_table:
            c.err("tunnel_director.tunnels.%s" % t.name, "table %d is the Xray route table (advanced.xray.route_table)"
                  % t.table)
    own = {cfg.xray.clients_ipset, cfg.xray.servers_ipset}
    for path, names in [("xray.exclude_sets", cfg.xray.exclude_sets)] + [
            ("tunnel_director.tunnels.%s.exclude" % t.name, t.exclude) for t in cfg.tunnels]:
        for i, n_ in enumerate(names):
            if n_ in own:
                c.err("%s[%d]" % (path, i), "%r is one of vpn-director's own Xray sets" % n_)


def is_country(name):
    return bool(COUNTRY_RE.match(name))


def effective(cfg) -> tuple[list[ipaddress.IPv4Network], list[tuple[Tunnel, list[ipaddress.IPv4Network]]]]:
    """Client lists with paused clients taken out (exact entries only)."""
    paused = set(cfg.paused_clients)
    xc = [n for n in _dedupe(cfg.xray.clients) if n not in paused]
    tuns = [(t, [n for n in _dedupe(t.clients) if n not in paused]) for t in cfg.tunnels]
    return xc, tuns


def _dedupe(nets):
    seen, out = set(), []
    for n in nets:
        if n not in seen:
            seen.add(n)
            out.append(n)
    return out


def paused_inside(cfg, nets) -> list[ipaddress.IPv4Network]:
    """Paused clients that sit inside (but are not equal to) one of `nets`: they need an explicit hole.

    Each paused network's at most 32 wider networks are looked up in a set of `nets` rather than
    compared with every client: lists run to thousands of clients.
    """
    listed = {net_key(n) for n in nets}
    return [p for p in _dedupe(cfg.paused_clients)
            if net_key(p) not in listed and any(k in listed for k in wider_keys(p))]


_MASKS = [0xFFFFFFFF ^ ((1 << (32 - plen)) - 1) for plen in range(33)]


def net_key(net):
    """(address, prefix length) of a network: hashable and cheaper than the network itself."""
    return int(net.network_address), net.prefixlen


def wider_keys(net):
    """net_key of every network that strictly contains `net`: at most 32, widest first."""
    addr = int(net.network_address)
    return [(addr & _MASKS[plen], plen) for plen in range(net.prefixlen)]


def xray_enabled(cfg) -> bool:
    return bool(effective(cfg)[0])

