"""The web UI's TLS certificate: the configured one, or a self-signed one made on first start
with the `openssl` command (Asuswrt-Merlin ships it; on Debian it is the `openssl` package).

Its names (subjectAltName) are the addresses the UI listens on and the router's host names, so a
browser that is told to trust it accepts it for each. The key is written 0600. The SHA-256
fingerprint is what a user compares before accepting the browser's warning.
"""

import hashlib
import ipaddress
import os
import re
import shutil
import ssl
import subprocess
import tempfile

from ..tools import which
from . import WebError
from .settings import HOST_RE

OPENSSL_PATHS = ("/usr/sbin/openssl", "/usr/bin/openssl", "/opt/bin/openssl", "/usr/sbin/openssl11")
DAYS = 3650
CNF = """[req]
distinguished_name = dn
prompt = no
[dn]
CN = vpn-director
[v3_req]
subjectAltName = %s
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
"""
PEM_RE = re.compile(r"-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----")


def find_openssl():
    return which("openssl") or next((p for p in OPENSSL_PATHS if os.access(p, os.X_OK)), None)


def san(addresses, names):
    """The subjectAltName value; every item is checked (it goes into openssl's config file)."""
    items = []
    for a in addresses:
        items.append("IP:%s" % ipaddress.IPv4Address(a))
    for n in names:
        if HOST_RE.match(n):
            items.append("DNS:%s" % n)
    return ",".join(dict.fromkeys(items))


def ensure(cert_path, key_path, addresses, names, openssl=None, run=subprocess.run):
    """Make sure a certificate and key exist; returns True if they were generated now."""
    have_cert, have_key = os.path.exists(cert_path), os.path.exists(key_path)
    if have_cert and have_key:
        return False
    if have_cert != have_key:
        raise WebError("%s exists but %s does not: remove the one left, or give both (webui.cert_file, "
                       "webui.key_file)" % ((cert_path, key_path) if have_cert else (key_path, cert_path)))
    openssl = openssl or find_openssl()
    if not openssl:
        raise WebError("no TLS certificate at %s and no `openssl` command to make one: install openssl "
                       "(Entware: opkg install openssl-util; Debian: apt install openssl) or set "
                       "webui.cert_file and webui.key_file" % cert_path)
    directory = os.path.dirname(cert_path)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.makedirs(os.path.dirname(key_path), mode=0o700, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".vpd-cert-", dir=directory)
    except OSError as e:
        raise WebError("cannot write the certificate in %s: %s" % (e.filename or directory, e.strerror or e))
    try:
        cnf = os.path.join(tmp, "req.cnf")
        with open(cnf, "w") as fh:
            fh.write(CNF % san(addresses, names))
        key, crt = os.path.join(tmp, "key.pem"), os.path.join(tmp, "cert.pem")
        errors = []
        for newkey in (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"], ["-newkey", "rsa:2048"]):
            argv = [openssl, "req", "-x509"] + newkey + ["-nodes", "-sha256", "-days", str(DAYS), "-config", cnf,
                                                         "-extensions", "v3_req", "-keyout", key, "-out", crt]
            old = os.umask(0o077)
            try:
                p = run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
            finally:
                os.umask(old)
            if p.returncode == 0 and os.path.exists(key) and os.path.exists(crt):
                break
            errors.append((p.stderr or p.stdout or "exit %d" % p.returncode).strip().splitlines()[-1:])
        else:
            raise WebError("openssl could not make a certificate: %s" % "; ".join(" ".join(e) for e in errors))
        os.chmod(key, 0o600)
        os.chmod(crt, 0o644)
        os.replace(key, key_path)
        os.replace(crt, cert_path)
        return True
    except OSError as e:
        raise WebError("cannot write the certificate in %s: %s" % (directory, e.strerror or e))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fingerprint(cert_path):
    """SHA-256 of the certificate (DER), as browsers show it: "AB:CD:..."."""
    try:
        with open(cert_path) as fh:
            m = PEM_RE.search(fh.read())
    except OSError as e:
        raise WebError("cannot read %s: %s" % (cert_path, e.strerror or e))
    if not m:
        raise WebError("%s holds no PEM certificate" % cert_path)
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(m.group(0))).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def context(cert_path, key_path):
    """The server's TLS context (TLS 1.2 and up)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert_path, key_path)
    except (OSError, ssl.SSLError) as e:
        raise WebError("cannot use the certificate %s with key %s: %s" % (cert_path, key_path, e))
    return ctx
