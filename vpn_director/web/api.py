"""The JSON API under /api/v1: request checks, sessions and logins, errors as JSON.

Every route except login needs a session (the `__Host-vd_session` cookie). A mutating request
(POST, DELETE, PUT, PATCH) must be JSON (415 otherwise), come from this origin
(`Sec-Fetch-Site: same-origin` or an exact `Origin`; same-site is not enough, the firmware's own
UI on another port is same-site) and, once logged in, carry the session's `X-CSRF-Token` (403
otherwise). The routes themselves are thin handlers in views.
"""

import hmac
import json
import re
import threading

from .. import __version__, log
from ..errors import EXIT_USAGE, ConfigError, LockError, VpdError
from . import WebError, jobs, sessions, shadow, views

COOKIE = "__Host-vd_session"
MUTATING = ("POST", "DELETE", "PUT", "PATCH")
PORT_RE = re.compile(r":\d{1,5}$")


class Request:
    def __init__(self, method, path, query, headers, body, addr, host):
        self.method, self.path, self.query, self.headers = method, path, query, headers
        self.body, self.addr, self.host = body, addr, host

    def json(self):
        """The body as a JSON object ({} when empty); WebError 400 otherwise."""
        if not self.body.strip():
            return {}
        try:
            obj = json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise WebError("the body is not JSON", 400)
        if not isinstance(obj, dict):
            raise WebError("the body must be a JSON object", 400)
        return obj

    def cookie(self, name):
        for part in (self.headers.get("Cookie") or "").split(";"):
            key, _, value = part.strip().partition("=")
            if key == name:
                return value
        return None


class Response:
    def __init__(self, status, obj, headers=()):
        self.status, self.obj, self.headers = status, obj, list(headers)


def session_cookie(sid, clear=False):
    value = "" if clear else sid
    return "%s=%s; Path=/; Secure; HttpOnly; SameSite=Strict%s" % (COOKIE, value, "; Max-Age=0" if clear else "")


class App:
    """What every request shares: the config path, host names, sessions, the rate limit, jobs."""

    def __init__(self, config_path, hosts, shadow_file, clock=None):
        self.config_path, self.hosts, self.shadow_file = config_path, set(hosts), shadow_file
        kw = {"clock": clock} if clock else {}
        self.sessions, self.limiter = sessions.Sessions(**kw), sessions.Limiter(**kw)
        self.jobs = jobs.Jobs()
        self.edit_lock = threading.Lock()  # one edit at a time from this process (txn also takes the run lock)

    def host_ok(self, host):
        name = PORT_RE.sub("", host)
        return bool(name) and name in self.hosts

    def config(self):
        from ..ops import txn
        return txn.load(self.config_path)

    def handle(self, req):
        try:
            return self._handle(req)
        except WebError as e:
            return Response(e.status, {"error": str(e)})
        except ConfigError as e:
            return Response(400, {"error": e.lines()[0], "problems": e.problems})
        except LockError as e:
            return Response(503, {"error": str(e)}, [("Retry-After", "5")])
        except VpdError as e:
            return Response(400 if e.exit_code == EXIT_USAGE else 500, {"error": str(e)})
        except Exception as e:  # one line in the log, never a traceback to the browser
            log.error("web: %s %s: internal error: %s: %s" % (req.method, req.path, type(e).__name__, e))
            return Response(500, {"error": "internal error (see the log)"})

    def _handle(self, req):
        found = views.match(req.method, req.path)
        if found is None:
            return Response(404, {"error": "no such API path"})
        if found == "method":
            return Response(405, {"error": "method not allowed"})
        handler, params, auth = found
        if req.method in MUTATING:
            ctype = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype != "application/json":
                return Response(415, {"error": "send JSON (Content-Type: application/json)"})
            if not self.same_origin(req):
                return Response(403, {"error": "cross-origin request refused"})
        session = None
        if auth:
            session = self.sessions.get(req.cookie(COOKIE), lambda user: shadow.current(self.shadow_file, user))
            if session is None:
                return Response(401, {"error": "not logged in"})
            if req.method in MUTATING and not hmac.compare_digest(
                    (req.headers.get("X-CSRF-Token") or "").encode(), session.csrf.encode()):
                return Response(403, {"error": "missing or wrong X-CSRF-Token"})
        res = handler(self, req, session, **params)
        return res if isinstance(res, Response) else Response(200, res)

    def same_origin(self, req):
        """Sec-Fetch-Site must say same-origin when sent; an Origin must be exactly ours; one of
        the two must be there."""
        site, origin = req.headers.get("Sec-Fetch-Site"), req.headers.get("Origin")
        if site is not None and site != "same-origin":
            return False
        if origin is not None:
            return origin.lower() == "https://" + req.host
        return site == "same-origin"

    # --- the routes without a session ----------------------------------------------------------
    def login(self, req, _):
        body = req.json()
        wait = self.limiter.reserve(req.addr)  # the attempt counts before the password is checked
        if wait:
            return Response(429, {"error": "too many failed logins: try again in %d s" % wait},
                            [("Retry-After", str(wait))])
        user, password = body.get("username"), body.get("password")
        fp = shadow.login(self.shadow_file, user, password)
        shown = (user if isinstance(user, str) else "?")[:32]
        if fp is None:
            log.warning("web: failed login as %r from %s" % (shown, req.addr))
            return Response(401, {"error": "wrong user name or password"})
        self.limiter.succeeded(req.addr)
        old = req.cookie(COOKIE)
        if old:
            self.sessions.end(old)
        s = self.sessions.create(user, fp)
        log.info("web: %s logged in from %s" % (shown, req.addr))
        return Response(200, {"user": user, "csrf": s.csrf, "version": __version__},
                        [("Set-Cookie", session_cookie(s.id))])

    def logout(self, req, session):
        self.sessions.end(session.id)
        return Response(200, {"ok": True}, [("Set-Cookie", session_cookie("", clear=True))])

    def session(self, req, _):
        """Who is logged in; {"user": null} when nobody (a page's first question, not an error)."""
        session = self.sessions.get(req.cookie(COOKIE), lambda user: shadow.current(self.shadow_file, user))
        if session is None:
            return {"user": None, "csrf": None, "version": __version__}
        return {"user": session.user, "csrf": session.csrf, "version": __version__}
