"""Server-side sessions and the login rate limit.

A session is a random id (the cookie) mapped to the user, a CSRF token, its times and the
fingerprint of the user's password hash. It ends at logout, after IDLE seconds unused, ABSOLUTE
seconds after login, or when the password changes (the fingerprint is checked on every request).
Sessions live in memory: a restart logs everyone out.
"""

import hmac
import secrets
import threading
import time

IDLE = 30 * 60
ABSOLUTE = 12 * 3600
MAX_SESSIONS = 64
FAILURES, WINDOW = 5, 5 * 60  # this many failed logins from one address in WINDOW seconds: blocked
MAX_TRACKED = 4096  # addresses remembered by the rate limit


class Session:
    def __init__(self, user, fp, now):
        self.id = secrets.token_urlsafe(32)
        self.csrf = secrets.token_urlsafe(32)
        self.user, self.fp = user, fp
        self.created = self.seen = now


class Sessions:
    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.lock = threading.Lock()
        self.by_id = {}

    def create(self, user, fp):
        with self.lock:
            s = Session(user, fp, self.clock())
            if len(self.by_id) >= MAX_SESSIONS:  # the least recently used one goes
                del self.by_id[min(self.by_id.values(), key=lambda x: x.seen).id]
            self.by_id[s.id] = s
            return s

    def get(self, sid, fp_now):
        """The live session of a cookie value, or None. `fp_now(user)`: the fingerprint of the
        user's password hash now (None if the user can no longer log in)."""
        if not sid:
            return None
        with self.lock:
            s = self.by_id.get(sid)
            now = self.clock()
            if s is None or not hmac.compare_digest(s.id, sid):
                return None
            if now - s.seen > IDLE or now - s.created > ABSOLUTE:
                del self.by_id[sid]
                return None
        current = fp_now(s.user)
        with self.lock:
            if current is None or not hmac.compare_digest(current, s.fp):
                self.by_id.pop(sid, None)
                return None
            s.seen = now
            return s

    def end(self, sid):
        with self.lock:
            self.by_id.pop(sid, None)


class Limiter:
    """At most FAILURES login attempts per address in WINDOW seconds that did not succeed.

    An attempt takes its slot (reserve) before the password is checked, under the lock: however
    many requests arrive at once, no more than FAILURES passwords from one address are ever
    checked in a window. A success clears the address; a failure leaves its slot taken."""

    def __init__(self, clock=time.monotonic, failures=FAILURES, window=WINDOW):
        self.clock, self.failures, self.window = clock, failures, window
        self.lock = threading.Lock()
        self.seen = {}  # address -> [times of attempts that did not succeed (or are running)]

    def _wait(self, addr, now):
        times = [t for t in self.seen.get(addr, ()) if now - t < self.window]
        if times:
            self.seen[addr] = times
        else:
            self.seen.pop(addr, None)
        if len(times) < self.failures:
            return 0
        return max(1, int(times[-self.failures] + self.window - now + 0.999))

    def retry_after(self, addr):
        """Seconds until `addr` may try again; 0 if it may now."""
        with self.lock:
            return self._wait(addr, self.clock())

    def reserve(self, addr):
        """Take a slot for one attempt: 0 if taken (check the password now), else the seconds
        until `addr` may try again (answer 429 without checking anything)."""
        with self.lock:
            now = self.clock()
            wait = self._wait(addr, now)
            if wait:
                return wait
            if len(self.seen) >= MAX_TRACKED and addr not in self.seen:
                for a in [a for a, ts in self.seen.items() if now - ts[-1] >= self.window]:
                    del self.seen[a]
                if len(self.seen) >= MAX_TRACKED:
                    del self.seen[min(self.seen, key=lambda a: self.seen[a][-1])]
            self.seen.setdefault(addr, []).append(now)
            return 0

    def succeeded(self, addr):
        with self.lock:
            self.seen.pop(addr, None)
