"""Set contents: zone files, canonical member text, and sizing for hash:net."""

import ipaddress
import os

from .errors import DataError


def member(net, nomatch=False):
    """A network as `ipset save` prints a hash:net entry (host routes without /32)."""
    text = str(net.network_address) if net.prefixlen == 32 else str(net)
    return text + " nomatch" if nomatch else text


def zone_path(data_dir, cc):
    return os.path.join(data_dir, "ipsets", "%s.zone" % cc)


def read_zone(path):
    """One CIDR a line, `#` comments; return the list of networks. Raises DataError."""
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            text = fh.read()
    except OSError as e:
        raise DataError("country list %s: %s" % (path, e.strerror or e))
    return parse_zone(text, path)


def parse_zone(text, origin):
    nets = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            net = ipaddress.IPv4Network(line, strict=False)
        except ValueError:
            raise DataError("%s:%d: %r is not an IPv4 CIDR" % (origin, lineno, line[:60]))
        if net.prefixlen == 0:
            raise DataError("%s:%d: 0.0.0.0/0 cannot be stored in a hash:net set" % (origin, lineno))
        nets.append(net)
    return nets


def sizing(count):
    """hashsize/maxelem for `count` entries: room to grow, never below ipset's defaults."""
    maxelem = 65536
    while maxelem < count * 2:
        maxelem *= 2
    hashsize = 1024
    while hashsize < count // 4:
        hashsize *= 2
    return hashsize, maxelem
