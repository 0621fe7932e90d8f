"""Xray server host names → IPv4 addresses, with the last good answer kept in the record.

Only the Xray servers set needs these addresses. When DNS fails (a boot with the WAN still
down), the addresses last resolved are used with a warning; a name never resolved is left out
of the set with a warning — a LAN client talking straight to that server is then proxied, which
is the worst that can happen; the tunnels and everything else are applied as usual.
"""

import ipaddress

from . import desired
from .errors import DataError


def cached(record):
    """{name: [addresses]} from the record, keeping only well-formed IPv4 addresses."""
    out = {}
    for name, addrs in record.get("resolved", {}).items():
        good = []
        for a in addrs:
            try:
                good.append(str(ipaddress.IPv4Address(a)))
            except ValueError:
                continue
        if good:
            out[name] = good
    return out


class Resolver:
    """A `desired.build` resolver. `dns=False` answers from the record alone (check, render)."""

    def __init__(self, record, warn=lambda msg: None, dns=True, lookup=desired.resolve_host):
        self.cached = cached(record)
        self.fresh = {}
        self.warn = warn
        self.dns = dns
        self.lookup = lookup

    def __call__(self, name):
        why = "not looked up"
        if self.dns:
            try:
                addrs = self.lookup(name)
                self.fresh[name] = addrs
                return addrs
            except DataError as e:
                why = str(e)
        old = self.cached.get(name)
        if old:
            if self.dns:
                self.warn("%s; using the addresses it had last time: %s" % (why, ", ".join(old)))
            return old
        self.warn("xray.servers: %r has no address (%s) and none is recorded: it stays out of the Xray "
                  "servers set until it resolves" % (name, why))
        return []

    def known(self, names):
        """{name: addresses} to keep in the record for the config's server names."""
        out = {n: a for n, a in self.cached.items() if n in names}
        out.update({n: a for n, a in self.fresh.items() if n in names})
        return out
