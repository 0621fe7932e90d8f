"""Which way a client's internet traffic goes: the trace walk over the desired state.

No second copy of the routing rules: the answer comes from the same chains and ip rules apply
builds (desired.build, then trace). It needs no DNS (server names do not decide a client's
route) and no country data (a missing list counts as empty here; apply still needs it).
"""

import ipaddress
import itertools

from .. import desired, sets, trace
from ..errors import DataError

# Ordinary internet destinations; the first one no exclusion covers stands for "the internet".
INTERNET = ("8.8.8.8", "1.1.1.1", "9.9.9.9", "208.67.222.222", "4.2.2.1")


def _country(path):
    try:
        return sets.load_country(path)
    except DataError:
        return sets.no_country(path)


class Routes:
    """route(net) for every client of one config, from one build of its desired state."""

    def __init__(self, cfg):
        self.cfg = cfg
        full = desired.build(cfg, resolver=lambda name: [], country_loader=_country)
        self.rs = trace.from_desired(full, cfg)
        bypass = [idx for name, idx in self.rs.sets.items() if name != cfg.xray.clients_ipset]
        self.dst = next((d for d in INTERNET if not any(ipaddress.IPv4Address(d) in idx for idx in bypass)),
                        INTERNET[0])

    def verdict(self, net):
        """trace.Verdict of a packet from `net` (a host in it that no paused hole covers) to the internet."""
        return trace.trace(self.rs, str(self._host(net)), self.dst, "tcp", None, self.cfg.lan_interface)

    def shown(self, net):
        """"xray", the tunnel's table name, or "direct"."""
        v = self.verdict(net)
        return v.tunnel if v.route == "tunnel" else v.route

    def _host(self, net):
        if net.prefixlen >= 31:
            return net.network_address
        holes = [p for p in self.cfg.paused_clients if p != net and p.subnet_of(net)]
        for host in itertools.islice(net.hosts(), 256):
            if not any(host in h for h in holes):
                return host
        return next(net.hosts())
