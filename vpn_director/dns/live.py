"""Read the nat and filter tables back, only when something of ours is or should be there: a
run with no tunnel resolver, no block_dot and no DNS chain in the record spawns no process."""

from __future__ import annotations

from ..record import Record, factory
from .. import live
from ..errors import ToolError
from . import RECORD_KEY


class DnsLive(Record):
    tables: dict[str, live.LiveState] = factory(dict)  # table -> its chains
    problem: str | None = None  # why a table could not be read, in one line


def needed(desired_tables, record):
    """The tables to read: those the desired state uses, and those the record has chains in."""
    rec = record.get(RECORD_KEY) or {}
    return [td.table for td in desired_tables if td.chains or rec.get(td.table)]


def read(tools, tables, counters=False):
    """DnsLive for `tables` (names), or None when there is nothing to read."""
    if not tables:
        return None
    out = DnsLive()
    for table in tables:
        try:
            text = tools.iptables_save(counters=counters, table=table)
        except ToolError as e:
            out.problem = "DNS rules not read: %s" % e
            return out
        state = live.LiveState()
        live.parse_iptables_save(text, state, table=table)
        out.tables[table] = state
    return out
