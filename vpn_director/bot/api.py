"""The Bot API client: one JSON call per method, every answer mapped to a result or one error.

  401           BadToken: the poller stops ("bad token")
  409           Conflict: another poller (or a webhook) uses the token; the poller backs off
  429           the call waits `retry_after` (the injected sleep) and is made again: Telegram did
                not take it, so nothing is lost or sent twice
  5xx, network  Unreachable: the caller backs off (the poller), or keeps the message (alerts)
  other 4xx     ApiError with Telegram's description

The token is part of every URL: no URL is ever logged, and every message passes through mask().
"""

import json
import time
import uuid

from . import BotError
from .transport import Unreachable

MAX_429_WAITS = 5
MAX_RETRY_AFTER = 3600


class ApiError(BotError):
    def __init__(self, method, code, description):
        super().__init__("%s: %d %s" % (method, code, description))
        self.method, self.code, self.description = method, code, description


class BadToken(ApiError):
    pass


class Conflict(ApiError):
    pass


class Api:
    def __init__(self, token, transport, sleep=time.sleep, log=None):
        self._token = token
        self.transport = transport
        self.sleep = sleep
        self.log = log or (lambda msg: None)

    def mask(self, text):
        """Text with the token (and its secret half) replaced by ***."""
        text = str(text)
        for secret in (self._token, self._token.split(":", 1)[-1]):
            if secret:
                text = text.replace(secret, "***")
        return text

    def call(self, method, params=None, files=None, timeout=30):
        """The `result` of one call; ApiError / BadToken / Conflict, or transport.Unreachable."""
        if files:
            body, ctype = _multipart(params or {}, files)
        else:
            body, ctype = json.dumps(params or {}, ensure_ascii=False).encode("utf-8"), "application/json"
        for _ in range(MAX_429_WAITS + 1):
            try:
                status, data = self.transport.request("/bot%s/%s" % (self._token, method), body, ctype, timeout)
            except Unreachable as e:
                raise Unreachable(self.mask(e), e.written)
            try:
                answer = json.loads(data.decode("utf-8"))
            except ValueError:
                answer = None
            if not isinstance(answer, dict):
                if status >= 500 or status in (404, 502):
                    raise Unreachable("%s: HTTP %d" % (method, status), written=True)
                raise ApiError(method, status, "not a Bot API answer")
            if answer.get("ok"):
                return answer.get("result")
            code = answer.get("error_code") if isinstance(answer.get("error_code"), int) else status
            desc = self.mask(str(answer.get("description", "")))[:300]
            if code == 429:
                wait = (answer.get("parameters") or {}).get("retry_after")
                wait = wait if isinstance(wait, int) and 0 < wait <= MAX_RETRY_AFTER else 5
                self.log("bot: %s: too many requests; waiting %d s as Telegram asks" % (method, wait))
                self.sleep(wait)
                continue
            if code == 401:
                raise BadToken(method, code, desc)
            if code == 409:
                raise Conflict(method, code, desc)
            if code >= 500:
                raise Unreachable("%s: %d %s" % (method, code, desc), written=True)
            raise ApiError(method, code, desc)
        raise Unreachable("%s: still rate-limited after %d waits" % (method, MAX_429_WAITS), written=False)

    # --- the methods the bot uses --------------------------------------------------------------
    def send(self, chat_id, html, buttons=None):
        params = {"chat_id": chat_id, "text": html, "parse_mode": "HTML", "disable_web_page_preview": True}
        if buttons:
            params["reply_markup"] = {"inline_keyboard": buttons}
        return self.call("sendMessage", params)

    def edit(self, chat_id, message_id, html, buttons=None):
        params = {"chat_id": chat_id, "message_id": message_id, "text": html, "parse_mode": "HTML",
                  "disable_web_page_preview": True, "reply_markup": {"inline_keyboard": buttons or []}}
        try:
            return self.call("editMessageText", params)
        except ApiError as e:
            if e.code == 400 and "not modified" in e.description:
                return None  # the same text again (Refresh with nothing new): fine
            raise

    def answer(self, callback_id, text=None):
        params = {"callback_query_id": callback_id}
        if text:
            params["text"] = text[:200]
        try:
            return self.call("answerCallbackQuery", params)
        except ApiError:
            return None  # too old to answer: the button press itself is handled anyway

    def document(self, chat_id, filename, data, caption=None):
        params = {"chat_id": str(chat_id)}
        if caption:
            params.update(caption=caption, parse_mode="HTML")
        return self.call("sendDocument", params, files={"document": (filename, data)}, timeout=60)

    def updates(self, offset, timeout):
        return self.call("getUpdates", {"offset": offset, "timeout": timeout,
                                        "allowed_updates": ["message", "callback_query"]}, timeout=timeout + 15)

    def set_commands(self, commands, language=None):
        params = {"commands": [{"command": c, "description": d} for c, d in commands]}
        if language:
            params["language_code"] = language
        return self.call("setMyCommands", params)


def _multipart(fields, files):
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(('--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n'
                      % (boundary, name, value)).encode("utf-8"))
    for name, (filename, data) in files.items():
        parts.append(('--%s\r\nContent-Disposition: form-data; name="%s"; filename="%s"\r\n'
                      'Content-Type: text/plain; charset=utf-8\r\n\r\n' % (boundary, name, filename)).encode("utf-8")
                     + data + b"\r\n")
    parts.append(("--%s--\r\n" % boundary).encode("ascii"))
    return b"".join(parts), "multipart/form-data; boundary=%s" % boundary
