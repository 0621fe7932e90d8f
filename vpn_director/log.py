"""Logging for runs nobody watches (hooks, cron, boot): syslog with the tag `vpn-director`, and an
optional size-capped file. The terminal output (stdout/stderr) stays with cli.Output."""

import os
import stat

from .patterns import compiled

TAG = "vpn-director"
SYSLOG_SOCKET = "/dev/log"
FILE_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(message)s"
FILE_LINE_RE = compiled(rb"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \[\d+\] ")  # a FILE_FORMAT line
DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40  # logging's levels

# What setup()/configure() asked for. The `logging` module (and its handlers, which import
# socket) is loaded only when a record is really written: the per-minute watchdog that finds
# nothing to do writes none, and so does not pay for it.
_wanted = {"level": INFO, "syslog": None, "file": None}
_logger = None


def _handlers():
    """logging's handler classes, defined on first use."""
    import logging
    from logging.handlers import RotatingFileHandler, SysLogHandler

    class Quiet:
        """A log that cannot be written must never fail or clutter the run it describes."""

        def handleError(self, record):
            pass

    class Syslog(Quiet, SysLogHandler):
        pass

    class CappedFile(Quiet, RotatingFileHandler):
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
    return logging, Syslog, CappedFile


def _log():
    """The logger with the handlers asked for, made on the first record written."""
    global _logger
    if _logger is None:
        logging, Syslog, CappedFile = _handlers()
        logger = logging.getLogger(TAG)
        logger.propagate = False
        logger.setLevel(_wanted["level"])
        for h in list(logger.handlers):
            logger.removeHandler(h)
        logger.addHandler(logging.NullHandler())
        if _wanted["syslog"]:
            try:
                h = Syslog(address=_wanted["syslog"], facility=Syslog.LOG_USER)
                h.setFormatter(logging.Formatter(TAG + "[%(process)d]: %(message)s"))
                logger.addHandler(h)
            except OSError:
                pass
        if _wanted["file"]:
            path, max_bytes = _wanted["file"]
            try:
                h = CappedFile(path, maxBytes=max_bytes, backupCount=1, encoding="utf-8")
                h.setFormatter(logging.Formatter(FILE_FORMAT))
                logger.addHandler(h)
            except OSError:
                pass
        _logger = logger
    return _logger


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
    """Send records to syslog. `VPD_SYSLOG` names another socket, or `off`. Returns the socket's
    address when records will go there, else None.

    Under systemd (JOURNAL_STREAM set) stdout/stderr already reach the journal, so syslog
    would only duplicate them.
    """
    reset()
    _wanted["level"] = DEBUG if verbose else INFO
    address = env.get("VPD_SYSLOG") or SYSLOG_SOCKET
    if address == "off" or (env.get("JOURNAL_STREAM") and "VPD_SYSLOG" not in env):
        return None
    if not os.path.exists(address):
        return None  # no syslog daemon (a container, a router still booting)
    _wanted["syslog"] = address
    return address


def configure(syslog=True, path=None, max_bytes=256 * 1024):
    """Apply the config's `advanced.log`: syslog on/off, and a file capped at about 2 x max_bytes
    (the file and one rotated copy, `.1`). Returns a warning, or None."""
    _close()
    if not syslog:
        _wanted["syslog"] = None
    if not path:
        return None
    for p in (path, path + ".1"):
        if not is_our_log(p):
            return "log file %s: %s is not a vpn-director log, so it is left alone; logging to the file is off" % (
                path, "it" if p == path else p)
    try:  # opened now, so that a problem is a warning of this run, not a silent loss later
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640))
    except OSError as e:
        return "log file %s: %s; logging to it is off" % (path, e.strerror or e)
    _wanted["file"] = (path, max_bytes)
    return None


def reset():
    _close()
    _wanted.update(level=INFO, syslog=None, file=None)


def _close():
    global _logger
    if _logger is not None:
        for h in list(_logger.handlers):
            _logger.removeHandler(h)
            h.close()
        _logger = None


def _emit(level, msg):
    if level >= _wanted["level"] and (_wanted["syslog"] or _wanted["file"]):
        _log().log(level, msg)


def debug(msg):
    _emit(DEBUG, msg)


def info(msg):
    _emit(INFO, msg)


def warning(msg):
    _emit(WARNING, msg)


def error(msg):
    _emit(ERROR, msg)


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
