"""Read the ip6tables filter table back, only when there is something to block or to remove:
a run with nothing routed and no IPv6 chain in the record spawns no ip6tables process."""

from __future__ import annotations

import os
from ..record import Record
from .. import live
from ..errors import ToolError
from . import RECORD_KEY, macs

IF_INET6 = "/proc/net/if_inet6"  # missing when the kernel has no IPv6


class V6Live(Record):
    state: live.LiveState | None  # the filter table; None when it could not be read
    problem: str | None = None  # why, in one line


def needed(cfg, record):
    """Block mode with a routed client, or IPv6 chains of ours in the record (to be removed)."""
    if (record.get(RECORD_KEY) or {}).get("chains"):
        return True
    return cfg.ipv6_mode == "block" and macs.any_routed(cfg)


def read(tools, cfg, record, counters=False, if_inet6=IF_INET6):
    """V6Live, or None when not needed."""
    if not needed(cfg, record):
        return None
    if not os.path.exists(if_inet6):
        return V6Live(None, "the kernel has no IPv6 (%s is missing): nothing to block" % if_inet6)
    try:
        text = tools.ip6tables_save(counters=counters)
    except ToolError as e:
        return V6Live(None, "routed clients' IPv6 is not blocked: %s" % e)
    state = live.LiveState()
    live.parse_iptables_save(text, state, table="filter")
    return V6Live(state)
