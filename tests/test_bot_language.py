"""telegram.language: ru: every text the bot shows comes from strings.py. A walk through the
commands, buttons, a failure and the alerts in Russian finds no Latin-letter word that is not in
the ru table or in the data the (fake) router and the user gave it: a hard-coded English string
anywhere on the way shows up here."""

import html
import re

import pytest

from botchat import chat, step
from vpn_director import state
from vpn_director.bot import callbacks, settings
from vpn_director.bot.alerts import Alerts
from vpn_director.bot.strings import EN, RU, text

SERVERS = [{"number": 1, "id": "a1b2c3", "name": "Amsterdam", "label": "vless", "active": True, "latency_ms": 42},
           {"number": 2, "id": "d4e5f6", "name": "Berlin", "label": "trojan", "active": False, "latency_ms": None}]
IPS = [("direct", ("203.0.113.7", None)), ("xray", (None, "timed out")), ("wgc1", ("198.51.100.9", None))]
LEFT = set()  # English words still allowed in Russian output: none


def words(value):
    """The Latin-letter words of a text (placeholders and HTML tags left out), lower case."""
    value = re.sub(r"%\(\w+\)s", " ", str(value))
    value = html.unescape(re.sub(r"</?(b|pre|code)>", " ", value))
    return {w.lower() for w in re.findall(r"[A-Za-z]{2,}", value)}


def leaves(value):
    """The values (not the keys) in nested data, as one text."""
    if isinstance(value, dict):
        return leaves(list(value.values()))
    if isinstance(value, (list, tuple)):
        return " ".join(leaves(v) for v in value)
    return str(value)


@pytest.fixture
def ru(tmp_path):
    s = chat(tmp_path, language="ru")
    s.router.ip = lambda cfg, url: IPS
    status = s.router.status
    s.router.status = lambda cfg: dict(status(cfg), tunnels=status(cfg)["tunnels"] + [
        {"tunnel": "wgc2", "state": "DOWN", "kill_switch": False}])
    s.router.servers = lambda cfg: SERVERS
    s.typed = []
    yield s
    s.fake.close()


def send(s, line, **kw):
    s.typed.append(line)
    s.fake.user_sends(line, **kw)
    step(s)


def press(s, data):
    s.fake.user_presses(data, 101)
    step(s)


def shown(fake):
    """Every text the chat got: messages, edits, button labels, button answers, captions."""
    out = []
    for method, p in fake.ok_calls:
        if method in ("sendMessage", "editMessageText"):
            out.append(p["text"])
            rows = (p.get("reply_markup") or {}).get("inline_keyboard") or []
            out += [k["text"] for row in rows for k in row]
        elif method == "answerCallbackQuery" and p.get("text"):
            out.append(p["text"])
        elif method == "sendDocument":
            out += re.findall(r'name="caption"\r\n\r\n(.*?)\r\n--', p["_multipart"].decode("utf-8", "replace"))
    return out


def test_russian_output_has_no_english_words(ru):
    t = lambda key, **f: text("ru", key, **f)  # noqa: E731
    for line in ("/help", "/status", "/devices", "/clients", "/exclude", "/exclude drop de", "/trace",
                 "/trace 192.168.50.10 8.8.8.8", "/logs 5", "/logs 500", "/logs 0", "/ip", "/version", "/servers",
                 "/switch 1", "/import nothing", "/nosuch", "/pair"):
        send(ru, line)
    send(ru, "/status", user=2002)  # a stranger
    send(ru, "/status")
    press(ru, ru.fake.button(t("refresh")))
    send(ru, "/clients")
    press(ru, ru.fake.last_buttons()[0][1])  # the device's menu
    press(ru, ru.fake.button(t("via", via="wgc1")))
    press(ru, ru.fake.button(t("cancel")))
    press(ru, callbacks.encode(callbacks.tag(ru.cfg), "p", "192.168.50.10"))  # pause: asks
    confirm = ru.fake.button(t("confirm"))
    press(ru, confirm)  # the edit (fake): "done" with its summary
    press(ru, confirm)  # used up: expired
    press(ru, callbacks.encode("0ld0ld", "x", "192.168.50.10"))  # outdated
    send(ru, "/servers")
    press(ru, ru.fake.button("2 Berlin"))

    def broken(cfg, url):
        raise RuntimeError("zq")
    ru.router.ip = broken
    send(ru, "/ip")
    assert any(m.startswith(t("failed", error="")) for m in shown(ru.fake))

    state.ensure_dir(ru.cfg.state_dir)
    alerts = Alerts(settings.Alerts(), ru.cfg.state_dir, "ru")
    said = alerts.observe(0, {"tunnel wgc1": ("up", ""), "list de": ("fresh", "1")}, [], drift=1.0)
    for i in range(1, 9):
        said += alerts.observe(i * 10, {"tunnel wgc1": ("blocked" if i % 2 else "up", ""),
                                        "list de": ("stale" if i == 1 else "fresh", "50")},
                               [{"time": i, "kind": kind, "from": "aaa", "to": "bbb", "reason": ""}
                                for kind in ("switch", "all-down", "limit")], drift=1.0 + i)
    said += alerts.observe(5000, {"tunnel wgc1": ("up", ""), "tunnel wgc2": ("leaking", "")})
    said += alerts.observe(5100, {"tunnel wgc1": ("weird", ""), "tunnel wgc2": ("unknown", "no table")})
    assert len(said) > 10

    r = ru.router
    data = leaves([r.status(None), r.clients(None), r.logs(None, 3), r.trace(None, "", ""),
                       r.edit(None).summary, SERVERS, IPS, ru.typed, "wgc1 wgc2 de aaa bbb weird no table",
                       "RuntimeError zq", "Anna's <phone>"])
    allowed = words(" ".join(RU.values())) | words(data)
    seen = shown(ru.fake) + said
    stray = {w: next(m for m in seen if w in words(m)) for m in seen for w in words(m) - allowed}
    assert set(stray) == LEFT, stray
    english = words(" ".join(EN.values())) - words(" ".join(RU.values()))
    assert "entries" in english and "paused" in english  # the check has teeth
