"""Which live ip rules and routes are ours: exact selectors only.

A rule or route belongs to vpn-director when the record in state_dir lists it (every apply
records what it creates, before creating it) or when it is exactly one the config asks for.
Anything else — even in our priority range, even with our mark mask — is somebody else's:
`status` and `check --live` report it, apply and stop never remove it. A record written by an
older version holds no rules; then, and only then, the exact shape we create at our priorities
is taken as ours, so an upgrade can still clean up behind itself.
"""


from .desired import XRAY_ROUTE_ADD, XRAY_ROUTE_SHOWN
from .model import XRAY
from .patterns import compiled

# The only rule shape we create: "from all fwmark 0xM/0xK lookup T" (as `ip -N rule show` prints it).
OUR_SHAPE_RE = compiled(r"^from all fwmark 0x[0-9a-f]+/0x[0-9a-f]+ lookup \d+$")
MARK_RE = compiled(r"fwmark (0x[0-9a-f]+)(?:/(0x[0-9a-f]+))?")


def legacy(record):
    """A record from before rules and routes were recorded (an upgrade)."""
    return bool(record) and "rules" not in record


def recorded_rules(record):
    """{(pref, text): component} from the record."""
    out = {}
    for item in record.get("rules", []):
        out[(item[0], item[1])] = item[2]
    return out


def rules(full, live, record):
    """{(pref, text): component} for every live ip rule that is ours."""
    wanted = {(r.pref, r.text): r.component for r in full.rules}
    known = recorded_rules(record)
    own = full.ownership
    out = {}
    for pref, text in live.rules:
        key = (pref, text)
        comp = known.get(key) or wanted.get(key)
        if comp is None and legacy(record) and OUR_SHAPE_RE.match(text):
            comp = own.rule_component(pref, text)
        if comp:
            out[key] = comp
    return out


def recorded_routes(record):
    """[(table, add, shown, component)] from the record."""
    return [tuple(item) for item in record.get("routes", [])]


def route_tables(record, own):
    """Tables besides the config's Xray table that hold a route of ours (a changed route_table)."""
    return sorted({t for t, _, _, _ in recorded_routes(record) if t != own.route_table})


def routes(full, live, record):
    """[(table, add, shown, component)] for every live route that is ours."""
    out = {(r.table, r.add, r.shown, r.component) for r in full.routes
           if r.shown in live.routes.get(r.table, [])}
    for table, add, shown, comp in recorded_routes(record):
        if shown in live.routes.get(table, []):
            out.add((table, add, shown, comp))
    if legacy(record):
        t = full.ownership.route_table
        if XRAY_ROUTE_SHOWN in live.routes.get(t, []):
            out.add((t, XRAY_ROUTE_ADD, XRAY_ROUTE_SHOWN, XRAY))
    return sorted(out)


def marks_of(text):
    """(mark, mask) a rule matches on, or None."""
    m = MARK_RE.search(text)
    if not m:
        return None
    return int(m.group(1), 16), int(m.group(2) or "0xffffffff", 16)


def catches(text, mark):
    """Does a rule with this text see packets carrying `mark`? (its other selectors aside)"""
    mm = marks_of(text)
    return mm is not None and (mark & mm[1]) == mm[0]


def foreign_ahead(d, live, ours):
    """Live rules that are not ours but catch one of our marks at or before our own rule for it:
    [(pref, text, mark)]. They decide where our clients' packets go."""
    out = []
    for r in d.rules:
        if r.action:
            continue  # a guard only refuses: whatever decides first is reported for the lookup
        for pref, text in live.rules:
            if (pref, text) not in ours and pref <= r.pref and catches(text, r.mark):
                out.append((pref, text, r.mark))
    return out

