"""What the bot asks of the rest of vpn-director, one method each: the same reports, edits and
Xray actions the command line uses (reports, ops, xray.actions), never a second copy of them.
Tests replace a Router to count or fake these calls."""

import http.client
import ipaddress
import os
import socket
import time
import urllib.parse

from .. import config, log

OBSERVE = ("tunnel", "list")  # subjects of alerts.Alerts


class Router:
    def __init__(self, path):
        self.path = path

    def config(self):
        return config.load(self.path)

    def status(self, cfg):
        from .. import reports
        from ..ops import names, txn
        return reports.status_report(cfg, txn.tools_for(cfg), names=names.load(cfg))

    def trace(self, cfg, src, dst):
        """trace --json's verdict from SRC (an address, a device name or a MAC: ops.names.source)."""
        from .. import reports
        from ..ops import names
        return reports.trace_report(cfg, names.source(src, cfg)[0], dst)

    def edit(self, change):
        """One config edit through the operations layer (validate, write, apply, history)."""
        from ..ops import txn
        return txn.run(self.path, change)

    def resolve(self, cfg, token):
        """A trace's source device -> (its /32 network, note); OpsError for a subnet or an unknown name."""
        from ..ops import names
        addr, note = names.source(token, cfg)
        return ipaddress.IPv4Network(addr), note

    def clients(self, cfg):
        from ..ops import clients, names
        return clients.rows(cfg, names.load(cfg))

    def devices(self, cfg):
        """The clients and every other device with a DHCP lease or a name (ops.devices)."""
        from ..ops import devices
        return devices.rows(cfg)

    def logs(self, cfg, lines):
        return log.tail(cfg.log_file, lines) if cfg.log_file else None

    def servers(self, cfg):
        """xray servers' rows (xray.actions.server_rows): no credentials."""
        from ..xray import actions
        return actions.server_rows(cfg)

    def use(self, cfg, key):
        from ..xray import actions
        return actions.use(cfg, key)

    def import_text(self, cfg, text):
        from ..xray import actions
        counts, added, known = actions.import_text(cfg, text)
        return actions.counts_text(counts), added, known, bool(counts.get("stored"))

    def ip(self, cfg, url, timeout=8.0):
        """[(path, address or None, why not)]: direct, through Xray's SOCKS inbound, per tunnel."""
        from ..xray import socks
        out = [("direct", _ip(url, lambda h, p, t: socket.create_connection((h, p), t), timeout))]
        if config.xray_enabled(cfg):
            port = cfg.xray.side.socks_port
            out.append(("xray", _ip(url, lambda h, p, t: socks.connect(port, h, p, t), timeout)))
        for tun in cfg.tunnels:
            if tun.table != config.MAIN_TABLE:
                out.append((tun.name, _ip(url, _marked(cfg.td_mark(tun.slot)), timeout)))
        return out

    def alert_inputs(self, cfg, since):
        """(states {subject: (state, detail)}, new Xray events, last drift repair time) for alerts."""
        from .. import listcache, watchdog
        from ..xray import events
        found = {}
        if "tunnel" in watchdog.active(cfg.state_dir):
            try:
                found.update(self._tunnels(cfg))
            except Exception as e:  # noqa: B902 - a failed read must not stop the bot
                log.warning("bot: tunnel states not read: %s" % e)
        max_age = cfg.telegram.alerts.list_max_age_h * 3600
        try:
            used = listcache.used(cfg)
        except Exception:  # noqa: B902
            used = []
        for cc in used:
            fetched = listcache.read_meta(cfg.data_dir, cc).get("fetched_epoch")
            if isinstance(fetched, (int, float)):
                age = time.time() - fetched
                found["list " + cc] = ("stale" if age > max_age else "fresh", "%d" % (age // 3600))
        try:
            with open(os.path.join(cfg.state_dir, watchdog.LAST)) as fh:
                drift = float(fh.read().strip())
        except (OSError, ValueError):
            drift = None
        return found, events.read(cfg.state_dir, since), drift

    def _tunnels(self, cfg):
        from .. import engine, killswitch, reports
        from ..ops import txn
        tools = txn.tools_for(cfg)
        full, _ = engine.build(cfg, reports.recorded(cfg))
        current = engine.read(tools, cfg, reports.recorded(cfg), full=full)
        return {"tunnel " + s["tunnel"]: (s["state"].split()[-1].lower(), s.get("kernel", ""))
                for s in killswitch.tunnel_states(tools, cfg, full, current)}


def _marked(mark):
    def connect(host, port, timeout):
        addr = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)[0][4]
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_MARK", 36), mark)
            s.settimeout(timeout)
            s.connect(addr)
        except OSError:
            s.close()
            raise
        return s
    return connect


def _ip(url, opener, timeout):
    """(address, None) from a plain-text "what is my IP" answer, or (None, why)."""
    import ssl
    from ..xray import socks
    from .transport import _Conn
    u = urllib.parse.urlsplit(url)
    context = ssl.create_default_context() if u.scheme == "https" else None
    conn = _Conn(u.hostname, u.port or (443 if context else 80), opener, context, timeout)
    try:
        conn.request("GET", u.path or "/", headers={"User-Agent": "vpn-director", "Connection": "close"})
        resp = conn.getresponse()
        text = resp.read(256).decode("ascii", "replace").strip()
    except (OSError, socks.SocksError, ValueError, http.client.HTTPException) as e:  # a bad answer too
        return None, getattr(e, "strerror", None) or str(e) or type(e).__name__
    finally:
        conn.close()
    try:
        return str(ipaddress.ip_address(text)), None
    except ValueError:
        return None, "HTTP %d, not an address" % resp.status
