"""The bot daemon: long polling, one update at a time, alerts between polls.

  start-up   setMyCommands; updates waiting from before are confirmed, and those older than
             STALE_S are not executed (a /stop sent during a reboot must not run later): their
             senders are told
  loop       getUpdates (timeout LONG_POLL) -> each message or button press -> access check ->
             command; every alerts.interval_s the alert inputs are read and the queue is sent
  errors     401: stop ("bad token"); 409: another poller: back off CONFLICT_STEPS, logged once
             per step; network and 5xx: back off 1, 2, 4 ... MAX_BACKOFF s, logged once per step
  the rest   nothing else ends the daemon: an update whose command fails in an unexpected way
             (a bad HTTP answer to /ip, an unreadable log file) is answered "Failed: <one line>",
             logged in one line (its traceback at debug level) and confirmed like any other, so
             Telegram does not hand it back; a failed alert tick is logged and the next one runs
  one poller per token: <state_dir>/bot-<hash of the token>.lock is held while it runs
"""

import hashlib
import os
import signal
import time
import traceback

from .. import config
from .. import log as vlog
from ..errors import VpdError
from . import BotError, buttons, commands
from .access import Access, add_admin
from .alerts import Alerts
from .api import ApiError, BadToken, Conflict
from .render import esc
from .strings import text
from .transport import Unreachable

LONG_POLL = 50
STALE_S = 120
CONFLICT_STEPS = (30, 60, 120, 300)
MAX_BACKOFF = 60
REFUSE_EVERY_S = 3600  # a stranger hears "private" at most this often


class Stop(BaseException):
    """SIGTERM during a long poll (never raised while a command or an edit runs)."""


class Request:
    def __init__(self, chat, user, lang, message_id=None):
        self.chat, self.user, self.lang, self.message_id = chat, user, lang, message_id


