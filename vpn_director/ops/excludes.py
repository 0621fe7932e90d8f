"""Exclusions: destinations that skip Xray or a tunnel and go direct.

A two-letter code is a country list (`xray.exclude_sets`, a tunnel's `exclude`); an address or
CIDR is an Xray exclusion (`xray.exclude_ips`; tunnels exclude country lists only). The Xray
list keeps its default (`["ru"]`) when the key was missing from the file.
"""

from .. import config
from . import OpsError, names
from .clients import XRAY, check_via, entry_net, tunnels
from .txn import Unchanged

DEFAULT_XRAY_SETS = ["ru"]  # what a missing xray.exclude_sets means (config.validate)


def parse(token):
    """CC, IP or CIDR -> ("country", "cc") or ("address", network)."""
    if config.is_country(token):
        return "country", token.lower()
    try:
        net = config.parse_net(token)
    except ValueError:
        raise OpsError("%r is not a two-letter country code, an IPv4 address or a CIDR" % (token,))
    if net.prefixlen == 0:
        raise OpsError("excluding %s would take every destination out" % token)
    return "address", net


def _entries(raw, where, kind):
    """The list in the file that holds this kind of exclusion for `where`, created if missing."""
    check_via(raw, where)
    if where == XRAY:
        xr = raw.get("xray")
        if not isinstance(xr, dict):
            xr = raw["xray"] = {}
        key = "exclude_sets" if kind == "country" else "exclude_ips"
        if not isinstance(xr.get(key), list):
            xr[key] = list(DEFAULT_XRAY_SETS) if key == "exclude_sets" and key not in xr else []
        return xr[key]
    if kind != "country":
        raise OpsError("a tunnel excludes country lists only; an address can be excluded from xray "
                       "(`vpn-director exclude add ADDR`)")
    body = tunnels(raw)[where]
    if not isinstance(body.get("exclude"), list):
        body["exclude"] = []
    return body["exclude"]


def _same(kind, value):
    if kind == "country":
        return lambda e: isinstance(e, str) and e.lower() == value
    return lambda e: entry_net(e) == value


def _shown(kind, value):
    return value if kind == "country" else names.text(value)


def add(token, where=XRAY):
    def change(raw, cfg, out):
        kind, value = parse(token)
        entries = _entries(raw, where, kind)
        if any(map(_same(kind, value), entries)):
            raise Unchanged("%s is already excluded for %s" % (_shown(kind, value), where))
        entries.append(_shown(kind, value))
        return "exclude %s for %s: added" % (_shown(kind, value), where)
    return change


def remove(token, where=XRAY):
    def change(raw, cfg, out):
        kind, value = parse(token)
        entries = _entries(raw, where, kind)
        if not any(map(_same(kind, value), entries)):
            raise Unchanged("%s is not excluded for %s" % (_shown(kind, value), where))
        entries[:] = [e for e in entries if not _same(kind, value)(e)]
        return "exclude %s for %s: removed" % (_shown(kind, value), where)
    return change
