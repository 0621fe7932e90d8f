"""Alerts: one message per state change, damped against flapping, queued on disk until sent.

Inputs (router.alert_inputs) are states by subject ("tunnel wgc1": up, blocked, leaking,
unknown; "list de": fresh, stale), the watch daemon's new events from <state_dir>/events.jsonl
(server failover, recovery, all down ...) and the watchdog's last repair time. A subject's
first state is only remembered; a change makes one message. More than flap_changes changes of
one subject within flap_window_s make one "flapping" message, then silence until the subject
keeps one state for a whole window ("settled").

Messages wait in <state_dir>/bot-queue.jsonl (0600, at most MAX_QUEUE) and are sent in order;
while Telegram cannot be reached they stay there. What was seen last is in bot-alerts.json.
"""

import json
import os

from .. import state
from ..errors import StateError
from .render import esc
from .strings import text, word
from .transport import Unreachable

SEEN = "bot-alerts.json"
QUEUE = "bot-queue.jsonl"
MAX_QUEUE = 200
XRAY_KINDS = ("switch", "return", "recovery", "all-down", "failed", "limit")
MESSAGES = {("tunnel", "up"): "a_tunnel_up", ("tunnel", "blocked"): "a_tunnel_blocked",
            ("tunnel", "leaking"): "a_tunnel_leaking", ("tunnel", "unknown"): "a_tunnel_unknown",
            ("list", "stale"): "a_list_stale", ("list", "fresh"): "a_list_fresh"}


class Alerts:
    def __init__(self, settings, state_dir, lang="en", log=None):
        self.s, self.state_dir, self.lang = settings, state_dir, lang
        self.log = log or (lambda msg: None)
        self.seen = self._load()

    def _path(self, name):
        return os.path.join(self.state_dir, name)

    def _load(self):
        try:
            with open(self._path(SEEN), encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            data = None
        data = data if isinstance(data, dict) else {}
        for key in ("states", "changes", "flapping"):
            if not isinstance(data.get(key), dict):
                data[key] = {}
        return data

    def _save(self):
        state.write_atomic(self._path(SEEN), json.dumps(self.seen, indent=1, sort_keys=True) + "\n", mode=0o600)

    @property
    def since(self):
        """The time of the last Xray event already handled (None on a first start)."""
        return self.seen.get("events_since")

    def observe(self, now, states, events=(), drift=None):
        """The messages for what changed since the last look (also remembered)."""
        out = []
        first = "events_since" not in self.seen
        for subject, (st, detail) in sorted(states.items()):
            out += self._state(now, subject, st, detail)
        for ev in events:
            self.seen["events_since"] = max(ev["time"], self.seen.get("events_since") or 0)
            if ev.get("kind") in XRAY_KINDS and not first:
                moved = " (%s → %s)" % (ev.get("from") or "-", ev.get("to") or "-") if ev.get("to") else ""
                out.append(esc(text(self.lang, "a_xray", kind=word(self.lang, "x_", ev["kind"]),
                                    detail=ev.get("reason", "") + moved)))
        if first:
            self.seen.setdefault("events_since", now)
        if drift is not None and drift != self.seen.get("drift"):
            if self.seen.get("drift") is not None:
                out.append(esc(text(self.lang, "a_drift")))
            self.seen["drift"] = drift
        self._save()
        return out

    def _state(self, now, subject, st, detail):
        states, changes, flapping = self.seen["states"], self.seen["changes"], self.seen["flapping"]
        before = states.get(subject)
        states[subject] = st
        recent = [t for t in changes.get(subject, []) if now - t < self.s.flap_window_s]
        if before is None:
            return []
        if before == st:
            changes[subject] = recent
            if subject in flapping and (not recent or now - recent[-1] >= self.s.flap_window_s):
                del flapping[subject]
                return [esc(text(self.lang, "a_settled", subject=self._shown(subject),
                                 state=word(self.lang, "st_", st)))]
            return []
        recent.append(now)
        changes[subject] = recent
        if subject in flapping:
            return []
        if len(recent) > self.s.flap_changes:
            flapping[subject] = now
            return [esc(text(self.lang, "a_flapping", subject=self._shown(subject), n=len(recent),
                             minutes=self.s.flap_window_s // 60))]
        kind, _, name = subject.partition(" ")
        key = MESSAGES.get((kind, st))
        if key is None:
            return [esc(text(self.lang, "a_state", subject=self._shown(subject), state=word(self.lang, "st_", st)))]
        return [esc(text(self.lang, key, subject=name, detail=detail))]

    def _shown(self, subject):
        """"tunnel wgc1" in the chat's language."""
        kind, _, name = subject.partition(" ")
        return word(self.lang, "s_", kind, name=name) if name else subject

    # --- the queue ---------------------------------------------------------------------------
    def queue(self):
        return [item for item in state.read_json_lines(self._path(QUEUE))
                if isinstance(item.get("chat"), int) and isinstance(item.get("text"), str)]

    def _write(self, items):
        dropped = len(items) - MAX_QUEUE
        if dropped > 0:
            self.log("bot: alert queue full; the %d oldest message(s) dropped" % dropped)
            items = items[dropped:]
        data = "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items)
        state.write_atomic(self._path(QUEUE), data, mode=0o600)

    def enqueue(self, messages, chats):
        if messages and chats:
            self._write(self.queue() + [{"chat": c, "text": m} for m in messages for c in chats])

    def drain(self, api):
        """Send the queued messages in order; stop at the first one Telegram cannot take now.
        Returns how many were sent."""
        from .api import ApiError, BadToken
        items, sent = self.queue(), 0
        while items:
            try:
                api.send(items[0]["chat"], items[0]["text"])
                sent += 1
            except (Unreachable, BadToken):
                break
            except ApiError as e:  # blocked by the user, chat gone: this one cannot be delivered
                self.log("bot: alert to chat %d dropped: %s" % (items[0]["chat"], e))
            items.pop(0)
            try:
                self._write(items)
            except StateError as e:
                self.log("bot: alert queue not written: %s" % e)
                break
        return sent
