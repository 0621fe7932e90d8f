"""dnsmasq's DHCP leases: which device (name, MAC) holds which IPv4 address right now.

The file (`advanced.leases_file`; dnsmasq's default `/var/lib/misc/dnsmasq.leases` on
Asuswrt-Merlin and Debian) has one lease a line: `EXPIRY MAC IP HOSTNAME CLIENT-ID`, with `*` for
an unknown host name and expiry 0 for an infinite lease. IPv6 leases (after the `duid` line) are
skipped. A missing or unreadable file means no leases, never an error.
"""

import ipaddress
import re
import time

from ..record import Record
from . import OpsError
from ..patterns import compiled

MAC_RE = compiled(r"^[0-9a-f]{2}([:-][0-9a-f]{2}){5}$", re.I)


class Lease(Record, frozen=True):
    ip: str
    mac: str  # lower case, colon-separated
    name: str  # "" when the device sent none
    expiry: int  # seconds since the epoch; 0 = never


def parse(text, now=None):
    """Current IPv4 leases of a leases file's text, in file order."""
    now = time.time() if now is None else now
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4 or not parts[0].isdigit():
            continue
        expiry, mac, ip, name = int(parts[0]), parts[1].lower(), parts[2], parts[3]
        try:
            ipaddress.IPv4Address(ip)
        except ValueError:
            continue
        if expiry and expiry < now:
            continue  # expired: the address may already belong to another device
        out.append(Lease(ip, mac.replace("-", ":"), "" if name == "*" else name, expiry))
    return out


def read(path, now=None):
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return parse(fh.read(), now)
    except OSError:
        return []


def is_mac(text):
    return bool(MAC_RE.match(text))


def find(leases, token):
    """The lease a device name or MAC points at; OpsError if none or several do."""
    if is_mac(token):
        mac = token.lower().replace("-", ":")
        hits = [l for l in leases if l.mac == mac]
    else:
        hits = [l for l in leases if l.name and l.name.lower() == token.lower()]
    if len({l.ip for l in hits}) > 1:
        raise OpsError("%r matches several DHCP leases (%s); give the address or the MAC"
                       % (token, ", ".join("%s %s" % (l.ip, l.mac) for l in hits)))
    return hits[0] if hits else None
