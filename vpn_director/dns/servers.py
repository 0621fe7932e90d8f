"""Each tunnel's DNS server: from the config, or found where the firmware keeps it.

tunnel_director.tunnels.<t>.dns is
  * a list of addresses: the first one answers the tunnel's clients (a DNAT has one target);
  * "router": the clients keep the router's resolver (today's behaviour, a known leak);
  * "auto" (default): on Asuswrt-Merlin, a WireGuard client wgcN's DNS from nvram `wgcN_dns`,
    an OpenVPN client ovpncN's pushed servers from the `server=` lines of
    /etc/openvpn/clientN/client.resolv (the file Merlin writes when the server pushes DNS).
    Elsewhere nothing is known: the clients keep the router's resolver and `check` says so.
Every address found is validated like a configured one before it can reach a command line.
"""

from __future__ import annotations

import os
import re
import subprocess

from ..record import Record
from ..tools import which

from .. import config as cfgmod
from ..patterns import compiled

WGC_RE = compiled(r"^wgc([1-9][0-9]?)$")
OVPNC_RE = compiled(r"^ovpnc([1-9][0-9]?)$")
OVPN_RESOLV = "/etc/openvpn/client{n}/client.resolv"
RESOLV_MAX = 64 << 10  # a client.resolv is a few lines
CONFIG, ROUTER, UNKNOWN = "config", "router", "unknown"


class TunnelDns(Record, frozen=True):
    tunnel: str
    servers: tuple[str, ...]  # validated IPv4 addresses; the first is the DNAT target
    source: str  # "config", "router", "unknown", "nvram wgc1_dns" or the client.resolv path
    problem: str | None = None  # why "auto" found nothing usable, in a few words

    @property
    def target(self):
        return self.servers[0] if self.servers else None


def nvram_get(name, env=None):
    """`nvram get NAME`, or None where there is no nvram command (not Asuswrt) or it fails.
    NAME is built from a tunnel name that matched WGC_RE."""
    env = os.environ if env is None else env
    exe = which("nvram", env.get("PATH"))
    if exe is None:
        return None
    try:
        p = subprocess.run([exe, "get", name], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           universal_newlines=True, timeout=10, env=env)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout if p.returncode == 0 else None


def parse_nvram(text):
    """Addresses in an nvram DNS value ("10.64.0.1", "1.1.1.1,8.8.8.8", "1.1.1.1 8.8.8.8")."""
    return [w for w in re.split(r"[\s,]+", text or "") if w]


def parse_resolv(text):
    """Addresses of the `server=ADDRESS` lines of a dnsmasq-style client.resolv (per-domain
    `server=/domain/address` lines are someone's split DNS: not the tunnel's resolver)."""
    out = []
    for line in (text or "").splitlines():
        line = line.strip()
        if line.startswith("server=") and not line.startswith("server=/"):
            out.append(line[len("server="):].split("#")[0].strip())
    return out


def _valid(words):
    """The usable addresses among `words`, in order, without repeats; and the unusable ones."""
    good, bad = [], []
    for w in words:
        a = cfgmod.resolver_address(w)
        if a is None:
            bad.append(w)
        elif a not in good:
            good.append(a)
    return good, bad


def auto(name, nvram=nvram_get, resolv=OVPN_RESOLV):
    """TunnelDns for a tunnel with dns "auto"."""
    m = WGC_RE.match(name)
    if m:
        key = "wgc%s_dns" % m.group(1)
        text = nvram(key)
        if text is None:
            return TunnelDns(name, (), UNKNOWN, "no nvram here (not Asuswrt-Merlin)")
        good, bad = _valid(parse_nvram(text))
        if good:
            return TunnelDns(name, tuple(good), "nvram " + key)
        why = "nvram %s is empty" % key if not bad else "nvram %s holds no IPv4 address (%s)" % (key, ", ".join(bad))
        return TunnelDns(name, (), UNKNOWN, why)
    m = OVPNC_RE.match(name)
    if m:
        path = resolv.format(n=m.group(1))
        try:
            with open(path, errors="replace") as fh:
                text = fh.read(RESOLV_MAX)
        except OSError:
            return TunnelDns(name, (), UNKNOWN, "%s does not exist (no DNS pushed, or not Asuswrt-Merlin)" % path)
        good, _ = _valid(parse_resolv(text))
        if good:
            return TunnelDns(name, tuple(good), path)
        return TunnelDns(name, (), UNKNOWN, "%s has no server= line with an IPv4 address" % path)
    return TunnelDns(name, (), UNKNOWN, "not a wgcN or ovpncN table: nothing to look up")


def resolve(cfg, look_up=True, nvram=nvram_get, resolv=OVPN_RESOLV):
    """{tunnel name: TunnelDns} for every tunnel. With look_up False (offline callers that must
    not read the firmware's state), "auto" finds nothing."""
    out = {}
    for t in cfg.tunnels:
        if t.table == cfgmod.MAIN_TABLE:
            out[t.name] = TunnelDns(t.name, (), ROUTER, "table main: its clients leave by the WAN")
        elif isinstance(t.dns, list):
            out[t.name] = TunnelDns(t.name, tuple(t.dns), CONFIG)
        elif t.dns == "router":
            out[t.name] = TunnelDns(t.name, (), ROUTER)
        elif look_up:
            out[t.name] = auto(t.name, nvram, resolv)
        else:
            out[t.name] = TunnelDns(t.name, (), UNKNOWN, "not looked up")
    return out
