"""The prober's binary, config and process: a throw-away Xray of our own for `xray test`.

The binary is the configured xray hard-linked as vpd-xray-probe (beside it, or in
<state_dir>/probe/, copied there across filesystems; see prober_binary): Entware's init script finds Xray with `pidof xray` and stops it
with `killall xray`, so a process of that other name is never taken for the live Xray or killed
with it (BusyBox's pidof also reads /proc/PID/exe, which a symlink would not change). The
process runs in its own session and is stopped through its process group, never by name.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import time

from .. import state
from . import XrayError, probelog, service, socks, switch

BINARY = "vpd-xray-probe"
PORTS = (20800, 29999)  # where the inbounds go: below the kernel's ephemeral range
STOP_WAIT = 5


def probe_dir(cfg):
    return os.path.join(cfg.state_dir, "probe")


def prober_binary(cfg, argv=None):
    """The prober's executable: a hard link of the xray binary named vpd-xray-probe, made again
    when the binary changed (an upgrade replaces the file).

    First beside the binary (/opt/sbin/vpd-xray-probe on Entware: on its disk, no extra space);
    where that directory cannot take it, <state_dir>/probe/vpd-xray-probe, a hard link or, on
    another filesystem, a copy. The copy costs the binary's size in state_dir — RAM on a router
    whose state_dir is in /tmp — which is why it comes last."""
    src = os.path.realpath((argv or service.binary_argv(cfg.xray.side))[0])
    try:
        s = os.stat(src)
    except OSError as e:
        raise XrayError("cannot read the xray binary %s: %s" % (src, e.strerror or e))
    beside = os.path.join(os.path.dirname(src), BINARY)
    if _same(beside, s) or _place(src, beside, copy=False):
        return beside
    d = probe_dir(cfg)
    state.ensure_dir(cfg.state_dir)
    state.ensure_dir(d)
    dst = os.path.join(d, BINARY)
    if _same(dst, s, or_copy=True):
        return dst
    if not _place(src, dst, copy=True):
        raise XrayError("cannot make the prober binary %s from %s" % (dst, src))
    return dst


def _same(path, s, or_copy=False):
    """Whether `path` is still the binary `s` (the same file; or, for a copy, same size and time)."""
    try:
        t = os.stat(path)
    except OSError:
        return False
    if not t.st_mode & 0o100:
        return False
    return (t.st_dev, t.st_ino) == (s.st_dev, s.st_ino) or (
        or_copy and (t.st_size, int(t.st_mtime)) == (s.st_size, int(s.st_mtime)))


def _place(src, dst, copy):
    """Hard-link (or, if `copy`, copy when linking fails) src to dst atomically; False if neither."""
    tmp = dst + ".new"
    remove(tmp)
    try:
        try:
            os.link(src, tmp)
        except OSError:  # EXDEV (another filesystem), a read-only directory, no hard links there
            if not copy:
                return False
            shutil.copy2(src, tmp)
        os.replace(tmp, dst)
        return True
    except OSError:
        remove(tmp)
        return False


def config(outbounds, ports, log):
    """The prober's config (plain data): outbounds and ports map a candidate's index N to its
    outbound and its SOCKS port; in-N is routed to out-N, anything else to block."""
    inbounds, outs, rules = [], [{"tag": "block", "protocol": "blackhole", "settings": {}}], []
    for n in sorted(outbounds):
        inbounds.append({"tag": "in-%d" % n, "listen": "127.0.0.1", "port": ports[n], "protocol": "socks",
                         "settings": {"auth": "noauth", "udp": False}})
        ob = outbounds[n]
        outs.append(dict([("tag", "out-%d" % n)] + [(k, v) for k, v in ob.items() if k != "tag"]))
        rules.append({"type": "field", "inboundTag": ["in-%d" % n], "outboundTag": "out-%d" % n})
    outs.append({"tag": "direct", "protocol": "freedom", "settings": {}})
    return {"log": {"loglevel": "info", "access": "none", "error": log}, "inbounds": inbounds, "outbounds": outs,
            "routing": {"domainStrategy": "AsIs", "rules": rules}}


def write_config(path, data):
    """A config file, 0600 (it holds the candidates' credentials)."""
    state.write_atomic(path, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8"), mode=0o600)


def free_ports(n, avoid=(), span=PORTS):
    """n consecutive ports on 127.0.0.1 that nothing listens on or holds (a bind test)."""
    base = span[0]
    while base + n - 1 <= span[1]:
        for i in range(n):
            if base + i in avoid or not _bindable(base + i):
                base += i + 1
                break
        else:
            return list(range(base, base + n))
    raise XrayError("no %d free consecutive ports in %d-%d for the prober" % (n, span[0], span[1]))


def _bindable(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


class Prober:
    """One running prober for `outbounds` (index N -> outbound), as a context manager: started
    (listening on every inbound) on entry, its process group stopped on exit."""

    def __init__(self, cfg, outbounds, binary=None):
        self.cfg = cfg
        self.outbounds = dict(outbounds)
        self.dir = probe_dir(cfg)
        self.binary = binary or prober_binary(cfg)
        self.path = os.path.join(self.dir, "probe.json")
        self.log = os.path.join(self.dir, "probe.log")
        self.pid_file = os.path.join(self.dir, "prober.pid")
        self.ports = {}
        self.proc = None

    def start(self):
        self._kill_leftover()
        ports = free_ports(len(self.outbounds), avoid=(self.cfg.xray.tproxy_port, self.cfg.xray.side.socks_port))
        self.ports = dict(zip(sorted(self.outbounds), ports))
        write_config(self.path, config(self.outbounds, self.ports, self.log))
        open(self.log, "wb").close()
        with open(os.path.join(self.dir, "prober.out"), "wb") as out:
            try:
                self.proc = subprocess.Popen([self.binary, "run", "-c", self.path], stdin=subprocess.DEVNULL,
                                             stdout=out, stderr=out, start_new_session=True, close_fds=True)
            except OSError as e:
                raise XrayError("cannot start the prober %s: %s" % (self.binary, e.strerror or e))
        state.write_atomic(self.pid_file, b"%d\n" % self.proc.pid, mode=0o600)
        self._wait_listening(self.cfg.xray.side.start_timeout)
        return self

    def _wait_listening(self, timeout):
        deadline = time.monotonic() + timeout
        missing = list(self.ports.values())
        while True:
            missing = [p for p in missing if not service.listening(p)]
            if not missing:
                return
            if exited(self.proc):
                raise XrayError("the prober exited at its start%s" % _says(self.why()))
            if time.monotonic() >= deadline:
                raise XrayError("the prober does not listen on %d port(s) after %ds%s"
                                % (len(missing), timeout, _says(self.why())))
            time.sleep(0.05)

    def why(self):
        """Xray's last error line in its log or its output ("" if none)."""
        why = switch.log_tail(self.log, 0)
        if not why:
            lines = probelog.read_text(os.path.join(self.dir, "prober.out"), 1 << 16).strip().splitlines()
            why = lines[-1] if lines else ""
        return why

    def _kill_leftover(self):
        """A prober of a run that died (SIGKILL, power) still running: its group goes."""
        try:
            with open(self.pid_file) as f:
                pid = int(f.read().strip())
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                ours = self.path.encode() in f.read().split(b"\0")
        except (OSError, ValueError):
            return
        if ours:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass

    def stop(self):
        """SIGTERM to the prober's process group, SIGKILL to what is left once the leader has
        exited (or after STOP_WAIT); the leader is reaped last, so its pid, the group's id,
        cannot have been reused by then."""
        if self.proc is not None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.proc.pid, sig)
                except OSError:
                    pass
                deadline = time.monotonic() + STOP_WAIT
                while sig == signal.SIGTERM and not exited(self.proc) and time.monotonic() < deadline:
                    time.sleep(0.02)
            self.proc.wait()
            self.proc = None
        for path in (self.pid_file, self.path):  # the config holds the candidates' credentials
            remove(path)

    def get(self, n, url, timeout):
        """(HTTP status, ms) of GET url through candidate n's inbound (socks.SocksError)."""
        return socks.http_get(self.ports[n], url, timeout)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()


def exited(proc):
    """Whether proc has exited, without reaping it (its pid stays its group's id until stop)."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _says(why):
    return ": %s" % why if why else ""


def remove(path):
    """Unlink path if it is there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
