"""Device names: which name to print beside a client address, and which address a name means.

Names come from the DHCP leases and from the config's `names` object, which wins. They are
only shown and looked up: no name ever reaches a kernel tool's command line.
"""

import ipaddress
import re
from typing import Dict, Optional

from .. import config
from . import OpsError, leases

ADDR_RE = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3}){3})(/\d{1,2})?(?![\d.]|/\d)")
SRC_RE = re.compile(r"(?:^| )-s (\S+)")


def text(net):
    """How an entry is written in the config: "192.168.50.10" for one host, else the CIDR."""
    return str(net.network_address) if net.prefixlen == 32 else str(net)


class Names:
    def __init__(self, configured=None, current_leases=()):
        self.by_net: Dict[ipaddress.IPv4Network, str] = {}
        for lease in current_leases:
            if lease.name:
                self.by_net[ipaddress.IPv4Network(lease.ip)] = lease.name
        self.by_net.update(configured or {})

    def get(self, addr) -> Optional[str]:
        """The name of an address or CIDR (string or network), or None."""
        try:
            net = addr if isinstance(addr, ipaddress.IPv4Network) else config.parse_net(str(addr))
        except ValueError:
            return None
        return self.by_net.get(net)

    def label(self, addr):
        name = self.get(addr)
        return "%s (%s)" % (addr, name) if name else str(addr)

    def annotate(self, line):
        """Free text with a name after every named address in it."""
        if not self.by_net:
            return line

        def one(m):
            name = self.get(m.group(0))
            return "%s (%s)" % (m.group(0), name) if name else m.group(0)
        return ADDR_RE.sub(one, line)

    def of_rule(self, spec):
        """The name of the client an iptables rule spec matches (`-s ADDR`), or None."""
        m = SRC_RE.search(spec)
        return self.get(m.group(1)) if m else None

    def annotate_rules(self, report_text):
        """`status` text: a rule line for a named client ends with the name."""
        out = []
        for line in report_text.splitlines():
            name = self.of_rule(line) if " -s " in line else None
            out.append("%s  (%s)" % (line, name) if name else line)
        return "\n".join(out)


def load(cfg):
    return Names(cfg.names, leases.read(cfg.leases_file))


def resolve(token, cfg):
    """ADDR as given to a client command -> (network, note). A device name or MAC is looked up
    in `names`, then in the DHCP leases; the note says which address it stands for."""
    try:
        net = config.parse_net(token)
    except ValueError:
        net = None
    if net is not None:
        if net.prefixlen == 0:
            raise OpsError("%s would take in every address; name clients one by one or by subnet" % token)
        note = None if text(net) == token or str(net) == token else \
            "%s has host bits set; using %s" % (token, text(net))
        return net, note
    if not token or not token.isprintable():
        raise OpsError("%r is not an IPv4 address, CIDR, device name or MAC" % (token,))
    named = [n for n, name in cfg.names.items() if name.lower() == token.lower()]
    if len(named) > 1:
        raise OpsError("%r names several entries in names (%s); give the address"
                       % (token, ", ".join(text(n) for n in named)))
    if named:
        return named[0], "%s is %s (names)" % (token, text(named[0]))
    lease = leases.find(leases.read(cfg.leases_file), token)
    if lease is None:
        raise OpsError("%r is not an IPv4 address or CIDR, and no device of that name or MAC is in names "
                       "or in the DHCP leases (%s)" % (token, cfg.leases_file))
    return ipaddress.IPv4Network(lease.ip), (
        "%s is %s by its DHCP lease (MAC %s); that address can change: a DHCP reservation keeps it"
        % (token, lease.ip, lease.mac))


def source(token, cfg):
    """A trace's SRC as the front ends take it: an IPv4 address, or a device name or MAC (names,
    then the DHCP leases) -> (address text, note or None). A subnet is no device: OpsError."""
    net, note = resolve(token, cfg)
    if net.prefixlen != 32:
        raise OpsError("%s is a subnet: give one device (an address, a device name or a MAC)" % token)
    return str(net.network_address), note
