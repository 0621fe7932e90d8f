"""A real Xray-core proxy server in a lab namespace, and the hosts around it, for end-to-end tests.

The pieces (each one started by the test, each one stopped by it, every wait bounded):

  Pki(directory, ips)           a lab CA and a server certificate (openssl); cert_sha256 is the
                                value Xray's tlsSettings.pinnedPeerCertSha256 / a link's pcs= wants
  reality_keypair()             (private, public) X25519 keys as REALITY wants them (openssl)
  FarHost(behind, workdir, ...) "the internet": its own namespace behind `behind` (the WAN
                                namespace) with a public-looking address, an HTTP responder and
                                a UDP echo that log every request's source. `behind` reaches it
                                only from its own processes (the Xray server); packets forwarded
                                through `behind` (from the router, from LAN clients) are refused.
  XrayServer(ns, workdir, addr) the real Xray (vpn_director.xray.embedded) with VLESS+REALITY+
                                Vision, Trojan+WS+TLS, VMess+TCP, VMess+WS+TLS and Shadowsocks-2022
                                inbounds, a freedom outbound and an access log, plus REALITY's
                                target: a TLS 1.3 server on 127.0.0.1 in the same namespace; its
                                share links and the matching client outbounds
  XrayClient(ns, workdir, outs) a hand-written Xray client: one SOCKS5 inbound per outbound
  probe(ns, probes)             TCP (HTTP GET) and UDP probes from a namespace, direct or through
                                a SOCKS5 proxy (CONNECT / UDP ASSOCIATE); standard library only
  wait_for(what, timeout)       poll until what() is truthy (log lines come when Xray gives up)

In the lab (vpn_director.lab.Lab, config xray.servers ["203.0.113.10"]), register each stop
before its start:

    far = FarHost(lab.wan, tmp + "/far")                  # 1.1.1.1: tcp 80, udp 5353
    request.addfinalizer(far.stop); far.start()
    server = XrayServer(lab.wan, tmp + "/server", "203.0.113.10")
    request.addfinalizer(server.stop); server.start()
    server.links()["reality"]                             # vless://...#reality, for the product
    n = len(server.accepted())
    ... traffic ...
    server.accepted(n)   # ["... from 100.64.0.1:40000 accepted tcp:1.1.1.1:80 [reality >> direct]
                         #   email: reality@lab", ...]; far.seen() shows src far.gateway

Run as a script, this file is also the helper processes started inside the namespaces:
`far`, `tls-target` and `probe`.
"""

import base64
import hashlib
import json
import os
import secrets
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid

from vpn_director.xray.probeproc import exited
from vpn_director.xray.socks import recv_exact

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.abspath(__file__)
SNI = "proxy.lab.test"
# The inbounds an XrayServer has, in this order; the names are the inbound tags, the users'
# emails ("NAME@lab", seen in the access log), the link names and the keys of links()/outbound().
NAMES = ("reality", "trojan-ws", "vmess-tcp", "vmess-ws", "ss2022")
PORTS = {"reality": 443, "trojan-ws": 8443, "vmess-tcp": 10086, "vmess-ws": 8444, "ss2022": 8388}
TARGET_PORT = 9443  # REALITY's target, on 127.0.0.1 in the server's namespace
SS_METHOD = "2022-blake3-aes-128-gcm"
WS_PATHS = {"trojan-ws": "/trojan", "vmess-ws": "/vmess"}


class LabSetupError(Exception):
    pass


def env():
    """Environment for the helper processes: this checkout's vpn_director first."""
    return dict(os.environ, PYTHONPATH=ROOT)


def run(argv, ns=None, check=True, input=None, timeout=30):
    if ns:
        argv = ["ip", "netns", "exec", ns] + list(argv)
    p = subprocess.run(argv, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                       env=env())
    if check and p.returncode:
        raise LabSetupError("%s: %s" % (" ".join(argv), (p.stderr or p.stdout).decode(errors="replace").strip()))
    return p


def wait_for(what, timeout=5.0, interval=0.05):
    """what()'s first truthy value within `timeout` seconds, else its last value (falsy): for log
    lines that are written when a connection ends rather than when the probe returns."""
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def _local_addresses(ns):
    out = run(["ip", "-o", "-4", "addr", "show"], ns=ns).stdout.decode()
    return {line.split()[3].split("/")[0] for line in out.splitlines()}


def _readline(proc, timeout):
    """The first stdout line of a helper process ("ready"), within `timeout` seconds."""
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return buf.decode(errors="replace") + "<timeout>"
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    return buf.decode(errors="replace").split("\n")[0]


