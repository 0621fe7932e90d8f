"""The `webui` config section: whether the web UI runs, where it listens, its certificate and the
password file it checks logins against.

Read by config.validate through `check(c, raw)`, which reports problems on the shared checker
(each with its JSON path). Imported on every run of the program, so it stays small: a plain
class, no other imports than these.
"""

import ipaddress
import os
import re

KNOWN = {"enabled", "port", "listen", "hosts", "cert_file", "key_file", "shadow_file"}
DEFAULT_PORT = 8444
DEFAULT_SHADOW = "/etc/shadow"
HOST_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                     r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


class WebSettings:
    """The web UI's settings; `listen` None means the LAN interface's address and 127.0.0.1."""

    def __init__(self):
        self.enabled = True
        self.port = DEFAULT_PORT
        self.listen = None  # [IPv4 address text] or None
        self.hosts = []  # more host names the browser may use (the Host header allow-list)
        self.cert_file = None  # None: <data_dir>/web/cert.pem, generated on first start
        self.key_file = None
        self.shadow_file = DEFAULT_SHADOW

    def cert_path(self, data_dir):
        return self.cert_file or os.path.join(data_dir, "web", "cert.pem")

    def key_path(self, data_dir):
        return self.key_file or os.path.join(data_dir, "web", "key.pem")


def check(c, raw):
    """WebSettings from the raw `webui` object; problems go to checker c."""
    s = WebSettings()
    section = c.obj(raw, "webui")
    c.unknown(section, "webui", "webui")
    s.enabled = c.boolean(section.get("enabled"), "webui.enabled", True)
    s.port = c.integer(section.get("port"), "webui.port", DEFAULT_PORT, 1, 65535)
    if section.get("listen") is not None:
        s.listen = _listen(c, section.get("listen"))
    for i, name in enumerate(c.lst(section.get("hosts"), "webui.hosts")):
        if not isinstance(name, str) or not HOST_RE.match(name):
            c.err("webui.hosts[%d]" % i, "%r is not a host name" % (name,))
        else:
            s.hosts.append(name.lower())
    s.cert_file = c.path(section.get("cert_file"), "webui.cert_file", None)
    s.key_file = c.path(section.get("key_file"), "webui.key_file", None)
    if (s.cert_file is None) != (s.key_file is None):
        c.err("webui", "cert_file and key_file go together: give both, or neither (one is generated)")
    s.shadow_file = c.path(section.get("shadow_file"), "webui.shadow_file", DEFAULT_SHADOW)
    return s


def _listen(c, raw):
    out = []
    if not isinstance(raw, list) or not raw:
        c.err("webui.listen", "must be a non-empty list of IPv4 addresses, got %r" % (raw,))
        return None
    for i, item in enumerate(raw):
        p = "webui.listen[%d]" % i
        try:
            addr = ipaddress.IPv4Address(item)
        except (ValueError, TypeError):
            c.err(p, "%r is not an IPv4 address" % (item,))
            continue
        if addr.is_unspecified or addr.is_multicast or str(addr) == "255.255.255.255":
            c.err(p, "%s would listen on every interface (the WAN too): give the LAN address" % addr)
        elif str(addr) in out:
            c.err(p, "%s is listed twice" % addr)
        else:
            out.append(str(addr))
    return out
