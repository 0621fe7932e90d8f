"""state_dir: the run lock, the record of what we own, the applied-state hash, the boot wait."""

import errno
import fcntl
import hashlib
import json
import os
import tempfile
import time
from contextlib import contextmanager

from .errors import LockError

RECORD = "state.json"
HASH = "tun_dir_rules.sha256"  # name kept from the shell tool


def ensure_dir(path):
    os.makedirs(path, mode=0o700, exist_ok=True)


@contextmanager
def locked(state_dir, timeout, poll=0.1):
    """Serialise runs: wait up to `timeout` seconds for the lock instead of skipping the run."""
    ensure_dir(state_dir)
    fd = os.open(os.path.join(state_dir, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise LockError("another vpn-director run held %s for %ds; giving up"
                                    % (os.path.join(state_dir, "lock"), timeout))
                time.sleep(poll)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def write_atomic(path, text, mode=0o600):
    d = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load_record(state_dir):
    try:
        with open(os.path.join(state_dir, RECORD)) as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def save_record(state_dir, record, digest):
    ensure_dir(state_dir)
    data = dict(record, hash=digest)
    write_atomic(os.path.join(state_dir, RECORD), json.dumps(data, indent=1, sort_keys=True) + "\n")
    write_atomic(os.path.join(state_dir, HASH), digest + "\n")


def digest(*texts):
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()


def uptime():
    try:
        with open("/proc/uptime") as fh:
            return float(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 1e9


def boot_wait(min_time, wait_delay, log, sleep=time.sleep):
    """Right after boot the WAN and tunnels are still coming up: wait as configured."""
    up = uptime()
    if up < min_time and wait_delay > 0:
        log("uptime %.0fs < %ds: waiting %ds before the first apply" % (up, min_time, wait_delay))
        sleep(wait_delay)