def _spawn(ns, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE):
    """A process in namespace `ns`, leading its own process group (stopped as a group)."""
    return subprocess.Popen(["ip", "netns", "exec", ns] + list(argv), stdout=stdout, stderr=stderr,
                            stdin=subprocess.DEVNULL, env=env(), start_new_session=True)


def _stop(proc, timeout=5):
    """End the process group `proc` leads: SIGTERM, then SIGKILL to all that is left once the
    leader has exited or after `timeout`. The leader is reaped last, so its pid (the group's id)
    cannot have been reused by another process when the group is killed."""
    if proc is None:
        return
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not exited(proc):
            time.sleep(0.02)
        try:  # the rest of the group (the embedded Xray's child) must not outlive it
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream:
            stream.close()


def _helper(ns, errfile, *args, ready_timeout=10):
    """A helper process of this file (far, tls-target) in `ns`, once it has said "ready"; its
    stderr goes to `errfile`."""
    with open(errfile, "ab") as err:
        proc = _spawn(ns, [sys.executable, HERE] + list(args), stderr=err)
    line = _readline(proc, ready_timeout)
    if line != "ready":
        _stop(proc)
        with open(errfile, errors="replace") as fh:
            raise LabSetupError("%s in %s did not start: %s %s" % (args[0], ns, line, fh.read()[-2000:]))
    return proc


# --- certificates and keys -------------------------------------------------------------------

