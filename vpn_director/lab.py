"""A throw-away virtual router in network namespaces, to watch real packets take the document's paths.

Topology (names carry a prefix, default "vpdlab"):
  PREFIX-r     the router: LAN bridge br0, WAN link wan0, one veth per tunnel named like it
  PREFIX-cN    LAN clients on br0, one per address the config routes
  PREFIX-wan   "the internet": answers as "wan" for every lab destination
  PREFIX-T     one per tunnel T: answers as "T" for every lab destination
The router also runs a transparent listener on the TPROXY port that answers as "xray" and
reports the original destination it saw (a DNS query TPROXY'd to it is answered with XRAY_DNS_ANSWER).

start_dns() adds logging resolvers (lab_agent dns): one in the WAN namespace that also catches
every port-53 packet reaching the WAN (a catch-all DNAT, as an ISP that intercepts DNS would), one
per tunnel at TUNNEL_DNS (reachable only through the tunnel), and the router's own resolver on
its LAN address, a forwarder that re-sends each query to the WAN from the router's WAN address.
"""

import ipaddress
import json
import os
import shutil
import subprocess
import sys

from . import config as cfgmod
from . import desired, trace
from .ops import names
from .config import IFNAME_RE

PORT = 7000
WAN_NET = ("100.64.0.1/30", "100.64.0.2/30")
INTERNET = ["8.8.8.8", "77.88.8.8", "10.10.10.10"]
# Country data shipped with the lab, loaded the same way as real lists (<data_dir>/ipsets/<cc>.zone).
LAB_ZONES = {
    "ru": "# lab sample of the RU list\n77.88.0.0/16\n5.255.255.0/24\n",
    "ua": "# lab sample of the UA list\n91.198.0.0/16\n",
}
# DNS: the A record each lab resolver answers with, and each tunnel's resolver address (on the
# tunnel namespace's lo: the router reaches it only through the tunnel's table).
WAN_DNS_ANSWER, XRAY_DNS_ANSWER = "192.0.2.1", "192.0.2.100"
TUNNEL_DNS = "10.64.%d.1"  # % tunnel index (1-based, the order of the topology's tunnels)
ROUTER_LAN = "192.168.50.1"  # the router's address on br0 for the 192.168.50.0/24 clients
DEFAULT_CONFIG = {
    "paused_clients": ["192.168.50.25"],
    "xray": {"clients": ["192.168.50.10", "192.168.50.30"], "servers": ["203.0.113.10"],
             "exclude_ips": ["198.51.100.7"], "exclude_sets": ["ru"]},
    "tunnel_director": {"tunnels": {
        "wgc1": {"clients": ["192.168.50.20", "192.168.50.30", "192.168.50.25"], "exclude": ["ru"]},
        "ovpnc1": {"clients": ["192.168.50.16/29"], "exclude": []},
    }},
}


class LabError(Exception):
    pass


