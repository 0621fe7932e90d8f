"""The lab's real-Xray rows: a LAN client's TCP and UDP through our TPROXY rules into a real
Xray-core that vpn-director itself configured (`xray import`, `xray use`), then Shadowsocks-2022
to a real Xray server in the WAN namespace, which alone dials the destination.

Needs the Xray-core Python package (vpn_director.xray.embedded); without it the table keeps the
transparent stand-in's rows only. The proof is the server's own access log: each probe's
destination appears there as accepted, and the answer comes back to the client.
"""

import base64
import json
import os
import subprocess
import time
import urllib.parse

from .xray import embedded

SERVER_PORT = 8388
PROBE_HTTP = ("8.8.8.8", 80)  # `xray use` probes http://8.8.8.8/generate_204 through the proxy
METHOD = "2022-blake3-aes-128-gcm"


def available():
    return embedded.available()


def _xray_command(workdir):
    path = os.path.join(workdir, "xray")
    with open(path, "w") as f:
        f.write("#!/bin/sh\nexec %s \"$@\"\n" % " ".join(embedded.command()))
    os.chmod(path, 0o755)
    return path


def _wait_listen(lab, ns, port, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lab._run(["ip", "netns", "exec", ns, "ss", "-Hltn", "sport = :%d" % port], check=False).stdout.strip():
            return True
        time.sleep(0.1)
    return False


def start_server(lab, address):
    """A real Xray Shadowsocks-2022 server in the WAN namespace; returns (share link, access log)."""
    key = base64.b64encode(os.urandom(16)).decode()
    log = os.path.join(lab.workdir, "xray-server.access.log")
    cfg = {"log": {"loglevel": "info", "access": log, "error": log + ".err"},
           "inbounds": [{"tag": "ss-in", "listen": address, "port": SERVER_PORT, "protocol": "shadowsocks",
                         "settings": {"method": METHOD, "password": key, "network": "tcp,udp"}}],
           "outbounds": [{"tag": "direct", "protocol": "freedom", "settings": {}}]}
    path = os.path.join(lab.workdir, "xray-server.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    argv = ["ip", "netns", "exec", lab.wan] + embedded.command() + ["run", "-c", path]
    lab.procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=lab.env()))
    http = subprocess.Popen(["ip", "netns", "exec", lab.wan] + lab._agent("http", *map(str, PROBE_HTTP)),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, universal_newlines=True, env=lab.env())
    lab.procs.append(http)
    if http.stdout.readline().strip() != "ready" or not _wait_listen(lab, lab.wan, SERVER_PORT):
        raise RuntimeError("the lab's Xray server did not start")
    link = "ss://%s:%s@%s:%d#lab%%20server%%20(ss-2022)" % (METHOD, urllib.parse.quote(key, safe=""), address,
                                                            SERVER_PORT)
    return link, log


def accepted(log):
    try:
        with open(log) as f:
            return [ln for ln in f if " accepted " in ln]
    except OSError:
        return []


def rows(lab, raw, client, role, port):
    """Switch the lab router to real Xray and probe from `client`: table rows (..., ok)."""
    server_addr = lab.wan_address
    link, log = start_server(lab, server_addr)
    raw = json.loads(json.dumps(raw))
    ax = raw.setdefault("advanced", {}).setdefault("xray", {})
    ax.update({"service": "managed", "binary": _xray_command(lab.workdir),
               "probe_url": "http://%s:%d/generate_204" % PROBE_HTTP})
    lab.write_config(raw)
    lab.stop_xray()  # the transparent stand-in gives the TPROXY port to the real Xray
    for args in (("xray", "import", link), ("xray", "use", "1")):
        p = lab.vpd(*args)
        if p.returncode != 0:
            raise RuntimeError("vpn-director %s: %s" % (" ".join(args[:2]), (p.stderr or p.stdout).strip()))
    out = []
    for proto in ("tcp", "udp"):
        before = len(accepted(log))
        answer = lab.probe(client, [{"dst": "8.8.8.8", "port": port, "proto": proto}], timeout=3.0)[0]
        seen = [ln for ln in accepted(log)[before:] if "%s:8.8.8.8:%d" % (proto, port) in ln]
        ok = answer == "wan 8.8.8.8:%d" % port and bool(seen)
        observed = "%s; server log: %s" % (answer, "accepted" if seen else "nothing")
        out.append((client, role, "8.8.8.8", proto, "real Xray → ss-2022 server → wan", observed, ok))
    return out
