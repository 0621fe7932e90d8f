"""Right after boot: wait as configured, then give the LAN and the tunnels a bounded time to come up."""

import os
import time

from . import config as cfgmod
from . import state
from .patterns import compiled

SYS_NET = "/sys/class/net"
IFF_UP = 0x1
# Merlin's OpenVPN client N routes through table ovpncN but its interface is tun1N.
OVPN_CLIENT_RE = compiled(r"^ovpnc([1-9])$")


def tunnel_interfaces(name):
    """Interfaces that may carry the tunnel whose table is `name`; [] for `main` and numbers."""
    if name == "main" or name.isdigit() or not cfgmod.IFNAME_RE.match(name):
        return []
    m = OVPN_CLIENT_RE.match(name)
    return [name] + (["tun1" + m.group(1)] if m else [])


def is_up(ifname, sys_net=SYS_NET):
    try:
        with open(os.path.join(sys_net, ifname, "flags")) as fh:
            return bool(int(fh.read().strip(), 16) & IFF_UP)
    except (OSError, ValueError):
        return False


def needed(cfg):
    """[(what, [interface candidates], consequence)]: the LAN, then each tunnel that has clients."""
    items = [("LAN interface", [cfg.lan_interface], "the PREROUTING jumps match it once it is up")]
    for tun, clients in cfgmod.effective(cfg)[1]:
        ifs = tunnel_interfaces(tun.name)
        if clients and ifs:
            items.append(("tunnel %s" % tun.name, ifs, "its table has no route until it is up"))
    return items


def prepare(cfg, log, sleep=time.sleep, clock=time.monotonic, sys_net=SYS_NET):
    """The configured boot wait, then bounded waits for the interfaces; never fatal."""
    booting = state.uptime() < cfg.boot_min_time
    state.boot_wait(cfg.boot_min_time, cfg.boot_wait_delay, log, sleep)
    if booting:
        return wait_interfaces(needed(cfg), cfg.boot_interface_wait, log, sleep, clock, sys_net)
    return []


def wait_interfaces(items, timeout, log, sleep=time.sleep, clock=time.monotonic, sys_net=SYS_NET, poll=0.5):
    """Wait up to `timeout` seconds until each item has an interface up; log and return the rest."""
    deadline = clock() + timeout
    while True:
        missing = [item for item in items if not any(is_up(i, sys_net) for i in item[1])]
        left = deadline - clock()
        if not missing or left <= 0:
            break
        sleep(min(poll, left))
    for what, ifs, consequence in missing:
        log("%s: %s not up after %ds; applying anyway (%s)" % (what, " or ".join(ifs), timeout, consequence))
    return missing
