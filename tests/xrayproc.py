"""Real Xray-core processes for tests: the `xray` command (the Xray-core package behind
vpn_director.xray.embedded), a Shadowsocks-2022 server and a far HTTP host, inside a namespace."""

import base64
import json
import os
import subprocess
import sys
import time

from vpn_director.xray import embedded


def xray_command(directory):
    """An executable `xray` in `directory` that runs the embedded Xray-core with this interpreter.
    The instance's process is named after the script's name (`pidof xray`; a hard link of it
    named vpd-xray-probe gives `pidof vpd-xray-probe`)."""
    path = os.path.join(str(directory), "xray")
    with open(path, "w") as f:
        f.write("#!/bin/sh\nVPD_XRAY_NAME=\"${0##*/}\" exec %s -m vpn_director.xray.embedded \"$@\"\n"
                % sys.executable)
    os.chmod(path, 0o755)
    return path


def ss_key(seed):
    """A Shadowsocks-2022 aes-128 key (16 bytes, base64), different per seed."""
    return base64.b64encode(bytes((seed * 7 + i) % 256 for i in range(16))).decode()


def wait_port(ns, port, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = ns.run(["ss", "-Hltn", "sport = :%d" % port], check=False).stdout
        if out.strip():
            return
        time.sleep(0.1)
    raise AssertionError("nothing listens on %d in %s after %ds" % (port, ns.name, timeout))


class XrayProcess:
    """`xray run -c FILE` inside namespace `ns`; stopped by the cleanup registered first."""

    def __init__(self, cleanup, ns, workdir, name, cfg):
        self.proc = None
        cleanup(self.stop)
        self.path = os.path.join(str(workdir), name + ".json")
        self.log = os.path.join(str(workdir), name + ".access.log")
        cfg = dict(cfg, log={"loglevel": "info", "access": self.log, "error": self.log + ".err"})
        with open(self.path, "w") as f:
            json.dump(cfg, f)
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns.name] + embedded.command() + ["run", "-c", self.path],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def accepted(self):
        try:
            with open(self.log) as f:
                return [ln for ln in f if "accepted" in ln]
        except OSError:
            return []

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def ss_server(cleanup, ns, workdir, listen, inbounds):
    """A Shadowsocks-2022 server: inbounds = [(tag, port, key)]; freedom out."""
    cfg = {"inbounds": [{"tag": tag, "listen": listen, "port": port, "protocol": "shadowsocks",
                         "settings": {"method": "2022-blake3-aes-128-gcm", "password": key, "network": "tcp,udp"}}
                        for tag, port, key in inbounds],
           "outbounds": [{"tag": "direct", "protocol": "freedom", "settings": {}}]}
    srv = XrayProcess(cleanup, ns, workdir, "ss-server", cfg)
    for _, port, _ in inbounds:
        wait_port(ns, port)
    return srv


FAR_SERVER = r'''
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(sys.argv[3], "a") as f:
            f.write("%s %s\n" % (self.client_address[0], self.path))
        code = int(sys.argv[4]) if len(sys.argv) > 4 else 204 if self.path.startswith("/generate_204") else 200
        body = b"" if code == 204 else b"far host\n"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
'''


class FarHost:
    """An HTTP host at a public-looking address inside the namespace (Xray's freedom refuses to dial
    private and documentation ranges through a proxy inbound): 204 on /generate_204, a body otherwise;
    with `status`, that status on every path (a captive portal answers 200 to /generate_204)."""

    def __init__(self, cleanup, ns, workdir, address="8.8.8.8", port=80, status=None):
        self.proc = None
        cleanup(self.stop)
        self.address, self.port = address, port
        self.log = os.path.join(str(workdir), "far-%s.log" % address)
        open(self.log, "w").close()
        ns.sh("ip addr add %s/32 dev lo" % address)
        argv = [sys.executable, "-c", FAR_SERVER, address, str(port), self.log] + ([str(status)] if status else [])
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns.name] + argv, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_port(ns, port)

    def seen(self):
        with open(self.log) as f:
            return [ln.split() for ln in f if ln.strip()]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()



def vpd_in(ns, config):
    """`vpn-director -c CONFIG ARGS...` inside namespace ns: vpd(*args, check=N, input=TEXT)."""
    def vpd(*args, check=None, input=None):
        p = ns.run([sys.executable, "-m", "vpn_director", "-c", config] + list(args), check=False, input=input)
        if check is not None:
            assert p.returncode == check, "exit %d\n%s\n%s" % (p.returncode, p.stdout, p.stderr)
        return p
    return vpd
