"""Starting, stopping and watching the Xray process, per platform, as small backends.

  entware   Entware's /opt/etc/init.d/S24xray. Its rc.func starts Xray with output thrown away,
            calls any process named xray "already running" and stops with `killall xray`; with
            its stock `-confdir /opt/etc/xray` it merges every *.json there, so we keep ours the
            only one (problems() says when it is not).
  systemd   xray.service (the official installer's unit; it runs as `nobody`, so the config
            must be readable by that user's group).
  managed   neither: we run `<binary> run -c FILE` ourselves, detached, with a pid file in
            state_dir, Xray's output appended to its error log.

Each backend says whether it applies to this machine (`is_supported()`), where the config lives
by default, and how to restart. "auto" takes the first supported of entware, systemd, managed.
"""

import glob
import os
import signal
import subprocess
import time

from ..tools import which
from . import XrayError

ENTWARE_INIT = "/opt/etc/init.d/S24xray"
SEARCH = ("/opt/sbin", "/opt/bin", "/usr/local/bin", "/usr/bin", "/usr/sbin")


def binary_argv(side):
    """argv prefix of the configured xray command (absolute path, or a name searched in PATH and
    Entware's and the installer's directories)."""
    b = side.binary
    if b.startswith("/"):
        if not os.access(b, os.X_OK):
            raise XrayError("advanced.xray.binary %s is not an executable file" % b)
        return [b]
    found = which(b) or which(b, os.pathsep.join(SEARCH))
    if not found:
        raise XrayError("no %r command found (PATH, %s): install Xray (Entware: opkg install xray-core) or set "
                        "advanced.xray.binary" % (b, ", ".join(SEARCH)))
    return [found]


def listening(port, kinds=("tcp", "tcp6"), root="/proc/net"):
    """Whether a socket listens on `port` (TCP LISTEN state; any address)."""
    for kind in kinds:
        try:
            with open(os.path.join(root, kind)) as f:
                next(f, None)
                for line in f:
                    parts = line.split()
                    if len(parts) > 3 and parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        return True
        except OSError:
            continue
    return False


class Backend:
    name = ""
    config_mode = 0o600

    def __init__(self, cfg):
        self.cfg = cfg
        self.side = cfg.xray.side

    @staticmethod
    def is_supported():
        return False

    def default_config_path(self):
        raise NotImplementedError

    def restart(self):
        raise NotImplementedError

    def stop(self):
        raise NotImplementedError

    def running(self):
        raise NotImplementedError

    def problems(self, config_path):
        """Things on this machine that would make Xray run something else than our file."""
        return []

    def prepare_file(self, path):
        """Called on a freshly written config before it is moved into place."""
        os.chmod(path, self.config_mode)

    def _run(self, argv, what):
        try:
            r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise XrayError("%s: %s" % (what, e))
        if r.returncode != 0:
            tail = r.stdout.decode(errors="replace").strip().splitlines()[-1:] or ["exit %d" % r.returncode]
            raise XrayError("%s failed: %s" % (what, tail[0]))


class Entware(Backend):
    name = "entware"

    @staticmethod
    def is_supported():
        return os.path.isfile(ENTWARE_INIT)

    def default_config_path(self):
        return "/opt/etc/xray/config.json"

    def restart(self):
        self._run([ENTWARE_INIT, "restart"], ENTWARE_INIT + " restart")

    def stop(self):
        self._run([ENTWARE_INIT, "stop"], ENTWARE_INIT + " stop")

    def running(self):
        return _pids_named("xray") != []

    def problems(self, config_path):
        d = os.path.dirname(config_path)
        others = sorted(p for p in glob.glob(os.path.join(d, "*.json")) if p != config_path)
        if others:
            return ["%s also holds %s: S24xray's -confdir merges every *.json there (move them away)"
                    % (d, ", ".join(os.path.basename(p) for p in others))]
        return []


class Systemd(Backend):
    name = "systemd"
    config_mode = 0o640  # root:nogroup; the unit runs Xray as nobody

    @staticmethod
    def is_supported():
        if not which("systemctl") or not os.path.isdir("/run/systemd/system"):
            return False
        return any(os.path.isfile(os.path.join(d, "xray.service"))
                   for d in ("/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system"))

    def default_config_path(self):
        return "/usr/local/etc/xray/config.json"

    def restart(self):
        self._run(["systemctl", "restart", "xray.service"], "systemctl restart xray")

    def stop(self):
        self._run(["systemctl", "stop", "xray.service"], "systemctl stop xray")

    def running(self):
        return subprocess.run(["systemctl", "is-active", "--quiet", "xray.service"]).returncode == 0

    def prepare_file(self, path):
        os.chmod(path, self.config_mode)
        try:
            import grp
            os.chown(path, 0, grp.getgrnam("nogroup").gr_gid)
        except (KeyError, OSError):
            pass


class Managed(Backend):
    """We run Xray: `<binary> run -c FILE`, in its own session, pid in state_dir/xray.pid."""

    name = "managed"

    @staticmethod
    def is_supported():
        return True

    def default_config_path(self):
        return os.path.join(self.cfg.data_dir, "xray", "config.json")

    @property
    def pid_file(self):
        return os.path.join(self.cfg.state_dir, "xray.pid")

    def _pid(self):
        try:
            with open(self.pid_file) as f:
                pid = int(f.read().strip())
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
        except (OSError, ValueError):
            return None
        # a recycled pid runs something else: only ours has our config path on its command line
        return pid if config_path(self.cfg, self).encode() in argv else None

    def running(self):
        return self._pid() is not None

    def stop(self):
        pid = self._pid()
        if pid is None:
            return
        try:
            os.killpg(pid, signal.SIGTERM)
        except OSError:
            pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and os.path.exists("/proc/%d" % pid) and _alive(pid):
            time.sleep(0.05)
        if _alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            os.unlink(self.pid_file)
        except OSError:
            pass

    def restart(self):
        self.stop()
        path = config_path(self.cfg, self)
        log = error_log(self.cfg, self)
        os.makedirs(os.path.dirname(log), mode=0o700, exist_ok=True)
        with open(log, "ab") as out:
            try:
                p = subprocess.Popen(binary_argv(self.side) + ["run", "-c", path], stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=out, start_new_session=True, close_fds=True)
            except OSError as e:
                raise XrayError("cannot start Xray: %s" % e)
        os.makedirs(self.cfg.state_dir, mode=0o700, exist_ok=True)
        with open(self.pid_file, "w") as f:
            f.write("%d\n" % p.pid)


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(") ", 1)[1][:1] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _pids_named(name):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/comm" % d) as f:
                    if f.read().strip() == name:
                        out.append(int(d))
            except OSError:
                continue
    return out


BACKENDS = {"entware": Entware, "systemd": Systemd, "managed": Managed}


def pick(cfg):
    """The backend the config asks for, or the first supported one for "auto"."""
    want = cfg.xray.side.service
    if want != "auto":
        return BACKENDS[want](cfg)
    for cls in (Entware, Systemd, Managed):
        if cls.is_supported():
            return cls(cfg)


def config_path(cfg, backend=None):
    return cfg.xray.side.config_path or (backend or pick(cfg)).default_config_path()


def error_log(cfg, backend=None):
    """Where the generated config tells Xray to write its errors (the service's user must be able
    to write there: the systemd unit runs Xray as nobody, whose log directory the installer made)."""
    if cfg.xray.side.error_log:
        return cfg.xray.side.error_log
    if (backend or pick(cfg)).name == "systemd":
        return "/var/log/xray/error.log"
    return os.path.join(cfg.state_dir, "xray-error.log")