class Bot:
    def __init__(self, tg, api, router, state_dir, clock=time.time, sleep=time.sleep, log=None, warn=None,
                 alerts=True, debug=None):
        self.tg, self.api, self.router, self.state_dir = tg, api, router, state_dir
        self.clock, self.sleep = clock, sleep
        self.log = log or vlog.info
        self.warn = warn or vlog.warning
        self.debug = debug or vlog.debug
        self.access = Access(tg, state_dir, clock, self.log)
        self.alerts = Alerts(tg.alerts, state_dir, tg.language, self.log) if alerts and tg.alerts.enabled else None
        self.pending = {}
        self.offset = None
        self.refused = {}
        self.max_chunks = 3
        self.next_alerts = 0
        self.stopping = False
        self.polling = False  # inside getUpdates: a signal may end it at once
        self.long_poll = LONG_POLL
        self.config_id = None

    # --- helpers for the handlers --------------------------------------------------------------
    def t(self, ctx, key, **fields):
        return text(ctx.lang if ctx is not None else self.tg.language, key, **fields)

    def reply(self, ctx, html, grid=None, edit=None):
        if edit is not None:
            return self.api.edit(ctx.chat, edit, html, grid)
        return self.api.send(ctx.chat, html, grid)

    def failed(self, ctx, e):
        """The answer to a command that failed: "Failed: <one line>" (the token masked)."""
        return esc(self.t(ctx, "failed", error=self.brief(e)))

    def brief(self, e):
        """An error in one line, the token masked; an unexpected one also names its type."""
        line = _one_line(e)
        if not isinstance(e, VpdError):
            line = "%s: %s" % (type(e).__name__, line) if line else type(e).__name__
        return self.api.mask(line)

    def unexpected(self, what, e):
        """Log an error no layer expected: one line, and its traceback at debug level only."""
        self.warn("bot: %s failed: %s" % (what, self.brief(e)))
        self.debug(self.api.mask("bot: %s: %s" % (what, traceback.format_exc().rstrip())))

    def last_apply(self):
        try:
            return os.stat(os.path.join(self.state_dir, "state.json")).st_mtime
        except OSError:
            return None

    def edit_result(self, ctx, change):
        """Run one config change through the operations layer; the answer in HTML."""
        try:
            res = self.router.edit(change)
        except VpdError as e:
            return self.failed(ctx, e)
        if not res.summary:
            return esc(self.t(ctx, "nothing", why="; ".join(res.notes) or "-"))
        self.log("bot: %s (user %s)" % (res.summary, ctx.user))
        lines = [esc(self.t(ctx, "done", summary=res.summary))] + [esc(n) for n in res.notes + res.warnings]
        return "\n".join(lines)

    def switch_result(self, ctx, cfg, key):
        try:
            server, ms = self.router.use(cfg, key)
        except VpdError as e:
            return self.failed(ctx, e)
        self.log("bot: xray switched to %s (user %s)" % (server.get("id"), ctx.user))
        return esc(self.t(ctx, "switched", server=server.get("name") or server.get("id"), ms=ms))

    # --- updates -------------------------------------------------------------------------------
    def _follow_config(self):
        """Admins and usernames as the config file says now (edited by `config rollback` or by hand)."""
        path = getattr(self.router, "path", None)
        fid = config.file_id(path) if path else None
        if fid is None or fid == self.config_id:
            return
        try:
            tg = self.router.config().telegram
        except VpdError as e:
            self.log("bot: the config cannot be read (%s); keeping the access list" % _one_line(e))
            return
        self.config_id = fid
        self.tg.admins, self.tg.allowed_users = list(tg.admins), list(tg.allowed_users)

    def handle(self, update, stale=False):
        self._follow_config()
        if "callback_query" in update:
            return self._callback(update["callback_query"], stale)
        msg = update.get("message")
        if not isinstance(msg, dict) or not isinstance(msg.get("text"), str):
            return
        user, chat = msg.get("from") or {}, msg.get("chat") or {}
        words = msg["text"].strip().split()
        if not words or not words[0].startswith("/"):
            return
        name = words[0][1:].split("@", 1)[0].lower()
        private = chat.get("type") == "private" and isinstance(chat.get("id"), int)
        ctx = Request(chat.get("id"), user.get("id"), self.tg.language, msg.get("message_id"))
        if name == "pair" and private and not stale:
            return self._pair(ctx, user, words[1:])
        if not self.access.allowed(user, chat):
            return self._refuse(ctx, private)
        if stale:
            return self.reply(ctx, esc(self.t(ctx, "stale", command=words[0][:32], minutes=STALE_S // 60)))
        handler = commands.HANDLERS.get(name)
        if handler is None:
            return self.reply(ctx, esc(self.t(ctx, "unknown_cmd")))
        try:
            handler(self, ctx, words[1:])
        except (BadToken, Unreachable):
            raise  # Telegram itself: the loop deals with it
        except VpdError as e:
            self.reply(ctx, self.failed(ctx, e))
        except Exception as e:  # noqa: B902 - one command must not end the daemon
            self.unexpected("/%s" % name, e)
            self.reply(ctx, self.failed(ctx, e))

    def _callback(self, q, stale):
        msg = q.get("message") or {}
        user, chat = q.get("from") or {}, msg.get("chat") or {}
        if stale or not self.access.allowed(user, chat):
            self.api.answer(q.get("id"))  # stops the spinner; nothing else
            return
        ctx = Request(chat.get("id"), user.get("id"), self.tg.language, msg.get("message_id"))
        try:
            note = buttons.pressed(self, ctx, q.get("data"), msg.get("message_id"))
        except (BadToken, Unreachable):
            raise
        except VpdError as e:
            note = self.brief(e)[:200]
        except Exception as e:  # noqa: B902 - one button must not end the daemon
            self.unexpected("a button", e)
            note = self.t(ctx, "failed", error=self.brief(e))[:200]
        self.api.answer(q.get("id"), note)

    def _pair(self, ctx, user, args):
        if len(args) != 1:
            return self.reply(ctx, esc(self.t(ctx, "pair_usage")))
        if not self.access.take_code(args[0]):
            self.log("bot: a wrong or expired pairing code from user ID %s" % ctx.user)
            return self.reply(ctx, esc(self.t(ctx, "pair_bad")))
        try:
            res = self.router.edit(add_admin(ctx.user))
        except VpdError as e:
            return self.reply(ctx, self.failed(ctx, e))
        if res.cfg is not None:
            self.tg.admins = list(res.cfg.telegram.admins)
        self.log("bot: user ID %s paired as admin" % ctx.user)
        self.reply(ctx, esc(self.t(ctx, "paired", id=ctx.user)))

    def _refuse(self, ctx, private):
        if not private:
            return
        last = self.refused.get(ctx.user, 0)
        if self.clock() - last >= REFUSE_EVERY_S:
            self.refused[ctx.user] = self.clock()
            self.reply(ctx, esc(self.t(ctx, "not_allowed")))

    # --- the loop ------------------------------------------------------------------------------
    def start(self):
        """Confirm what waited (not running what is stale), then setMyCommands; returns how many
        stale updates were skipped."""
        skipped = 0
        while True:
            updates = self.api.updates(self.offset, 0)
            if not updates:
                break
            for u in updates:
                self.offset = u["update_id"] + 1
                stale = _date(u) is not None and self.clock() - _date(u) > STALE_S
                skipped += stale
                self._safe(u, stale)
        for lang in ("en", "ru"):
            try:
                self.api.set_commands(commands.menu(self, lang), None if lang == "en" else lang)
            except (ApiError, Unreachable) as e:
                if isinstance(e, BadToken):
                    raise
                self.log("bot: setMyCommands: %s" % e)
        return skipped

    def _safe(self, update, stale=False):
        """One update (its offset already taken, so it is confirmed whatever happens here); only a
        bad token ends the daemon."""
        try:
            self.handle(update, stale)
        except BadToken:
            raise
        except (ApiError, Unreachable) as e:
            self.log("bot: answering update %s: %s" % (update.get("update_id"), e))
        except Exception as e:  # noqa: B902 - one update must not end the daemon
            self.unexpected("update %s" % update.get("update_id"), e)

    def poll_once(self, timeout=LONG_POLL):
        self.polling = True
        try:
            if self.stopping:
                raise Stop()
            updates = self.api.updates(self.offset, timeout)
        finally:
            self.polling = False
        for u in updates or []:
            self.offset = u["update_id"] + 1
            self._safe(u)
        return len(updates or [])

    def tick_alerts(self, cfg=None):
        """Read the alert inputs when due, queue what changed, send the queue."""
        if self.alerts is None:
            return
        if self.clock() >= self.next_alerts:
            self.next_alerts = self.clock() + self.tg.alerts.interval_s
            self._observe(cfg)
        try:
            self.alerts.drain(self.api)
        except Exception as e:  # noqa: B902 - a failed tick must not end the daemon
            self.unexpected("sending alerts", e)

    def _observe(self, cfg=None):
        """Read the alert inputs and queue what changed; a failure is logged, the next tick runs."""
        try:
            cfg = cfg or self.router.config()
            states, events, drift = self.router.alert_inputs(cfg, self.alerts.since)
            self.alerts.enqueue(self.alerts.observe(self.clock(), states, events, drift), self.recipients())
        except VpdError as e:
            self.log("bot: alerts: %s" % _one_line(e))
        except Exception as e:  # noqa: B902
            self.unexpected("alerts", e)

    def recipients(self):
        from .access import PINS, _read
        pinned = [v for v in _read(os.path.join(self.state_dir, PINS)).values() if isinstance(v, int)]
        return list(dict.fromkeys(self.tg.admins + pinned))

    def run(self, rounds=None):
        """The loop until stop() (SIGTERM) or a bad token; `rounds` bounds it (tests)."""
        conflict = unreachable = broken = 0
        logged = None
        started = False
        while not self.stopping and (rounds is None or rounds > 0):
            rounds = None if rounds is None else rounds - 1
            try:
                if not started:
                    skipped = self.start()
                    started = True
                    self.log("bot: polling; %d update(s) from before the start confirmed, not run" % skipped
                             if skipped else "bot: polling")
                self.tick_alerts()
                wait = self.long_poll
                if self.alerts is not None:
                    wait = max(0, min(wait, int(self.next_alerts - self.clock())))
                self.poll_once(wait)
                conflict = unreachable = broken = 0
                logged = None
            except BadToken:
                raise BotError("bad token: Telegram refused it (401); check telegram.token or token_file")
            except Conflict as e:
                step = CONFLICT_STEPS[min(conflict, len(CONFLICT_STEPS) - 1)]
                if logged != ("409", step):
                    logged = ("409", step)
                    self.warn("bot: another instance polls with this token, or a webhook is set (409: %s); "
                                 "backing off %d s" % (e.description, step))
                conflict += 1
                self.sleep(step)
            except Unreachable as e:
                step = min(MAX_BACKOFF, 2 ** min(unreachable, 8))
                if logged != ("net", step):
                    logged = ("net", step)
                    self.warn("bot: Telegram unreachable (%s); retrying in %d s" % (e, step))
                unreachable += 1
                self.sleep(step)
                self.tick_alerts_queue_only()
            except Stop:
                break
            except Exception as e:  # noqa: B902 - nothing but a bad token or a signal ends the daemon
                step = min(MAX_BACKOFF, 2 ** min(broken, 8))
                if logged != ("bug", step):
                    logged = ("bug", step)
                    self.unexpected("polling (retrying in %d s)" % step, e)
                broken += 1
                self.sleep(step)
        return 0

    def tick_alerts_queue_only(self):
        """While Telegram is unreachable alerts still queue up (they are sent when it returns)."""
        if self.alerts is None or self.clock() < self.next_alerts:
            return
        self.next_alerts = self.clock() + self.tg.alerts.interval_s
        self._observe()


def _date(update):
    msg = update.get("message") or (update.get("callback_query") or {}).get("message") or {}
    return msg.get("date") if isinstance(msg.get("date"), int) else None


def _one_line(e):
    return " ".join(str(e).split())[:500]


def lock(state_dir, token):
    """One poller per token: an open fd holding <state_dir>/bot-HASH.lock, or BotError."""
    from .. import state
    state.ensure_dir(state_dir)
    path = os.path.join(state_dir, "bot-%s.lock" % hashlib.sha256(token.encode()).hexdigest()[:12])
    try:
        return state.pid_lock(path, mode=0o600)
    except state.Held as e:
        raise BotError("another bot polls with this token%s" % e.holder)


def serve(bot):
    """bot.run() with SIGTERM/SIGINT ending it (at once, even inside a long poll)."""
    def stop(*_):
        bot.stopping = True
        if bot.polling:
            raise Stop()
    old = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return bot.run()
    except Stop:
        return 0
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
