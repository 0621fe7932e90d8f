"""The bot's Bot API client and transport against a fake Bot API and a fake SOCKS5 proxy:
429 waits and sends once, 409 backs off, 401 stops, 5xx backs off, the token never shows,
SOCKS gets the host name, TLS is verified end to end."""

import socket

import pytest

from botfake import ADMIN, TOKEN, FakeBotApi, FakeSocks, server_context, tls_files
from vpn_director.bot import BotError, settings
from vpn_director.bot.api import Api, ApiError
from vpn_director.bot.poller import Bot
from vpn_director.bot.transport import Transport, Unreachable


class Sleeps(list):
    def __call__(self, seconds):
        self.append(seconds)


@pytest.fixture
def fake():
    f = FakeBotApi()
    yield f
    f.close()


def make_api(fake, sleeps, **kw):
    return Api(TOKEN, Transport(fake.url, **kw), sleep=sleeps)


def quick(bot):
    bot.long_poll = 0  # tests do not wait in long polls
    return bot


def tg_settings(url, **kw):
    t = settings.Telegram()
    t.token, t.api_base, t.admins = TOKEN, url, [ADMIN]
    t.alerts.enabled = False
    for k, v in kw.items():
        setattr(t, k, v)
    return t


def test_429_waits_retry_after_then_sends_once(fake):
    sleeps = Sleeps()
    api = make_api(fake, sleeps)
    fake.fail("sendMessage", 429, retry_after=7)
    api.send(ADMIN, "one")
    api.send(ADMIN, "two")
    assert sleeps == [7]  # the call after the 429 waited as told
    assert [p["text"] for p in fake.sent()] == ["one", "two"]  # nothing lost, nothing doubled
    assert [m for m, _ in fake.calls] == ["sendMessage"] * 3


def test_401_stops_the_bot_with_bad_token(fake, tmp_path):
    fake.fail("getUpdates", 401, times=5)
    sleeps, logs = Sleeps(), []
    bot = quick(Bot(tg_settings(fake.url), make_api(fake, sleeps), None, str(tmp_path), sleep=sleeps, log=logs.append,
              warn=logs.append))
    with pytest.raises(BotError, match="bad token"):
        bot.run(rounds=10)
    assert sleeps == [] and [m for m, _ in fake.calls].count("getUpdates") == 1


def test_409_backs_off_and_logs_once_per_step(fake, tmp_path):
    fake.fail("getUpdates", 409, times=5)
    sleeps, warnings = Sleeps(), []
    bot = quick(Bot(tg_settings(fake.url), make_api(fake, sleeps), None, str(tmp_path), sleep=sleeps,
              log=lambda m: None, warn=warnings.append))
    bot.run(rounds=6)
    assert sleeps == [30, 60, 120, 300, 300]
    assert len(warnings) == 4 and all("another instance" in w for w in warnings)
    # five refused start-ups; the sixth confirms what waited (none), sets the commands and polls
    assert [m for m, _ in fake.calls].count("getUpdates") == 7
    assert [m for m, _ in fake.calls].count("setMyCommands") == 2


def test_5xx_and_network_errors_back_off_exponentially(fake, tmp_path):
    fake.fail("getUpdates", 502, times=3)
    sleeps = Sleeps()
    bot = quick(Bot(tg_settings(fake.url), make_api(fake, sleeps), None, str(tmp_path), sleep=sleeps,
              log=lambda m: None, warn=lambda m: None))
    bot.run(rounds=4)
    assert sleeps == [1, 2, 4]


def test_the_token_is_in_no_error_or_log_line(fake, tmp_path):
    sleeps = Sleeps()
    api = make_api(fake, sleeps)
    fake.fail("sendMessage", 400, description="Bad Request: chat bot%s not found" % TOKEN)
    with pytest.raises(ApiError) as e:
        api.send(ADMIN, "x")
    assert TOKEN not in str(e.value) and TOKEN.split(":")[1] not in str(e.value)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    dead = Api(TOKEN, Transport("http://127.0.0.1:%d" % port), sleep=sleeps)
    with pytest.raises(Unreachable) as e:
        dead.send(ADMIN, "x")
    assert TOKEN not in str(e.value) and "refused" in str(e.value).lower()
    assert dead.mask("url /bot%s/getMe" % TOKEN) == "url /bot***/getMe"


def _closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_direct_refused_goes_through_socks_with_the_host_name_and_verified_tls(tmp_path):
    ca, cert, key = tls_files(tmp_path)
    fake = FakeBotApi(context=server_context(cert, key))
    proxy = FakeSocks(("127.0.0.1", fake.port))
    refused = _closed_port()
    base = "https://api.telegram.org:%d" % fake.port
    direct_tries = []

    def direct(host, port, timeout):  # the direct path: refused (a real refused TCP connection)
        direct_tries.append((host, port))
        return socket.create_connection(("127.0.0.1", refused), timeout)
    try:
        transport = Transport(base, "auto", proxy.port, cafile=ca, direct_connect=direct)
        api = Api(TOKEN, transport, sleep=Sleeps())
        api.send(ADMIN, "<b>hello</b>")
        assert direct_tries == [("api.telegram.org", fake.port)]
        assert proxy.requests == [(3, "api.telegram.org", fake.port)]  # ATYP 3: the name, no lookup here
        assert [p["text"] for p in fake.sent()] == ["<b>hello</b>"]
        assert transport.used == ["socks"]
        api.send(ADMIN, "again")  # the working path is kept
        assert len(direct_tries) == 1 and transport.used == ["socks", "socks"]

        # without the test CA the same server is not trusted: TLS is verified, not just encrypted
        untrusted = Api(TOKEN, Transport(base, "socks", proxy.port), sleep=Sleeps())
        with pytest.raises(Unreachable, match="certificate"):
            untrusted.send(ADMIN, "never")
        assert [p["text"] for p in fake.sent()] == ["<b>hello</b>", "again"]
    finally:
        proxy.close()
        fake.close()


def test_direct_mode_never_uses_the_proxy(tmp_path):
    refused = _closed_port()
    transport = Transport("http://127.0.0.1:%d" % refused, "direct", 9)
    with pytest.raises(Unreachable, match="direct"):
        Api(TOKEN, transport, sleep=Sleeps()).send(ADMIN, "x")
    assert transport.used == []
