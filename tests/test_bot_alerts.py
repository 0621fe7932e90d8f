"""Alerts: one message per state change, one "flapping" message for a flapping subject, and a
queue on disk (0600) that holds messages while Telegram is down and sends them in order."""

import json
import os

import pytest

from botfake import ADMIN, TOKEN, FakeBotApi
from vpn_director.bot import settings
from vpn_director.bot.alerts import QUEUE, Alerts
from vpn_director.bot.api import Api
from vpn_director.bot.poller import Bot
from vpn_director.bot.transport import Transport


@pytest.fixture
def alerts(tmp_path):
    return Alerts(settings.Alerts(), str(tmp_path))


def test_the_same_state_twice_makes_one_message(alerts):
    assert alerts.observe(0, {"tunnel wgc1": ("up", "")}) == []  # first look: remembered only
    first = alerts.observe(60, {"tunnel wgc1": ("blocked", "")})
    again = alerts.observe(120, {"tunnel wgc1": ("blocked", "")})
    assert first == ["Tunnel wgc1 is down; kill switch engaged: its clients are blocked, not leaking."]
    assert again == []
    assert alerts.observe(180, {"tunnel wgc1": ("up", "")}) == ["Tunnel wgc1 is up again."]
    reloaded = Alerts(settings.Alerts(), alerts.state_dir)  # what was seen survives a restart
    assert reloaded.observe(240, {"tunnel wgc1": ("up", "")}) == []


def test_flapping_makes_one_flapping_message_then_settles(alerts):
    alerts.observe(0, {"tunnel wgc1": ("up", "")})
    said = []
    for i in range(1, 12):
        said += alerts.observe(i * 10, {"tunnel wgc1": ("blocked" if i % 2 else "up", "")})
    flapping = [m for m in said if "flapping" in m]
    assert len(flapping) == 1 and len(said) == 3 + 1  # three changes told, then one "flapping", then quiet
    assert alerts.observe(200, {"tunnel wgc1": ("blocked", "")}) == []  # still within the window
    settled = alerts.observe(800, {"tunnel wgc1": ("blocked", "")})
    assert settled == ["tunnel wgc1 settled: blocked"]


def test_events_drift_and_lists(alerts):
    ev = [{"time": 5.0, "kind": "switch", "from": "aaa", "to": "bbb", "reason": "A <failed> 3 checks"}]
    assert alerts.observe(10, {}, ev, drift=100.0) == []  # first start: earlier events are history
    assert alerts.since == 5.0
    ev2 = [{"time": 20.0, "kind": "switch", "from": "bbb", "to": "ccc", "reason": "B & co failed"}]
    said = alerts.observe(30, {"list de": ("fresh", "3")}, ev2, drift=150.0)
    assert said == ["Xray switch: B &amp; co failed (bbb → ccc)", "Routing drift repaired by the watchdog."]
    assert alerts.observe(40, {"list de": ("stale", "50")}, [], drift=150.0) == [
        "Country list de was not updated for 50 h: its update failed."]


def test_telegram_down_queues_then_delivers_in_order(tmp_path):
    fake = FakeBotApi()
    try:
        tg = settings.Telegram()
        tg.token, tg.api_base, tg.admins = TOKEN, fake.url, [ADMIN]
        inputs = []

        class Router:
            def config(self):
                return None

            def alert_inputs(self, cfg, since):
                return inputs.pop(0), [], None

        clock = [0.0]
        bot = Bot(tg, Api(TOKEN, Transport(fake.url), sleep=lambda s: None), Router(), str(tmp_path),
                  clock=lambda: clock[0], log=lambda m: None, warn=lambda m: None)
        inputs += [{"tunnel wgc1": ("up", "")}, {"tunnel wgc1": ("blocked", "")}, {"tunnel wgc1": ("up", "")},
                   {"tunnel wgc1": ("up", "")}]
        fake.fail("sendMessage", 502, times=100)  # Telegram is down
        for _ in range(3):
            bot.tick_alerts()
            clock[0] += 60
        queued = [json.loads(line) for line in open(os.path.join(str(tmp_path), QUEUE))]
        assert [q["text"].split()[-2:] for q in queued] == [["not", "leaking."], ["up", "again."]]
        assert os.stat(os.path.join(str(tmp_path), QUEUE)).st_mode & 0o777 == 0o600
        assert fake.sent() == []
        fake.failures.clear()  # back
        bot.tick_alerts()
        assert [p["text"] for p in fake.sent()] == [q["text"] for q in queued]  # in order, each once
        assert all(p["chat_id"] == ADMIN for p in fake.sent())
        assert open(os.path.join(str(tmp_path), QUEUE)).read() == ""
    finally:
        fake.close()