class Pki:
    """A lab CA and a server certificate signed by it, made with the openssl command.

    Files (PEM): ca_cert, ca_key, cert, key, and fullchain (cert then ca_cert: what the lab's
    servers present). The server certificate's SAN holds DNS `names` and IP `ips`.
    cert_sha256 / ca_sha256: lowercase hex SHA-256 of the certificate's DER, which is what Xray
    hashes for pinnedPeerCertSha256 (transport/internet/tls/pin.go GenerateCertHash:
    sha256.Sum256(cert.Raw)). Pinning the leaf replaces all verification (no CA, no name check);
    pinning the CA verifies the chain to that CA with serverName (tls/config.go verifyPeerCert),
    and works only when the server presents the CA in its chain (verifyChain looks there)."""

    def __init__(self, directory, ips=(), names=(SNI,), days=3650):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        p = lambda name: os.path.join(directory, name)  # noqa: E731
        self.ca_cert, self.ca_key, self.cert, self.key = p("ca.crt"), p("ca.key"), p("server.crt"), p("server.key")
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        run(["openssl", "req", "-x509"] + ec + ["-days", str(days), "-subj", "/CN=vpn-director lab CA",
             "-keyout", self.ca_key, "-out", self.ca_cert,
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        run(["openssl", "req"] + ec + ["-subj", "/CN=%s" % names[0], "-keyout", self.key, "-out", p("server.csr")])
        san = ",".join(["DNS:%s" % n for n in names] + ["IP:%s" % a for a in ips])
        with open(p("ext.cnf"), "w") as fh:
            fh.write("subjectAltName=%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"
                     "keyUsage=critical,digitalSignature\n" % san)
        run(["openssl", "x509", "-req", "-in", p("server.csr"), "-CA", self.ca_cert, "-CAkey", self.ca_key,
             "-set_serial", str(secrets.randbits(63)), "-days", str(days), "-out", self.cert,
             "-extfile", p("ext.cnf")])
        self.fullchain = p("fullchain.crt")  # what the servers present: leaf, then the CA
        with open(self.fullchain, "w") as out:
            for path in (self.cert, self.ca_cert):
                with open(path) as fh:
                    out.write(fh.read())
        self.cert_sha256 = cert_sha256(self.cert)
        self.ca_sha256 = cert_sha256(self.ca_cert)


def cert_der(path):
    return run(["openssl", "x509", "-in", path, "-outform", "DER"]).stdout


def cert_sha256(path):
    """Lowercase hex SHA-256 of a PEM certificate's DER encoding."""
    return hashlib.sha256(cert_der(path)).hexdigest()


_X25519_PKCS8 = bytes.fromhex("302e020100300506032b656e04220420")
_X25519_SPKI = bytes.fromhex("302a300506032b656e032100")


def _b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def reality_keypair():
    """(private, public): an X25519 key pair from `openssl genpkey`, each the raw 32 bytes in
    base64url without padding (REALITY's privateKey on the server, publicKey / pbk= on clients)."""
    pem = run(["openssl", "genpkey", "-algorithm", "X25519"]).stdout
    priv = run(["openssl", "pkey", "-outform", "DER"], input=pem).stdout
    pub = run(["openssl", "pkey", "-pubout", "-outform", "DER"], input=pem).stdout
    if not (priv.startswith(_X25519_PKCS8) and len(priv) == 48 and pub.startswith(_X25519_SPKI) and len(pub) == 44):
        raise LabSetupError("unexpected X25519 DER from openssl: %s / %s" % (priv.hex(), pub.hex()))
    return _b64url(priv[-32:]), _b64url(pub[-32:])


# --- a running Xray ----------------------------------------------------------------------------

class _Xray:
    """One real Xray process (python -m vpn_director.xray.embedded run -c FILE) in a namespace."""

    def __init__(self, ns, workdir):
        self.ns = ns
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.config_path = os.path.join(workdir, "config.json")
        self.output = os.path.join(workdir, "xray.out")  # stdout/stderr of the process
        self.access_log = os.path.join(workdir, "access.log")
        self.error_log = os.path.join(workdir, "error.log")
        self.proc = None

    def config(self):
        raise NotImplementedError

    def listening(self):
        """[(proto, address, port)] that must be bound before the instance counts as up."""
        raise NotImplementedError

    def log_section(self):
        return {"loglevel": "info", "access": self.access_log, "error": self.error_log, "dnsLog": False}

    def start(self, timeout=20):
        if self.proc is not None:
            raise LabSetupError("already started")
        for path in (self.access_log, self.error_log):  # kept across restarts: accepted(since) stays valid
            open(path, "a").close()
        with open(self.config_path, "w") as fh:
            json.dump(self.config(), fh, indent=1)
        with open(self.output, "wb") as out:
            self.proc = _spawn(self.ns, [sys.executable, "-m", "vpn_director.xray.embedded", "run", "-c",
                                         self.config_path], stdout=out, stderr=subprocess.STDOUT)
        self.wait_listening(timeout)
        return self

    def wait_listening(self, timeout=20):
        """Until every port of listening() is bound in the namespace; LabSetupError after `timeout`
        or when the process exits (with its output)."""
        deadline = time.monotonic() + timeout
        want = set(self.listening())
        while True:
            if self.proc is None or exited(self.proc):
                raise LabSetupError("Xray in %s is not running: %s" % (self.ns, self._tail()))
            bound = set()
            for proto, flag in (("tcp", "-Hltn"), ("udp", "-Hlun")):
                for line in run(["ss", flag], ns=self.ns).stdout.decode().splitlines():
                    local = line.split()[3]
                    host, _, port = local.rpartition(":")
                    bound.add((proto, host.strip("[]"), int(port)))
            missing = {w for w in want if w not in bound and (w[0], "0.0.0.0", w[2]) not in bound
                       and (w[0], "*", w[2]) not in bound}
            if not missing:
                return
            if time.monotonic() > deadline:
                raise LabSetupError("Xray in %s: not listening on %s after %ss: %s"
                                    % (self.ns, sorted(missing), timeout, self._tail()))
            time.sleep(0.05)

    def _tail(self):
        text = ""
        for path in (self.output, self.error_log):
            try:
                with open(path, errors="replace") as fh:
                    text += fh.read()[-2000:]
            except OSError:
                pass
        return text.strip()

    def stop(self):
        """Stop the instance (idempotent)."""
        _stop(self.proc)
        self.proc = None

    def running(self):
        return self.proc is not None and not exited(self.proc)

    def _lines(self, path):
        try:
            with open(path, errors="replace") as fh:
                return fh.read().splitlines()
        except FileNotFoundError:
            return []

    def accepted(self, since=0):
        """The access log's "accepted" lines, from the since-th one on (pass len(accepted()) taken
        before an action to see only what that action added)."""
        return [line for line in self._lines(self.access_log) if " accepted " in line][since:]

    def errors(self, since=0):
        """The error log's lines (loglevel info), from the since-th one on."""
        return self._lines(self.error_log)[since:]

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class XrayServer(_Xray):
    """The real Xray as a proxy server in namespace `ns`, listening on `address` (added to the
    namespace's lo as a /32, and removed on stop, when no interface has it yet).

    Inbounds (tags = NAMES; ports = PORTS unless `ports` overrides; `names` picks a subset):
      reality    VLESS, flow xtls-rprx-vision, tcp, REALITY (target: a TLS 1.3 server on
                 127.0.0.1:target_port in `ns` with the lab certificate; serverNames [sni])
      trojan-ws  Trojan, ws path /trojan, TLS with the lab certificate
      vmess-tcp  VMess (AEAD), plain tcp
      vmess-ws   VMess, ws path /vmess, TLS with the lab certificate
      ss2022     Shadowsocks 2022-blake3-aes-128-gcm, tcp and udp
    Outbound: freedom. Xray 26.x's freedom refuses private and documentation-range targets for
    connections from these inbounds; allow_private=True adds finalRules [{"action":"allow"}],
    which is checked before that default rule (proxy/freedom/freedom.go matchFinalRule)."""

    def __init__(self, ns, workdir, address, pki=None, ports=None, names=NAMES, sni=SNI, allow_private=False,
                 target_port=TARGET_PORT):
        super().__init__(ns, workdir)
        self.address = address
        self.names = tuple(names)
        unknown = set(self.names) - set(NAMES)
        if unknown:
            raise ValueError("unknown inbounds: %s" % sorted(unknown))
        self.ports = dict(PORTS, **(ports or {}))
        self.sni = sni
        self.allow_private = allow_private
        self.target_port = target_port
        self.pki = pki or Pki(os.path.join(workdir, "pki"), ips=[address])
        self.ids = {n: str(uuid.uuid4()) for n in ("reality", "vmess-tcp", "vmess-ws")}
        self.trojan_password = secrets.token_urlsafe(16)
        self.ss_password = base64.b64encode(os.urandom(16)).decode()  # 16 bytes for aes-128
        self.reality_private, self.reality_public = reality_keypair()
        self.short_id = secrets.token_hex(4)
        self.target_log = os.path.join(workdir, "target.log")
        self.target = None
        self._added_address = False

    # --- configuration ---
    def _tls(self):
        return {"security": "tls", "tlsSettings": {"alpn": ["http/1.1"], "certificates": [
            {"certificateFile": self.pki.fullchain, "keyFile": self.pki.key}]}}

    def inbound(self, name):
        base = {"tag": name, "listen": self.address, "port": self.ports[name]}
        email = name + "@lab"
        if name == "reality":
            return dict(base, protocol="vless", settings={
                "clients": [{"id": self.ids[name], "flow": "xtls-rprx-vision", "email": email}], "decryption": "none"},
                streamSettings={"network": "tcp", "security": "reality", "realitySettings": {
                    "target": "127.0.0.1:%d" % self.target_port, "serverNames": [self.sni],
                    "privateKey": self.reality_private, "shortIds": [self.short_id]}})
        if name == "trojan-ws":
            return dict(base, protocol="trojan", settings={"clients": [{"password": self.trojan_password,
                                                                        "email": email}]},
                        streamSettings=dict({"network": "ws", "wsSettings": {"path": WS_PATHS[name]}}, **self._tls()))
        if name == "vmess-tcp":
            return dict(base, protocol="vmess", settings={"clients": [{"id": self.ids[name], "email": email}]},
                        streamSettings={"network": "tcp"})
        if name == "vmess-ws":
            return dict(base, protocol="vmess", settings={"clients": [{"id": self.ids[name], "email": email}]},
                        streamSettings=dict({"network": "ws", "wsSettings": {"path": WS_PATHS[name]}}, **self._tls()))
        if name == "ss2022":
            return dict(base, protocol="shadowsocks", settings={"method": SS_METHOD, "password": self.ss_password,
                                                                "email": email, "network": "tcp,udp"})
        raise KeyError(name)

    def config(self):
        freedom = {"tag": "direct", "protocol": "freedom", "settings": {}}
        if self.allow_private:
            freedom["settings"]["finalRules"] = [{"action": "allow"}]
        return {"log": self.log_section(), "inbounds": [self.inbound(n) for n in self.names],
                "outbounds": [freedom]}

    def listening(self):
        want = [("tcp", self.address, self.ports[n]) for n in self.names]
        if "ss2022" in self.names:
            want.append(("udp", self.address, self.ports["ss2022"]))
        return want

    # --- what a client needs ---
    def outbound(self, name, tag="proxy"):
        """The client outbound for inbound `name`, in the classic vnext/servers form."""
        a, p = self.address, self.ports[name]
        pinned = {"security": "tls", "tlsSettings": {"serverName": self.sni,
                                                     "pinnedPeerCertSha256": self.pki.cert_sha256}}
        if name == "reality":
            return {"tag": tag, "protocol": "vless", "settings": {"vnext": [{"address": a, "port": p, "users": [
                {"id": self.ids[name], "encryption": "none", "flow": "xtls-rprx-vision"}]}]},
                "streamSettings": {"network": "tcp", "security": "reality", "realitySettings": {
                    "serverName": self.sni, "fingerprint": "chrome", "publicKey": self.reality_public,
                    "shortId": self.short_id, "spiderX": "/"}}}
        if name == "trojan-ws":
            return {"tag": tag, "protocol": "trojan",
                    "settings": {"servers": [{"address": a, "port": p, "password": self.trojan_password}]},
                    "streamSettings": dict({"network": "ws", "wsSettings": {"path": WS_PATHS[name], "host": self.sni}},
                                           **pinned)}
        if name in ("vmess-tcp", "vmess-ws"):
            out = {"tag": tag, "protocol": "vmess", "settings": {"vnext": [{"address": a, "port": p, "users": [
                {"id": self.ids[name], "alterId": 0, "security": "auto"}]}]},
                "streamSettings": {"network": "tcp"}}
            if name == "vmess-ws":
                out["streamSettings"] = dict({"network": "ws", "wsSettings": {"path": WS_PATHS[name],
                                                                              "host": self.sni}}, **pinned)
            return out
        if name == "ss2022":
            return {"tag": tag, "protocol": "shadowsocks", "settings": {"servers": [
                {"address": a, "port": p, "method": SS_METHOD, "password": self.ss_password}]}}
        raise KeyError(name)

    def link(self, name):
        """The share link for inbound `name` (what a subscription would carry)."""
        a, p = self.address, self.ports[name]
        q = lambda d: urllib.parse.urlencode(d, quote_via=urllib.parse.quote, safe="")  # noqa: E731
        if name == "reality":
            return "vless://%s@%s:%d?%s#%s" % (self.ids[name], a, p, q({
                "type": "tcp", "encryption": "none", "security": "reality", "sni": self.sni, "fp": "chrome",
                "pbk": self.reality_public, "sid": self.short_id, "spx": "/", "flow": "xtls-rprx-vision"}), name)
        if name == "trojan-ws":
            return "trojan://%s@%s:%d?%s#%s" % (urllib.parse.quote(self.trojan_password, safe=""), a, p, q({
                "type": "ws", "path": WS_PATHS[name], "host": self.sni, "security": "tls", "sni": self.sni,
                "pcs": self.pki.cert_sha256}), name)
        if name in ("vmess-tcp", "vmess-ws"):
            body = {"v": "2", "ps": name, "add": a, "port": str(p), "id": self.ids[name], "aid": "0", "scy": "auto",
                    "net": "tcp", "type": "none", "host": "", "path": "", "tls": ""}
            if name == "vmess-ws":
                body.update(net="ws", host=self.sni, path=WS_PATHS[name], tls="tls", sni=self.sni,
                            pcs=self.pki.cert_sha256)
            return "vmess://" + base64.b64encode(json.dumps(body).encode()).decode()
        if name == "ss2022":  # SIP022: plain method:password, each percent-encoded
            return "ss://%s:%s@%s:%d#%s" % (SS_METHOD, urllib.parse.quote(self.ss_password, safe=""), a, p, name)
        raise KeyError(name)

    def links(self):
        return {n: self.link(n) for n in self.names}

    # --- running ---
    def start(self, timeout=20):
        if self.address not in _local_addresses(self.ns):
            run(["ip", "addr", "add", self.address + "/32", "dev", "lo"], ns=self.ns)
            self._added_address = True
        if "reality" in self.names and self.target is None:
            open(self.target_log, "w").close()
            self.target = _helper(self.ns, os.path.join(self.workdir, "target.err"), "tls-target",
                                  self.pki.fullchain, self.pki.key, "127.0.0.1", str(self.target_port),
                                  self.target_log)
        return super().start(timeout)

    def stop(self):
        super().stop()
        _stop(self.target)
        self.target = None
        if self._added_address:
            run(["ip", "addr", "del", self.address + "/32", "dev", "lo"], ns=self.ns, check=False)
            self._added_address = False

    def target_seen(self):
        """The TLS handshakes REALITY's target took part in: [{"src", "sni", "handshake": "ok" or
        the error (a client that rejects the lab certificate)}]. A client REALITY does not
        authenticate is passed through to the target."""
        return [json.loads(line) for line in self._lines(self.target_log) if line.strip()]


class XrayClient(_Xray):
    """A hand-written Xray client in namespace `ns`: for each (name, outbound) of `outbounds`, a
    SOCKS5 inbound (TCP and UDP) on 127.0.0.1 routed to that outbound. socks[name] is its
    "127.0.0.1:PORT"."""

    def __init__(self, ns, workdir, outbounds, first_port=10801):
        super().__init__(ns, workdir)
        self.outbounds = dict(outbounds)
        self.socks = {}
        self.ports = {}
        for i, name in enumerate(self.outbounds):
            self.ports[name] = first_port + i
            self.socks[name] = "127.0.0.1:%d" % (first_port + i)

    def config(self):
        inbounds, outbounds, rules = [], [], []
        for name, out in self.outbounds.items():
            inbounds.append({"tag": "in-" + name, "listen": "127.0.0.1", "port": self.ports[name],
                             "protocol": "socks", "settings": {"auth": "noauth", "udp": True, "ip": "127.0.0.1"}})
            outbounds.append(dict(json.loads(json.dumps(out)), tag="out-" + name))
            rules.append({"type": "field", "inboundTag": ["in-" + name], "outboundTag": "out-" + name})
        outbounds.append({"tag": "block", "protocol": "blackhole", "settings": {}})
        return {"log": self.log_section(), "inbounds": inbounds, "outbounds": outbounds,
                "routing": {"domainStrategy": "AsIs", "rules": rules}}

    def listening(self):
        return [("tcp", "127.0.0.1", p) for p in self.ports.values()]


# --- the "internet" host -----------------------------------------------------------------------

class FarHost:
    """A host of "the internet" that only the proxy server reaches.

    Its own namespace (`name`, default BEHIND-far<index>) hangs off namespace `behind` by a veth
    (behind: xfar<index> 10.254.<index>.1/30; far: eth0 10.254.<index>.2/30) and holds `address`
    (public-looking, default 1.1.1.1: an Xray server's freedom refuses private targets) and the
    `extra` addresses on its lo. In `behind` the addresses are routed to it, for `behind`'s own
    processes only: ip rules "to ADDR iif lo lookup main" then "to ADDR prohibit", so packets
    that `behind` would forward (from the router, from LAN clients) are refused there with an
    ICMP error. The far namespace has no default route either: it answers only the link.
    It runs an HTTP responder on tcp_port and a UDP echo on udp_port, on every address; seen()
    lists each request with its source."""

    RULE_PREF = 900

    def __init__(self, behind, workdir, address="1.1.1.1", tcp_port=80, udp_port=5353, extra=(), name=None,
                 index=0):
        self.behind = behind
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.address = address
        self.addresses = [address] + list(extra)
        self.tcp_port, self.udp_port = tcp_port, udp_port
        self.ns = name or "%s-far%d" % (behind, index)
        self.link = "xfar%d" % index
        self.gateway = "10.254.%d.1" % index  # behind's end of the link: the source the far host sees
        self.far_link = "10.254.%d.2" % index
        self.log = os.path.join(workdir, "far.log")
        self.proc = None
        self._rules = []
        self._ns_made = False

    def start(self):
        taken = set(self.addresses) & _local_addresses(self.behind)
        if taken:
            raise LabSetupError("%s already has %s: the far host would never be reached"
                                % (self.behind, ", ".join(sorted(taken))))
        run(["ip", "netns", "add", self.ns])
        self._ns_made = True
        far = lambda *a: run(["ip"] + list(a), ns=self.ns)  # noqa: E731
        near = lambda *a: run(["ip"] + list(a), ns=self.behind)  # noqa: E731
        far("link", "set", "lo", "up")
        near("link", "add", self.link, "type", "veth", "peer", "name", "eth0", "netns", self.ns)
        near("addr", "add", self.gateway + "/30", "dev", self.link)
        near("link", "set", self.link, "up")
        far("addr", "add", self.far_link + "/30", "dev", "eth0")
        far("link", "set", "eth0", "up")
        for a in self.addresses:
            far("addr", "add", a + "/32", "dev", "lo")
            near("route", "add", a + "/32", "via", self.far_link, "dev", self.link)
            for rule in (["to", a + "/32", "iif", "lo", "lookup", "main"], ["to", a + "/32", "prohibit"]):
                rule = rule + ["pref", str(self.RULE_PREF)]
                self._rules.append(rule)
                near("rule", "add", *rule)
        open(self.log, "w").close()
        self.proc = _helper(self.ns, os.path.join(self.workdir, "far.err"), "far", str(self.tcp_port),
                            str(self.udp_port), self.log)
        return self

    def stop(self):
        """Stop the responder, take the rules out of `behind`, delete the namespace (idempotent)."""
        _stop(self.proc)
        self.proc = None
        for rule in reversed(self._rules):
            run(["ip", "rule", "del"] + rule, ns=self.behind, check=False)
        self._rules = []
        if self._ns_made:  # deleting the namespace removes the veth pair and behind's routes over it
            run(["ip", "netns", "del", self.ns], check=False)
            self._ns_made = False

    def seen(self):
        """Requests answered so far: [{"proto": "tcp"|"udp", "src", "sport", "dst", "dport",
        "path" (tcp) or "data" (udp)}]."""
        try:
            with open(self.log) as fh:
                return [json.loads(line) for line in fh if line.strip()]
        except FileNotFoundError:
            return []

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# --- probes ------------------------------------------------------------------------------------

def probe(ns, probes, timeout=5.0):
    """Run `probes` from namespace `ns` in parallel, one result each. A probe is a dict:
      {"proto": "tcp", "dst": ADDR, "port": N, "path": "/x"}      HTTP GET, the body back
      {"proto": "udp", "dst": ADDR, "port": N, "data": "text"}    one datagram, the reply back
    plus "socks": "HOST:PORT" to go through a SOCKS5 proxy (CONNECT; UDP ASSOCIATE for udp).
    A result: {"ok": bool, "body": text (tcp: the HTTP body; udp: the reply), "error": text}."""
    p = run([sys.executable, HERE, "probe", json.dumps(probes), str(timeout)], ns=ns, timeout=timeout + 20)
    return json.loads(p.stdout.decode())


def _socks_handshake(sock, cmd, host, port):
    sock.sendall(b"\x05\x01\x00")
    if recv_exact(sock, 2, OSError) != b"\x05\x00":
        raise OSError("socks: no-auth refused")
    sock.sendall(b"\x05" + bytes([cmd]) + b"\x00\x01" + socket.inet_aton(host) + struct.pack(">H", port))
    head = recv_exact(sock, 4, OSError)
    if head[1] != 0:
        raise OSError("socks: reply %d" % head[1])
    if head[3] == 1:
        addr = socket.inet_ntoa(recv_exact(sock, 4, OSError))
    elif head[3] == 4:
        addr = socket.inet_ntop(socket.AF_INET6, recv_exact(sock, 16, OSError))
    else:
        addr = recv_exact(sock, recv_exact(sock, 1, OSError)[0], OSError).decode()
    return addr, struct.unpack(">H", recv_exact(sock, 2, OSError))[0]


def _http_complete(data):
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def _probe_one(pr, timeout):
    host, port = pr["dst"], int(pr["port"])
    via = pr.get("socks")
    try:
        if pr["proto"] == "tcp":
            if via:
                sh, sp = via.rsplit(":", 1)
                sock = socket.create_connection((sh, int(sp)), timeout=timeout)
                sock.settimeout(timeout)
                _socks_handshake(sock, 1, host, port)
            else:
                sock = socket.create_connection((host, port), timeout=timeout)
                sock.settimeout(timeout)
            with sock:
                sock.sendall(("GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" % (pr.get("path", "/"), host)).encode())
                data = b""
                while not _http_complete(data):  # not until EOF: a proxy passes the close on late
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.0 200"):
                return {"ok": False, "body": data.decode(errors="replace"), "error": "no HTTP answer"}
            return {"ok": True, "body": body.decode(errors="replace"), "error": ""}
        payload = pr.get("data", "ping").encode()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.settimeout(timeout)
        ctl = None
        try:
            if via:
                sh, sp = via.rsplit(":", 1)
                ctl = socket.create_connection((sh, int(sp)), timeout=timeout)
                ctl.settimeout(timeout)
                rh, rp = _socks_handshake(ctl, 3, "0.0.0.0", 0)
                if rh in ("0.0.0.0", "::"):
                    rh = sh
                udp.sendto(b"\x00\x00\x00\x01" + socket.inet_aton(host) + struct.pack(">H", port) + payload, (rh, rp))
                data = udp.recv(65536)
                if len(data) < 10 or data[3] != 1:
                    return {"ok": False, "body": data.hex(), "error": "bad socks udp reply"}
                data = data[10:]
            else:  # connected, so that an ICMP error ends the wait at once
                udp.connect((host, port))
                udp.send(payload)
                data = udp.recv(65536)
        finally:
            udp.close()
            if ctl:
                ctl.close()
        return {"ok": data == payload, "body": data.decode(errors="replace"), "error": ""}
    except socket.timeout:
        return {"ok": False, "body": "", "error": "timeout"}
    except OSError as e:
        return {"ok": False, "body": "", "error": e.strerror or str(e)}


# --- helper processes (run inside the namespaces) ----------------------------------------------

class _Log:
    def __init__(self, path):
        self.fh = open(path, "a")
        self.lock = threading.Lock()

    def write(self, **entry):
        with self.lock:
            self.fh.write(json.dumps(entry) + "\n")
            self.fh.flush()


def _serve_far(tcp_port, udp_port, log_path):
    log = _Log(log_path)
    tcp = socket.socket()
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("0.0.0.0", tcp_port))
    tcp.listen(64)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setsockopt(socket.IPPROTO_IP, 8, 1)  # IP_PKTINFO: answer from the address asked
    udp.bind(("0.0.0.0", udp_port))

    def http(conn, peer):
        with conn:
            conn.settimeout(5)
            req = b""
            try:
                while b"\r\n\r\n" not in req and len(req) < 8192:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    req += chunk
            except OSError:
                return
            dst = conn.getsockname()
            parts = req.split(b"\r\n", 1)[0].split()
            path = parts[1].decode(errors="replace") if len(parts) > 1 else ""
            log.write(proto="tcp", src=peer[0], sport=peer[1], dst=dst[0], dport=dst[1], path=path)
            if path.startswith("/generate_204"):  # the probe of `xray use`
                conn.sendall(b"HTTP/1.0 204 No Content\r\nConnection: close\r\n\r\n")
                return
            body = ("far %s:%d %s from %s\n" % (dst[0], dst[1], path, peer[0])).encode()
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n" % len(body) + body)

    def tcp_loop():
        while True:
            conn, peer = tcp.accept()
            threading.Thread(target=http, args=(conn, peer), daemon=True).start()

    def udp_loop():
        while True:
            data, anc, _, peer = udp.recvmsg(65536, socket.CMSG_SPACE(12))
            dst = ""
            for level, kind, value in anc:
                if level == socket.IPPROTO_IP and kind == 8:
                    dst = socket.inet_ntoa(value[8:12])
            log.write(proto="udp", src=peer[0], sport=peer[1], dst=dst, dport=udp_port,
                      data=data.decode(errors="replace"))
            cmsg = [(socket.IPPROTO_IP, 8, struct.pack("=I4s4s", 0, socket.inet_aton(dst), b"\0" * 4))] if dst else []
            try:
                udp.sendmsg([data], cmsg, 0, peer)
            except OSError:
                pass

    threading.Thread(target=tcp_loop, daemon=True).start()
    threading.Thread(target=udp_loop, daemon=True).start()
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


def _serve_tls_target(cert, key, host, port, log_path):
    """A TLS 1.3 web server (REALITY's target): answers any SNI with the lab certificate."""
    import ssl
    log = _Log(log_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    names = {}

    def sni_seen(sslobj, name, _ctx):
        names[id(sslobj)] = name

    ctx.sni_callback = sni_seen
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port))
    srv.listen(64)

    def handle(conn, peer):
        conn.settimeout(10)
        tls = ctx.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        try:
            try:
                tls.do_handshake()
            except (OSError, ssl.SSLError) as e:  # e.g. a client that rejects the lab certificate
                log.write(src=peer[0], sni=names.pop(id(tls), None), handshake=str(e))
                return
            log.write(src=peer[0], sni=names.pop(id(tls), None), handshake="ok", alpn=tls.selected_alpn_protocol())
            tls.recv(4096)
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: close\r\n\r\nlab target\n")
        except (OSError, ssl.SSLError):
            pass
        finally:
            tls.close()

    def loop():
        while True:
            conn, peer = srv.accept()
            threading.Thread(target=handle, args=(conn, peer), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


def _probe_main(probes, timeout):
    results = [None] * len(probes)

    def one(i):
        results[i] = _probe_one(probes[i], timeout)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(probes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(results))


def main(argv):
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})  # for sigwait, all threads
    cmd, args = argv[0], argv[1:]
    if cmd == "far":
        _serve_far(int(args[0]), int(args[1]), args[2])
    elif cmd == "tls-target":
        _serve_tls_target(args[0], args[1], args[2], int(args[3]), args[4])
    elif cmd == "probe":
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
        _probe_main(json.loads(args[0]), float(args[1]))
    else:
        raise SystemExit("usage: xraylab.py far|tls-target|probe ...")


if __name__ == "__main__":
    main(sys.argv[1:])
