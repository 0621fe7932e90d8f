"""Nothing but a bad token or a signal ends the bot daemon: a command, a button, a poll or an
alert tick that fails in a way no layer expected is answered "Failed: ..." (commands, buttons),
logged in one line with its traceback at debug level (the token masked everywhere), and the
update is confirmed, so Telegram does not hand it back."""

import http.client

import pytest

from botchat import chat, step
from botfake import ADMIN, TOKEN, FakeBotApi
from vpn_director.bot import BotError, callbacks, settings
from vpn_director.bot.api import Api
from vpn_director.bot.poller import Bot
from vpn_director.bot.transport import Transport, Unreachable


@pytest.fixture
def setup(tmp_path):
    s = chat(tmp_path)
    s.warned, s.debug = [], []
    s.bot.warn, s.bot.debug = s.warned.append, s.debug.append
    s.bot.long_poll = 0
    yield s
    s.fake.close()


def offsets(fake):
    return [p.get("offset") for m, p in fake.ok_calls if m == "getUpdates"]


def test_a_command_that_fails_unexpectedly_is_answered_confirmed_and_the_next_one_runs(setup, monkeypatch):
    def bad_answer(cfg, url):  # what a broken "what is my IP" server makes http.client raise
        raise http.client.BadStatusLine("HTTP/1.1 2OO garbage")

    def unreadable(cfg, lines):
        raise PermissionError(13, "Permission denied", "/var/log/vpn-director.log")
    monkeypatch.setattr(setup.router, "ip", bad_answer)
    monkeypatch.setattr(setup.router, "logs", unreadable)
    setup.fake.user_sends("/ip", date=setup.clock.t)
    setup.fake.user_sends("/logs", date=setup.clock.t)
    last = setup.fake.user_sends("/status", date=setup.clock.t)
    assert setup.bot.run(rounds=2) == 0  # start-up, then one poll: the loop went on
    texts = [p["text"] for p in setup.fake.sent()]
    assert texts[:2] == ["Failed: BadStatusLine: HTTP/1.1 2OO garbage",
                         "Failed: PermissionError: [Errno 13] Permission denied: '/var/log/vpn-director.log'"]
    assert len(texts) == 3 and "Tunnels" in texts[2] and setup.router.calls == ["status"]
    assert offsets(setup.fake)[-1] == last["update_id"] + 1  # all three confirmed
    assert setup.warned[0] == "bot: /ip failed: BadStatusLine: HTTP/1.1 2OO garbage"
    assert len(setup.warned) == 2 and all("Traceback (most recent call last)" in d for d in setup.debug)
    setup.fake.user_sends("/version")
    step(setup)  # the failed updates do not come back; the next one runs
    assert len(setup.fake.sent()) == 4 and setup.fake.sent()[-1]["text"].startswith("vpn-director ")
    assert setup.router.calls == ["status"]


def test_a_button_that_fails_unexpectedly_answers_without_the_token(setup, monkeypatch):
    def broken(cfg):
        raise RuntimeError("boom at /bot%s/getMe" % TOKEN)
    monkeypatch.setattr(setup.router, "status", broken)
    setup.fake.user_presses(callbacks.encode("abcdef", "st"), 101)  # Refresh
    setup.fake.user_sends("/version")
    step(setup)
    assert [p.get("text") for p in setup.fake.sent("answerCallbackQuery")] == [
        "Failed: RuntimeError: boom at /bot***/getMe"]
    assert setup.fake.sent()[-1]["text"].startswith("vpn-director ")
    logged = setup.warned + setup.debug
    assert logged and not any(TOKEN in line or TOKEN.split(":")[1] in line for line in logged)


def test_a_failure_outside_the_command_is_logged_and_the_update_confirmed(setup, monkeypatch):
    def broken(user, chat):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(setup.bot.access, "allowed", broken)
    first = setup.fake.user_sends("/status")
    step(setup)
    assert setup.warned == ["bot: update %d failed: OSError: [Errno 28] No space left on device"
                            % first["update_id"]]
    monkeypatch.undo()
    setup.fake.user_sends("/version")
    step(setup)
    assert offsets(setup.fake)[-1] == first["update_id"] + 1 and len(setup.fake.sent()) == 1


def test_an_unexpected_error_in_the_loop_backs_off_and_polls_again(setup, monkeypatch):
    calls, sleeps = [], []
    real = setup.bot.api.updates

    def flaky(offset, timeout):
        calls.append(offset)
        if len(calls) == 2:
            raise ValueError("a strange answer")
        return real(offset, timeout)
    monkeypatch.setattr(setup.bot.api, "updates", flaky)
    setup.bot.sleep = sleeps.append
    setup.fake.user_sends("/version")
    assert setup.bot.run(rounds=3) == 0
    assert sleeps == [1] and setup.warned == ["bot: polling (retrying in 1 s) failed: ValueError: a strange answer"]
    assert len(setup.fake.sent()) == 1


def test_transport_errors_are_the_bot_layer_s_and_still_back_off(setup):
    assert issubclass(Unreachable, BotError)
    setup.fake.close()  # Telegram gone: the poll cannot connect
    sleeps = []
    setup.bot.sleep = sleeps.append
    setup.bot.run(rounds=2)
    assert sleeps == [1, 2] and setup.warned[0].startswith("bot: Telegram unreachable (")


def test_an_alert_tick_that_fails_does_not_stop_the_next(tmp_path):
    fake = FakeBotApi()
    try:
        tg = settings.Telegram()
        tg.token, tg.api_base, tg.admins = TOKEN, fake.url, [ADMIN]
        inputs = [RuntimeError("events.jsonl: bad"), PermissionError(13, "Permission denied"),
                  {"tunnel wgc1": ("up", "")}, {"tunnel wgc1": ("blocked", "")}]

        class Router:
            def config(self):
                return None

            def alert_inputs(self, cfg, since):
                got = inputs.pop(0)
                if isinstance(got, Exception):
                    raise got
                return got, [], None

        clock, warned = [0.0], []
        bot = Bot(tg, Api(TOKEN, Transport(fake.url), sleep=lambda s: None), Router(), str(tmp_path),
                  clock=lambda: clock[0], log=lambda m: None, warn=warned.append, debug=lambda m: None)
        for _ in range(4):
            bot.tick_alerts()
            clock[0] += tg.alerts.interval_s
        assert inputs == [] and len(warned) == 2 and warned[0] == "bot: alerts failed: RuntimeError: events.jsonl: bad"
        assert [p["text"].split()[:3] for p in fake.sent()] == [["Tunnel", "wgc1", "is"]]
    finally:
        fake.close()
