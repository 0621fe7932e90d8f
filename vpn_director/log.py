"""Logging for runs nobody watches (hooks, cron, boot): syslog with the tag `vpn-director`, and an
optional size-capped file. The terminal output (stdout/stderr) stays with cli.Output."""

import logging
import os
import re
import stat
from logging.handlers import RotatingFileHandler, SysLogHandler

TAG = "vpn-director"
SYSLOG_SOCKET = "/dev/log"
LOGGER = logging.getLogger(TAG)
LOGGER.propagate = False
LOGGER.addHandler(logging.NullHandler())
FILE_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(message)s"
FILE_LINE_RE = re.compile(rb"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \[\d+\] ")  # a FILE_FORMAT line


class _Quiet:
    """A log that cannot be written must never fail or clutter the run it describes."""

    def handleError(self, record):
        pass


class _Syslog(_Quiet, SysLogHandler):
    pass


class _CappedFile(_Quiet, RotatingFileHandler):
    def _open(self):
        # The file lists client addresses: not world-readable.
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        return os.fdopen(fd, "a", encoding="utf-8")

    def doRollover(self):
        # Rotating deletes the old `.1`: if something else sits there now, stop writing instead
        # (the next run's configure() says why).
        if not is_our_log(self.baseFilename + ".1"):
            self.addFilter(lambda record: False)
            return
        super().doRollover()


def is_our_log(path):
    """True if `path` is missing, empty, or a regular file whose first line is one of ours: only
    such a file may be rotated or deleted (a typo must not rename the firewall-start script)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as fh:
            head = fh.readline(256)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return not head or bool(FILE_LINE_RE.match(head))


def setup(verbose=False, env=os.environ):
    """Send records to syslog. `VPD_SYSLOG` names another socket, or `off`.

    Under systemd (JOURNAL_STREAM set) stdout/stderr already reach the journal, so syslog
    would only duplicate them.
    """
    reset()
    LOGGER.setLevel(logging.DEBUG if verbose else logging.INFO)
    address = env.get("VPD_SYSLOG") or SYSLOG_SOCKET
    if address == "off" or (env.get("JOURNAL_STREAM") and "VPD_SYSLOG" not in env):
        return None
    if not os.path.exists(address):
        return None  # no syslog daemon (a container, a router still booting)
    try:
        handler = _Syslog(address=address, facility=SysLogHandler.LOG_USER)
    except OSError:
        return None
    handler.setFormatter(logging.Formatter(TAG + "[%(process)d]: %(message)s"))
    LOGGER.addHandler(handler)
    return handler


def configure(syslog=True, path=None, max_bytes=256 * 1024):
    """Apply the config's `advanced.log`: syslog on/off, and a file capped at about 2 x max_bytes
    (the file and one rotated copy, `.1`). Returns a warning, or None."""
    if not syslog:
        for h in [h for h in LOGGER.handlers if isinstance(h, SysLogHandler)]:
            _remove(h)
    if not path:
        return None
    for p in (path, path + ".1"):
        if not is_our_log(p):
            return "log file %s: %s is not a vpn-director log, so it is left alone; logging to the file is off" % (
                path, "it" if p == path else p)
    try:
        handler = _CappedFile(path, maxBytes=max_bytes, backupCount=1, encoding="utf-8")
    except OSError as e:
        return "log file %s: %s; logging to it is off" % (path, e.strerror or e)
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    LOGGER.addHandler(handler)
    return None


def reset():
    for h in list(LOGGER.handlers):
        if not isinstance(h, logging.NullHandler):
            _remove(h)


def _remove(handler):
    LOGGER.removeHandler(handler)
    handler.close()


def debug(msg):
    LOGGER.debug(msg)


def info(msg):
    LOGGER.info(msg)


def warning(msg):
    LOGGER.warning(msg)


def error(msg):
    LOGGER.error(msg)


def tail(path, lines=100, max_lines=2000):
    """The last `lines` lines of our log file (`advanced.log.file`, its rotated `.1` first), for
    the front ends' log views; [] when there is no file. Only a file of ours is read."""
    lines = max(1, min(int(lines), max_lines))
    found = []
    for p in (path + ".1", path) if path else ():
        if not os.path.exists(p) or not is_our_log(p):
            continue
        with open(p, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 256 * lines))  # long enough for `lines` ordinary lines
            found += fh.read().decode("utf-8", "replace").splitlines()[-lines:]
    return found[-lines:]
