"""state_dir: the run lock, the record of what we own, the applied-state hash, the boot wait."""

import errno
import fcntl
import json
import os
import stat
import time
from contextlib import contextmanager

from .errors import LockError, StateError

RECORD = "state.json"
HASH = "tun_dir_rules.sha256"  # name kept from the shell tool


def ensure_dir(path):
    """Create state_dir 0700, or check that an existing one is safe to trust.

    The record in it decides what apply and stop delete, and its lock can hold every run back:
    a directory another user owns or may write to (e.g. pre-created in /tmp) is refused.
    """
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError as e:
        raise StateError("state_dir %s: %s" % (path, e.strerror or e))
    if not stat.S_ISDIR(st.st_mode):
        raise StateError("state_dir %s is not a directory" % path)
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise StateError("state_dir %s is owned by uid %d with mode %03o: it must belong to uid %d and not be "
                         "writable by others; remove it (vpn-director creates it 0700)"
                         % (path, st.st_uid, stat.S_IMODE(st.st_mode), os.geteuid()))


@contextmanager
def locked(state_dir, timeout, poll=0.1, say=None):
    """Serialise runs: wait up to `timeout` seconds for the lock instead of skipping the run.

    The holder writes its PID into the lock file, so a waiting run can say whom it waits for."""
    ensure_dir(state_dir)
    path = os.path.join(state_dir, "lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as e:
        raise StateError("lock %s: %s" % (path, e.strerror or e))
    try:
        deadline = time.monotonic() + timeout
        waiting = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                holder = _holder(fd)
                if time.monotonic() >= deadline:
                    raise LockError("another vpn-director run%s held %s for %ds; giving up"
                                    % (holder, path, timeout))
                if not waiting and say:
                    say("waiting up to %ds for another vpn-director run%s (lock %s)" % (timeout, holder, path))
                waiting = True
                time.sleep(poll)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, b"%d\n" % os.getpid(), 0)
        except OSError:
            pass  # only informative
        yield
    finally:
        os.close(fd)  # closing releases the flock


class Held(LockError):
    """pid_lock: another process holds the lock; `holder` is " (PID n)" when it wrote its PID, else ""."""

    def __init__(self, path, holder):
        super().__init__("%s is held by another process%s" % (path, holder))
        self.path, self.holder = path, holder


def pid_lock(path, mode=0o600):
    """One daemon at a time: an open fd holding an exclusive flock on `path` (not following a
    symlink), our PID written in it; closing the fd releases it. Held when another process holds
    it; any other OSError as it comes."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = _holder(fd)
        os.close(fd)
        if e.errno in (errno.EAGAIN, errno.EACCES):
            raise Held(path, holder)
        raise
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, b"%d\n" % os.getpid(), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _holder(fd):
    try:
        pid = os.pread(fd, 16, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return " (PID %s)" % pid if pid.isdigit() else ""


def write_atomic(path, text, mode=0o600):
    d = os.path.dirname(path) or "."
    try:
        import tempfile  # only runs that write load it
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    except OSError as e:
        raise StateError("cannot write %s: %s" % (path, e.strerror or e))
    try:
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise StateError("cannot write %s: %s" % (path, e.strerror or e))
        raise


def load_record(state_dir):
    """What earlier runs created. {} when there is none; a malformed one is an error, because
    guessing would either orphan our objects or take somebody else's."""
    path = os.path.join(state_dir, RECORD)
    try:
        with open(path) as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise StateError("%s is unreadable or not JSON (%s): run `vpn-director stop`, remove it, then apply"
                         % (path, getattr(e, "strerror", None) or e))
    problem = _record_problem(data)
    if problem:
        raise StateError("%s is malformed (%s): run `vpn-director stop`, remove it, then apply" % (path, problem))
    return data


def _record_problem(data):
    if not isinstance(data, dict):
        return "not an object"
    for key in ("sets", "chains"):
        v = data.get(key, {})
        if not isinstance(v, dict) or not all(isinstance(a, str) and isinstance(b, str) for a, b in v.items()):
            return "%s must map names to components" % key
    rules = data.get("rules", [])
    if not isinstance(rules, list) or not all(
            isinstance(r, list) and len(r) == 3 and isinstance(r[0], int) and isinstance(r[1], str)
            and isinstance(r[2], str) for r in rules):
        return "rules must be [priority, rule, component] triples"
    routes = data.get("routes", [])
    if not isinstance(routes, list) or not all(
            isinstance(r, list) and len(r) == 4 and isinstance(r[0], int)
            and all(isinstance(x, str) for x in r[1:]) for r in routes):
        return "routes must be [table, route, shown, component] lists"
    v6 = data.get("ipv6", {})
    if not isinstance(v6, dict) or not all(
            isinstance(v6.get(k, {}), dict) and all(isinstance(a, str) and isinstance(b, str)
                                                    for a, b in v6.get(k, {}).items()) for k in ("chains", "macs")):
        return "ipv6 must hold chains (name -> component) and macs (address -> MAC)"
    resolved = data.get("resolved", {})
    if not isinstance(resolved, dict) or not all(
            isinstance(v, list) and all(isinstance(a, str) for a in v) for v in resolved.values()):
        return "resolved must map host names to address lists"
    return None


def save_record(state_dir, record, digest):
    ensure_dir(state_dir)
    data = dict(record, hash=digest)
    write_atomic(os.path.join(state_dir, RECORD), json.dumps(data, indent=1, sort_keys=True) + "\n")
    write_atomic(os.path.join(state_dir, HASH), digest + "\n")


def read_json_lines(path):
    """The objects of a JSON-lines file, in order ([] if it cannot be read); a line that is not a
    JSON object (cut short by a crash, written by hand) is skipped."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            out.append(item)
    return out


def digest(*texts):
    import hashlib  # only runs that record what they built
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
