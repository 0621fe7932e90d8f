"""<data_dir>/servers.json: the imported servers, where each came from, their addresses and status.

One JSON object, written atomically 0600 (it holds every server's credentials):

  {"version": 1,
   "servers": [{...a links.parse() Server..., "source": "manual" | "sub:<id>",
                "ips": ["203.0.113.7"], "status": {"latency_ms": 84, "checked": 1764600000, "error": ""}}],
   "sources": {"sub:<id>": {"updated": 1764600000, "count": 12, "userinfo": {...}, "error": ""}}}

A server's id is a hash of what it is (protocol, credentials, address, transport), not its
name, so a refresh that renames a server keeps its id, status and place. The routing core reads
only `addresses()`: every stored server's IPv4s go into the Xray servers set, so an import or a
refresh can never send a client's traffic for a proxy server into the proxy itself.
"""

import ipaddress
import json
import os

from .. import state
from . import XrayError

NAME = "servers.json"
MANUAL = "manual"


def path(data_dir):
    return os.path.join(data_dir, NAME)


def sub_source(sub_id):
    return "sub:" + sub_id


class Store:
    """The file's contents as plain data, with the few lookups the commands need."""

    def __init__(self, data=None):
        data = data or {}
        self.servers = list(data.get("servers", []))
        self.sources = dict(data.get("sources", {}))

    def to_json(self):
        return {"version": 1, "servers": self.servers, "sources": self.sources}

    def dumps(self):
        return json.dumps(self.to_json(), indent=1, ensure_ascii=False, sort_keys=False) + "\n"

    def by_id(self, server_id):
        for s in self.servers:
            if s["id"] == server_id:
                return s
        return None

    def find(self, key):
        """A server by id, by its number in `xray servers` ("3" or "#3"), or by its exact name."""
        key = key.strip()
        num = key[1:] if key.startswith("#") else key
        if num.isdigit() and 1 <= int(num) <= len(self.servers) and len(num) < 12:
            return self.servers[int(num) - 1]
        found = self.by_id(key.lower())
        if found:
            return found
        named = [s for s in self.servers if s.get("name") == key]
        if len(named) == 1:
            return named[0]
        if len(named) > 1:
            raise XrayError("%d servers are named %r: use the id or the number from `xray servers`"
                            % (len(named), key), exit_code=2)
        raise XrayError("no server %r: `xray servers` lists them" % key, exit_code=2)

    def from_source(self, source):
        return [s for s in self.servers if s.get("source") == source]

    def replace_source(self, source, servers, resolve):
        """Make `source`'s servers exactly `servers` (links.parse dicts), in their order. A server
        already stored (same id) keeps its status and addresses; new ones are resolved. Returns
        (added, removed) counts."""
        old = {s["id"]: s for s in self.from_source(source)}
        kept_elsewhere = {s["id"] for s in self.servers if s.get("source") != source}
        fresh, seen = [], set()
        for srv in servers:
            if srv["id"] in seen or srv["id"] in kept_elsewhere:
                continue
            seen.add(srv["id"])
            rec = dict(srv, source=source)
            prev = old.get(srv["id"])
            rec["ips"] = prev["ips"] if prev and prev.get("address") == srv["address"] and prev.get("ips") \
                else resolve(srv["address"])
            rec["status"] = prev.get("status", {}) if prev else {}
            fresh.append(rec)
        # the source's servers stay where the first of them was; new sources go last
        pos = next((i for i, s in enumerate(self.servers) if s.get("source") == source), len(self.servers))
        rest = [s for s in self.servers if s.get("source") != source]
        before = sum(1 for s in self.servers[:pos] if s.get("source") != source)
        self.servers = rest[:before] + fresh + rest[before:]
        return len(seen - set(old)), len(set(old) - seen)

    def add(self, source, servers, resolve):
        """Add servers to `source` (a manual import adds to what is there). Returns (added, known)."""
        have = {s["id"] for s in self.servers}
        added = [s for s in servers if s["id"] not in have]
        mine = self.from_source(source)
        self.replace_source(source, mine + added, resolve)
        return len({s["id"] for s in added}), len(servers) - len(added)

    def addresses(self):
        """Every server's well-formed IPv4 addresses, sorted: what the Xray servers set gets."""
        out = set()
        for s in self.servers:
            for a in s.get("ips") or []:
                try:
                    out.add(str(ipaddress.IPv4Address(a)))
                except ValueError:
                    continue
        return sorted(out, key=lambda a: ipaddress.IPv4Address(a))

    def remove_source(self, source):
        n = len(self.from_source(source))
        self.servers = [s for s in self.servers if s.get("source") != source]
        self.sources.pop(source, None)
        return n


def load(data_dir):
    """The store, or an empty one when there is no file yet."""
    p = path(data_dir)
    try:
        with open(p, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return Store()
    except OSError as e:
        raise XrayError("cannot read %s: %s" % (p, e.strerror or e))
    try:
        data = json.loads(raw.decode("utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("servers", []), list):
            raise ValueError("not a server store")
        for s in data.get("servers", []):
            if not isinstance(s, dict) or not isinstance(s.get("id"), str) or not isinstance(s.get("outbound"), dict):
                raise ValueError("a server entry without id or outbound")
    except ValueError as e:
        raise XrayError("%s is damaged (%s): move it away and import the servers again" % (p, e))
    return Store(data)


def raw_bytes(data_dir):
    """The file's exact bytes (None if absent): what a failed operation puts back."""
    try:
        with open(path(data_dir), "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def save(data_dir, store):
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    state.write_atomic(path(data_dir), store.dumps().encode("utf-8"), mode=0o600)


def put_back(data_dir, data):
    """Restore the exact bytes raw_bytes() returned (or remove a file that did not exist)."""
    if data is None:
        try:
            os.unlink(path(data_dir))
        except FileNotFoundError:
            pass
    else:
        state.write_atomic(path(data_dir), data, mode=0o600)


def addresses(data_dir, warn=lambda msg: None):
    """Every stored server's IPv4 addresses, for the Xray servers set. A damaged store is warned
    about and contributes nothing (the routing itself must still be applied)."""
    try:
        st = load(data_dir)
    except XrayError as e:
        warn(str(e))
        return []
    return st.addresses()


def resolve(host, lookup=None):
    """A server address -> its IPv4 addresses ([] if it does not resolve now; refreshed later)."""
    import socket  # only imports and refreshes resolve; every apply reads this module
    lookup = lookup or socket.getaddrinfo
    try:
        return [str(ipaddress.IPv4Address(host))]
    except ValueError:
        pass
    try:
        ipaddress.IPv6Address(host)
        return []  # the Xray servers set is IPv4; an IPv6 server never meets our IPv4 rules
    except ValueError:
        pass
    try:
        infos = lookup(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return sorted({i[4][0] for i in infos}, key=lambda a: ipaddress.IPv4Address(a))