def _pkg_path():
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Lab:
    def __init__(self, prefix="vpdlab", workdir=None, backend=None, extra_destinations=()):
        self.prefix = prefix
        self.workdir = workdir or os.path.join("/tmp", prefix)
        self.backend = backend
        self.router = prefix + "-r"
        self.wan = prefix + "-wan"
        self.clients = {}  # address -> namespace
        self.tunnels = {}  # tunnel name -> namespace
        self.procs = []
        self.xray = None
        self.xray_port = None
        self.tables = {}
        self.extra_destinations = list(extra_destinations)
        self.dns_logs = {}  # resolver name -> its log (start_dns)
        self.dns_answers = {}  # A record -> the resolver name that gives it

    # --- shell-free helpers --------------------------------------------------------------
    def _run(self, argv, ns=None, check=True, input=None, env=None):
        if ns:
            argv = ["ip", "netns", "exec", ns] + argv
        p = subprocess.run(argv, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True, env=env)
        if check and p.returncode:
            raise LabError("%s: %s" % (" ".join(argv), (p.stderr or p.stdout).strip()))
        return p

    def _ip(self, ns, *args):
        return self._run(["ip"] + list(args), ns=ns)

    def env(self):
        env = dict(os.environ, PYTHONPATH=_pkg_path())
        if self.backend:
            env["VPD_IPTABLES"] = self.backend
        return env

    @staticmethod
    def _agent(*args):
        return [sys.executable, "-m", "vpn_director.lab_agent"] + list(args)

    # --- building --------------------------------------------------------------------------
    def namespaces(self):
        out = self._run(["ip", "netns", "list"], check=False).stdout
        return [line.split()[0] for line in out.splitlines()
                if line.split() and line.split()[0].startswith(self.prefix + "-")]

    def up(self, raw, topology=None):
        """Build the topology for config `raw` (a dict); `topology` (a config dict) may name more
        clients and tunnels, for configs applied later. Cleans a previous lab of the same prefix."""
        self.down()
        os.makedirs(os.path.join(self.workdir, "data", "ipsets"), exist_ok=True)
        for cc, text in LAB_ZONES.items():
            with open(os.path.join(self.workdir, "data", "ipsets", cc + ".zone"), "w") as fh:
                fh.write(text)
        topo = topology or raw
        tunnels = list(((topo.get("tunnel_director") or {}).get("tunnels") or {}).keys())
        self.tables = {}
        lines = []
        for i, name in enumerate(tunnels):
            if name != "main" and not name.isdigit():
                self.tables[name] = 111 + i
                lines.append("%d %s" % (111 + i, name))
            elif name.isdigit():
                self.tables[name] = int(name)
        with open(os.path.join(self.workdir, "rt_tables"), "w") as fh:
            fh.write("\n".join(lines) + "\n")
        cfg = self.write_config(topo)
        self.destinations = list(dict.fromkeys(_destinations(cfg) + self.extra_destinations))

        r = self.router
        self._ns(r)
        self._run(self._agent("sysctl", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0",
                              "net.ipv4.conf.default.rp_filter=0"), ns=r, env=self.env())
        self._ip(r, "link", "add", "br0", "type", "bridge")
        self._ip(r, "link", "set", "br0", "up")
        # With 1, packets TPROXY'd from a bridge lose their socket and never reach the proxy.
        self._run(self._agent("sysctl", "net.bridge.bridge-nf-call-iptables=0",
                              "net.ipv4.conf.br0.rp_filter=0"), ns=r, env=self.env())

        self._ns(self.wan)
        self._veth(r, "wan0", WAN_NET[0], self.wan, WAN_NET[1])
        self._ip(r, "route", "add", "default", "via", WAN_NET[1].split("/")[0])
        self._endpoint(self.wan, "wan", WAN_NET[0].split("/")[0])
        self.wan_address = WAN_NET[1].split("/")[0]

        for i, name in enumerate(tunnels):
            if name not in self.tables or not IFNAME_RE.match(name):
                continue
            ns = "%s-%s" % (self.prefix, name)
            self._ns(ns)
            near, far = "10.201.%d.1/30" % (i + 1), "10.201.%d.2/30" % (i + 1)
            self._veth(r, name, near, ns, far)
            self._ip(r, "route", "add", "default", "via", far.split("/")[0], "dev", name,
                     "table", str(self.tables[name]))
            self._endpoint(ns, name, near.split("/")[0])
            self.tunnels[name] = ns

        gateways = set()
        for n, addr in enumerate(_client_addresses(cfg)):
            ns = "%s-c%d" % (self.prefix, n + 1)
            self._ns(ns)
            gw = _gateway(addr)
            if gw not in gateways:
                gateways.add(gw)
                self._ip(r, "addr", "add", "%s/24" % gw, "dev", "br0")
            port = "vl%d" % (n + 1)
            self._ip(r, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
            self._ip(r, "link", "set", port, "master", "br0", "up")
            self._ip(ns, "addr", "add", "%s/24" % addr, "dev", "eth0")
            self._ip(ns, "link", "set", "eth0", "up")
            self._ip(ns, "route", "add", "default", "via", gw)
            self.clients[addr] = ns
        self.xray_port = cfg.xray.tproxy_port
        self.start_xray()
        return self.write_config(raw)

    def _ns(self, ns):
        self._run(["ip", "netns", "add", ns])
        self._ip(ns, "link", "set", "lo", "up")

    def _veth(self, ns_a, name_a, addr_a, ns_b, addr_b):
        self._ip(ns_a, "link", "add", name_a, "type", "veth", "peer", "name", "eth0", "netns", ns_b)
        self._ip(ns_a, "addr", "add", addr_a, "dev", name_a)
        self._ip(ns_a, "link", "set", name_a, "up")
        self._ip(ns_b, "addr", "add", addr_b, "dev", "eth0")
        self._ip(ns_b, "link", "set", "eth0", "up")

    def _endpoint(self, ns, name, gateway):
        for addr in self.destinations:
            self._ip(ns, "addr", "add", "%s/32" % addr, "dev", "lo")
        self._ip(ns, "route", "add", "default", "via", gateway)
        self._serve(ns, name, PORT)

    def _serve(self, ns, name, port, transparent=False, bind=None, dns=None):
        argv = ["ip", "netns", "exec", ns] + self._agent("serve", name, str(port))
        if transparent:
            argv.append("--transparent")
        if bind:
            argv += ["--bind", bind]
        if dns:
            argv += ["--dns", dns]
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                             env=self.env())
        self.procs.append(p)
        if p.stdout.readline().strip() != "ready":
            raise LabError("%s endpoint in %s did not start: %s" % (name, ns, p.stderr.read().strip()))
        return p

    def start_xray(self, bind="0.0.0.0"):
        """(Re)start the transparent listener standing in for Xray on the TPROXY port, bound to `bind`."""
        self.stop_xray()
        self.xray = self._serve(self.router, "xray", self.xray_port, transparent=True, bind=bind,
                                dns=XRAY_DNS_ANSWER)

    # --- DNS ------------------------------------------------------------------------------------
    def tunnel_dns(self, name):
        """The address of tunnel `name`'s resolver (start_dns)."""
        return TUNNEL_DNS % (list(self.tables).index(name) + 1)

    def start_dns(self, iptables=None):
        """Logging resolvers in the WAN namespace (catching every port-53 packet that reaches it),
        in each tunnel's namespace, and the router's forwarding resolver on its LAN addresses."""
        ipt = iptables or ("iptables-%s" % self.backend if self.backend else "iptables")
        wan_addr = WAN_NET[1].split("/")[0]
        self._resolver(self.wan, "wan", WAN_DNS_ANSWER)
        for proto in ("udp", "tcp"):
            self._run([ipt, "-t", "nat", "-A", "PREROUTING", "-p", proto, "--dport", "53", "-j", "DNAT",
                       "--to-destination", wan_addr], ns=self.wan)
        for name, ns in self.tunnels.items():
            self._ip(ns, "addr", "add", "%s/32" % self.tunnel_dns(name), "dev", "lo")
            self._resolver(ns, name, "192.0.2.%d" % (10 + list(self.tables).index(name) + 1))
        # the router's resolver re-sends from the WAN side, to a public resolver the WAN answers for
        self._resolver(self.router, "router", None, forward=INTERNET[0])

    def _resolver(self, ns, name, answer, forward=None):
        log = os.path.join(self.workdir, "dns-%s.log" % name)
        open(log, "w").close()
        argv = ["ip", "netns", "exec", ns] + self._agent("dns", name, log, answer or "0.0.0.0")
        if forward:
            argv += ["--forward", forward]
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                             env=self.env())
        self.procs.append(p)
        if p.stdout.readline().strip() != "ready":
            raise LabError("resolver %s in %s did not start: %s" % (name, ns, p.stderr.read().strip()))
        self.dns_logs[name] = log
        if answer:
            self.dns_answers[answer] = name

    def dns_seen(self, name):
        """Queries resolver `name` received: [{"qname", "qtype", "proto", "src"}]."""
        try:
            with open(self.dns_logs[name]) as fh:
                return [json.loads(line) for line in fh if line.strip()]
        except FileNotFoundError:
            return []

    def dns_where(self, qname):
        """The resolvers whose log has qname."""
        return sorted(n for n in self.dns_logs if any(q["qname"] == qname for q in self.dns_seen(n)))

    def lookup(self, client, server, qname, proto="udp", timeout=1.0):
        """A DNS lookup from a client: (answer text, the resolver name behind the answer or None)."""
        out = self.probe(client, [{"dst": server, "proto": proto, "qname": qname}], timeout=timeout)[0]
        who = self.dns_answers.get(out.split()[1]) if out.startswith("A ") else None
        if out == "A %s" % XRAY_DNS_ANSWER:
            who = "xray"
        return out, who

    def stop_xray(self):
        """Stop the Xray stand-in, as if Xray had stopped: nothing listens on the TPROXY port."""
        p = getattr(self, "xray", None)
        if p is not None:
            p.kill()
            p.wait()
            self.procs.remove(p)
            self.xray = None

    def ping(self, client, dst, count=3):
        """ICMP echo from a client: {"sent": N, "answered": N}."""
        out = self._run(self._agent("ping", dst, str(count)), ns=self.clients[client], env=self.env()).stdout
        return json.loads(out)

    def write_config(self, raw):
        """The owner's config with the lab's paths; returns the validated Config."""
        raw = json.loads(json.dumps(raw))
        raw["data_dir"] = os.path.join(self.workdir, "data")
        adv = raw.setdefault("advanced", {})
        adv.update({"state_dir": os.path.join(self.workdir, "state"), "lan_interface": "br0",
                    "rt_tables": os.path.join(self.workdir, "rt_tables"),
                    "boot": {"min_time": 0, "wait_delay": 0}})
        path = os.path.join(self.workdir, "vpn-director.json")
        with open(path, "w") as fh:
            json.dump(raw, fh, indent=1)
        self.config_path = path
        cfg = cfgmod.validate(raw, path)
        self._ensure_external_sets(cfg)
        return cfg

    def _ensure_external_sets(self, cfg):
        # Sets the config names but does not own (e.g. dnsmasq's) exist empty in the lab.
        if self.router not in self.namespaces():
            return
        names = set(cfg.xray.exclude_sets) | {n for t in cfg.tunnels for n in t.exclude}
        for name in names:
            if not cfgmod.is_country(name):
                self._run(["ipset", "-exist", "create", name, "hash:net"], ns=self.router)

    # --- using ----------------------------------------------------------------------------
    def vpd(self, *args, check=False):
        argv = [sys.executable, "-m", "vpn_director", "-c", self.config_path] + list(args)
        return self._run(argv, ns=self.router, check=check, env=self.env())

    def apply(self, raw=None):
        if raw is not None:
            self.write_config(raw)
        return self.vpd("apply")

    def targets(self):
        return [{"dst": d, "port": PORT, "proto": p} for d in self.destinations for p in ("tcp", "udp")]

    def probe(self, client, targets=None, timeout=1.0):
        targets = targets or self.targets()
        argv = self._agent("probe", json.dumps(targets)) + ([str(timeout)] if timeout != 1.0 else [])
        out = self._run(argv, ns=self.clients[client], env=self.env()).stdout
        return json.loads(out)

    def watch(self, client, targets, outfile, stopfile):
        """Probe `targets` from `client` round after round, one JSON line per probe into `outfile`,
        until `stopfile` exists: the running process (lab_agent watch)."""
        argv = ["ip", "netns", "exec", self.clients[client]] + self._agent("watch", json.dumps(targets), outfile,
                                                                          stopfile)
        return subprocess.Popen(argv, env=self.env())

    def expectation(self, cfg=None, local=(ROUTER_LAN,)):
        """A function (src, dst, proto[, dport]) -> (verdict, expected answer name), from the
        desired state. DNS to the router (`local`) is answered by the WAN's resolver: the
        router's own resolver (start_dns) forwards there."""
        cfg = cfg or cfgmod.load(self.config_path)
        rs = trace.from_desired(desired.build(cfg), cfg, local)

        def expect(src, dst, proto, dport=PORT):
            v = trace.trace(rs, src, dst, proto, dport)
            return v, {"xray": "xray", "direct": "wan", "router": "wan"}.get(v.route) or v.tunnel
        return expect

    def down(self):
        for p in self.procs:
            p.kill()
            p.wait()
        self.procs, self.xray = [], None
        for ns in self.namespaces():
            pids = self._run(["ip", "netns", "pids", ns], check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except (OSError, ValueError):
                    pass
            self._run(["ip", "netns", "del", ns], check=False)
        self.clients, self.tunnels = {}, {}
        shutil.rmtree(self.workdir, ignore_errors=True)


def _destinations(cfg):
    dsts = list(INTERNET)
    for s in cfg.xray.servers:
        try:
            dsts.append(_host(ipaddress.IPv4Network(s)))
        except ValueError:
            pass
    dsts += [_host(n) for n in cfg.xray.exclude_ips]
    return list(dict.fromkeys(dsts))


def _host(net):
    return str(net.network_address + (1 if net.prefixlen < 31 else 0))


def _client_addresses(cfg):
    """One representative address per configured client entry, plus one client in no list."""
    nets = list(cfg.xray.clients) + [n for t in cfg.tunnels for n in t.clients] + list(cfg.paused_clients)
    addrs = []
    for net in nets:
        a = net.network_address + (0 if net.prefixlen == 32 else min(6, net.num_addresses - 2))
        if str(a) not in addrs:
            addrs.append(str(a))
    for last in range(200, 254):
        cand = ipaddress.IPv4Address("192.168.50.%d" % last)
        if not any(cand in n for n in nets):
            addrs.append(str(cand))
            break
    return addrs[:16]


def _gateway(addr):
    net = ipaddress.IPv4Network("%s/24" % addr, strict=False)
    gw = net.network_address + 1
    return str(gw if str(gw) != addr else net.network_address + 254)


def role(cfg, addr):
    """How the config lists a client, for the table: "xray", "wgc1", "xray+wgc1", "paused", "-"."""
    a = ipaddress.IPv4Address(addr)
    if any(a in n for n in cfg.paused_clients):
        return "paused"
    parts = ["xray"] if any(a in n for n in cfg.xray.clients) else []
    parts += [t.name for t in cfg.tunnels if any(a in n for n in t.clients)]
    return "+".join(parts) or "-"


def run(raw, keep=False, prefix="vpdlab", backend=None, out=print):
    """Build, apply, probe every client x destination x protocol, print the table; True if all match."""
    lab = Lab(prefix, backend=backend)
    try:
        cfg = lab.up(raw)
        applied = lab.apply()
        if applied.returncode != 0:
            raise LabError("apply failed: %s" % (applied.stderr or applied.stdout).strip())
        expect = lab.expectation()
        shown = names.load(cfg)  # the owner's device names beside the client addresses
        rows, good = [], True
        for client in lab.clients:
            answers = lab.probe(client)
            for target, answer in zip(lab.targets(), answers):
                v, want = expect(client, target["dst"], target["proto"])
                seen = answer.split()[0] if answer else "?"
                ok = seen == want
                if ok and want == "xray":  # Xray must see the original destination
                    ok = answer.split()[1:] == ["%s:%d" % (target["dst"], PORT)]
                good &= ok
                rows.append((shown.label(client), role(cfg, client), target["dst"], target["proto"], want, answer, ok))
        rows += _real_xray(lab, raw, cfg, shown, out)
        good &= all(r[-1] for r in rows)
        out(_table(rows))
        out("%d of %d probes took the expected path" % (sum(r[-1] for r in rows), len(rows)))
        if keep:
            out("lab kept: namespaces %s; config %s" % (", ".join(lab.namespaces()), lab.config_path))
            out("explore: ip netns exec %s vpn-director -c %s status   |   remove: vpn-director lab down"
                % (lab.router, lab.config_path))
        return good
    finally:
        if not keep:
            lab.down()


def _real_xray(lab, raw, cfg, shown, out):
    """The last rows: one Xray client's TCP and UDP through a real Xray-core and a real proxy
    server (lab_xray), when the Xray-core package is installed; the stand-in's rows otherwise."""
    from . import lab_xray
    client = next((c for c in lab.clients if role(cfg, c) == "xray"), None)
    if client is None:
        return []
    if not lab_xray.available():
        out("real Xray: not shown (the Xray-core Python package is not installed: pip install Xray-core)")
        return []
    try:
        return [(shown.label(r[0]),) + r[1:] for r in lab_xray.rows(lab, raw, client, role(cfg, client), PORT)]
    except RuntimeError as e:
        return [(shown.label(client), role(cfg, client), "8.8.8.8", "tcp", "real Xray", "failed: %s" % e, False)]


def _table(rows):
    head = ("client", "listed in", "destination", "proto", "expected", "observed", "")
    body = [(c, r, d, p, w, a, "✓" if ok else "✗") for c, r, d, p, w, a, ok in rows]
    widths = [max(len(str(x[i])) for x in [head] + body) for i in range(len(head))]
    fmt = "  ".join("%%-%ds" % w for w in widths)
    return "\n".join([fmt % head, fmt % tuple("-" * w for w in widths)] + [fmt % row for row in body])

