"""The bot's commands, access rules and pairing against a fake Bot API. The router calls are
counted by a stand-in, except where the edit itself is the point (pairing goes through the
operations layer into the config file and its history)."""

import json
import os
import re

import pytest

from botchat import chat, step
from botfake import ADMIN, TOKEN
from vpn_director import config
from vpn_director.bot import BotError, callbacks, commands, settings
from vpn_director.bot.access import Access
from vpn_director.bot.router import Router
from vpn_director.errors import ConfigError
from vpn_director.ops import history

STRANGER = 2002


@pytest.fixture
def setup(tmp_path):
    s = chat(tmp_path)
    yield s
    s.fake.close()


def test_status_from_an_admin_is_one_escaped_html_message(setup):
    setup.fake.user_sends("/status")
    step(setup)
    sent = setup.fake.sent()
    assert len(sent) == 1 and sent[0]["parse_mode"] == "HTML" and sent[0]["chat_id"] == ADMIN
    html = sent[0]["text"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in html and "<script>" not in html
    assert "wgc1" in html and "MISSING" in html
    assert setup.router.calls == ["status"]
    assert setup.fake.last_buttons()[0][0] == "Refresh"
    # Refresh edits the same message in place
    setup.fake.user_presses(setup.fake.button("Refresh"), sent[0].get("message_id", 101))
    step(setup)
    assert len(setup.fake.sent()) == 1 and len(setup.fake.sent("editMessageText")) == 1
    assert setup.fake.sent("answerCallbackQuery")


@pytest.mark.parametrize("who", ["stranger", "group", "taken_over", "bot"])
def test_no_router_data_for_anyone_else(setup, who):
    if who == "taken_over":
        setup.fake.user_sends("/help", user=3003, username="Old_Admin")  # first contact pins the name
        step(setup)
        assert json.load(open(os.path.join(setup.cfg.state_dir, "bot-pins.json"))) == {"old_admin": 3003}
        setup.fake.ok_calls.clear()
        setup.fake.user_sends("/status", user=4004, username="old_admin")  # someone else took the name
    elif who == "group":
        setup.fake.user_sends("/status", chat_type="group", chat=-100123)  # an admin, but in a group
    elif who == "bot":  # another bot's account, even with an admin's ID (access.py refuses is_bot)
        setup.fake.user_sends("/status", is_bot=True)
        setup.fake.user_presses(callbacks.encode(callbacks.tag(setup.cfg), "x", "192.168.50.10"), 5, is_bot=True)
    else:
        setup.fake.user_sends("/status", user=STRANGER)
        setup.fake.user_sends("/clients", user=STRANGER)
    step(setup)
    assert setup.router.calls == []  # no engine call, no report
    assert setup.fake.sent("editMessageText") == [] and all(
        not p.get("text") for p in setup.fake.sent("answerCallbackQuery"))
    texts = [p["text"] for p in setup.fake.sent()]
    assert all(t == "This bot is private." for t in texts)
    assert len(texts) <= 1 and (who != "group" or texts == [])


def test_a_pinned_username_keeps_working(setup):
    setup.fake.user_sends("/status", user=3003, username="old_admin")
    setup.fake.user_sends("/status", user=3003, username="old_admin")
    step(setup)
    assert setup.router.calls == ["status", "status"]


def test_help_and_set_my_commands_come_from_one_table(setup):
    setup.bot.start()
    menu = [c["command"] for p in setup.fake.sent("setMyCommands")[:1] for c in p["commands"]]
    assert menu == [name for name, _ in commands.TABLE]
    setup.fake.user_sends("/help")
    step(setup)
    listed = re.findall(r"^/(\w+) ", setup.fake.sent()[-1]["text"], re.M)
    assert listed == menu
    assert {p.get("language_code") for p in setup.fake.sent("setMyCommands")} == {None, "ru"}


def test_route_via_asks_and_only_the_same_user_confirms_within_60s(setup):
    tag = callbacks.tag(setup.cfg)
    setup.fake.user_sends("/clients")
    step(setup)
    assert "Anna&#x27;s &lt;phone&gt;" in setup.fake.sent()[0]["text"] or "Anna's &lt;phone&gt;" in \
        setup.fake.sent()[0]["text"]
    setup.fake.user_presses(setup.fake.last_buttons()[0][1], 101)
    step(setup)
    via = setup.fake.button("via wgc1")
    assert via == callbacks.encode(tag, "m", "192.168.50.10", "0")
    setup.fake.user_presses(via, 101)
    step(setup)
    assert "Route 192.168.50.10 via wgc1?" in setup.fake.sent("editMessageText")[-1]["text"]
    confirm = setup.fake.button("Confirm")
    assert setup.router.calls.count("edit") == 0
    setup.fake.user_presses(confirm, 101, user=3003, username="old_admin")  # another allowed user
    step(setup)
    assert setup.router.calls.count("edit") == 0
    setup.clock.t += 61
    setup.fake.user_presses(confirm, 101)  # too late
    step(setup)
    assert setup.router.calls.count("edit") == 0
    assert "expired" in setup.fake.sent("editMessageText")[-1]["text"]

    setup.fake.user_presses(via, 101)
    step(setup)
    setup.fake.user_presses(setup.fake.button("Confirm"), 101)
    step(setup)
    assert setup.router.calls.count("edit") == 1
    assert "Done: client 192.168.50.10: xray → wgc1" in setup.fake.sent("editMessageText")[-1]["text"]
    setup.fake.user_presses(confirm, 101)  # used once: a second press does nothing
    step(setup)
    assert setup.router.calls.count("edit") == 1


def test_only_the_user_who_asked_can_cancel(setup):
    setup.fake.user_sends("/clients")
    step(setup)
    setup.fake.user_presses(setup.fake.last_buttons()[0][1], 101)
    step(setup)
    setup.fake.user_presses(setup.fake.button("via wgc1"), 101)
    step(setup)
    confirm, cancel = setup.fake.button("Confirm"), setup.fake.button("Cancel")
    setup.fake.user_presses(cancel, 101, user=3003, username="old_admin")  # another allowed user
    step(setup)
    assert "expired" in setup.fake.sent("editMessageText")[-1]["text"]
    setup.fake.user_presses(confirm, 101)  # still the asker's to confirm
    step(setup)
    assert setup.router.calls.count("edit") == 1


def test_a_button_from_an_older_config_says_outdated_and_does_nothing(setup):
    old = callbacks.encode("abcdef", "x", "192.168.50.10")
    setup.fake.user_presses(old, 101)
    setup.fake.user_presses("0|whatever", 101)  # another format version
    step(setup)
    answers = [p.get("text") for p in setup.fake.sent("answerCallbackQuery")]
    assert len(answers) == 2 and all("outdated" in a for a in answers)
    assert setup.router.calls == [] and setup.fake.sent("editMessageText") == []


def test_logs_are_split_into_balanced_messages_or_sent_as_a_document(setup):
    setup.fake.user_sends("/logs 60")
    step(setup)
    msgs = [p["text"] for p in setup.fake.sent()]
    assert len(msgs) == 2
    for m in msgs:
        assert len(m) <= 4096 and m.startswith("<pre>") and m.endswith("</pre>") and m.count("<pre>") == 1
        assert "<tag>" not in m and "&lt;tag&gt; &amp; a_b *x*" in m
    setup.fake.user_sends("/logs 500")
    step(setup)
    assert len(setup.fake.sent()) == 2 and len(setup.fake.sent("sendDocument")) == 1
    for bad in ("/logs 0", "/logs 99999", "/logs ;rm"):
        setup.fake.user_sends(bad)
    step(setup)
    assert setup.router.calls.count("logs") == 2


def test_trace_and_exclude_validate_their_input(setup):
    for text in ("/trace 192.168.50.10 not-an-ip", "/trace", "/trace nobody 8.8.8.8", "/exclude drop de",
                 "/switch $(reboot)"):
        setup.fake.user_sends(text)
    step(setup)
    assert setup.router.calls == []
    said = [p["text"] for p in setup.fake.sent()]
    usage = "/trace DEVICE DEST: a device name, MAC or address, then an IPv4 destination."
    assert said[0] == "Failed: DST 'not-an-ip' is not an IPv4 address\n" + usage  # reports.check_trace_args
    assert said[1] == usage and said[2].startswith("Failed: 'nobody' is not an IPv4 address or CIDR, and no device")
    assert said[3].startswith("/exclude add|remove") and said[4].startswith("/switch N|ID|NAME")
    setup.fake.user_sends("/trace 192.168.50.10 8.8.8.8")
    setup.fake.user_sends("/exclude add DE wgc1")
    step(setup)
    assert setup.router.calls == ["trace", "edit"]
    assert "&lt;b&gt;" in setup.fake.sent()[-2]["text"]


def test_exclude_targets_and_lists_are_checked_by_the_operations_layer(setup):
    setup.bot.router = Router(setup.path)  # the real operations layer; none of these edits is made
    before = open(setup.path).read()
    for text in ("/exclude add russia", "/exclude add de nowhere", "/exclude add 0.0.0.0/0",
                 "/exclude add 10.0.0.0/8 wgc1", "/exclude remove my_set"):
        setup.fake.user_sends(text)
    step(setup)
    assert [p["text"] for p in setup.fake.sent()] == [
        "Failed: 'russia' is not a two-letter country code, an IPv4 address or a CIDR",
        "Failed: unknown tunnel 'nowhere': the tunnels are wgc1 (add one with `vpn-director tunnel add nowhere`)",
        "Failed: excluding 0.0.0.0/0 would take every destination out",
        "Failed: a tunnel excludes country lists only; an address can be excluded from xray "
        "(`vpn-director exclude add ADDR`)",
        "Failed: 'my_set' is not a two-letter country code, an IPv4 address or a CIDR"]
    assert open(setup.path).read() == before


# --- pairing through the operations layer ---------------------------------------------------------

@pytest.fixture
def pairing(setup):
    setup.bot.router = Router(setup.path)  # the real operations layer: txn.run into the file
    return setup


def test_pair_code_adds_the_id_through_the_operations_layer(pairing):
    s = pairing
    code = Access(s.cfg.telegram, s.cfg.state_dir, s.clock).new_code()
    assert os.stat(os.path.join(s.cfg.state_dir, "bot-pair.json")).st_mode & 0o777 == 0o600
    s.fake.user_sends("/version", user=5005)
    s.fake.user_sends("/pair %s" % code, user=5005)
    s.fake.user_sends("/version", user=5005)
    step(s)
    assert json.load(open(s.path))["telegram"]["admins"] == [ADMIN, 5005]
    assert history.versions(s.cfg.data_dir)[-1].summary == "telegram: user ID 5005 paired as admin"
    assert "Paired" in s.fake.sent()[1]["text"]
    assert s.fake.sent()[0]["text"] == "This bot is private." and "vpn-director" in s.fake.sent()[2]["text"]
    s.fake.user_sends("/pair %s" % code, user=6006)  # used up
    step(s)
    assert json.load(open(s.path))["telegram"]["admins"] == [ADMIN, 5005]



@pytest.mark.parametrize("case", ["wrong", "expired", "group"])
def test_a_wrong_or_expired_code_does_nothing(pairing, case):
    s = pairing
    before = open(s.path, "rb").read()
    code = Access(s.cfg.telegram, s.cfg.state_dir, s.clock).new_code()
    if case == "wrong":
        s.fake.user_sends("/pair %08d" % ((int(code) + 1) % 10 ** 8), user=5005)
    elif case == "expired":
        s.clock.t += 601
        s.fake.user_sends("/pair %s" % code, user=5005)
    else:
        s.fake.user_sends("/pair %s" % code, user=5005, chat_type="group", chat=-100)
    step(s)
    assert open(s.path, "rb").read() == before
    assert history.versions(s.cfg.data_dir) == []


def test_old_updates_at_start_up_are_confirmed_not_run(setup):
    setup.fake.user_sends("/status", date=setup.clock.t - 3600)  # sent an hour before the start
    setup.fake.user_sends("/clients", date=setup.clock.t - 3600)
    setup.fake.user_sends("/status", date=setup.clock.t - 10)  # recent: runs
    skipped = setup.bot.start()
    assert skipped == 2 and setup.router.calls == ["status"]
    assert sum("Not run: /status" in p["text"] or "Not run: /clients" in p["text"] for p in setup.fake.sent()) == 2
    step(setup)  # confirmed: nothing comes again
    assert setup.router.calls == ["status"]
    offsets = [p.get("offset") for m, p in setup.fake.ok_calls if m == "getUpdates"]
    assert offsets[-1] == 4


# --- settings ---------------------------------------------------------------------------------------

def test_settings_problems_have_json_paths_and_never_show_the_token():
    with pytest.raises(ConfigError) as e:
        config.validate({"telegram": {"token": "not a token " + TOKEN[:5], "admins": [1, "@bob", True],
                                      "proxy": "socks5://10.0.0.1:1080", "api_base": "http://api.example.org",
                                      "language": "de", "alerts": {"interval_s": 1}}})
    text = str(e.value)
    for path in ("telegram.token", "telegram.admins[1]", "telegram.admins[2]", "telegram.proxy",
                 "telegram.api_base", "telegram.language", "telegram.alerts.interval_s"):
        assert path + ":" in text
    assert "not a token" not in text
    cfg = config.validate({"telegram": {"token_file": "/etc/vpd-bot-token", "admins": [42], "proxy": "auto"}})
    assert cfg.telegram.configured and cfg.telegram.socks_port(12346) == 12346
    assert config.validate({}).telegram.configured is False


def test_token_file_must_be_private(tmp_path):
    t = settings.Telegram()
    t.token_file = str(tmp_path / "token")
    (tmp_path / "token").write_text(TOKEN + "\n")
    os.chmod(t.token_file, 0o644)
    with pytest.raises(BotError, match="chmod 600") as e:
        settings.read_token(t)
    assert TOKEN not in str(e.value)
    os.chmod(t.token_file, 0o600)
    assert settings.read_token(t) == TOKEN


def test_bot_exits_at_once_when_not_configured(tmp_path, capsys):
    from vpn_director import cli
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"advanced": {"state_dir": str(tmp_path / "s")},
                                "telegram": {"token_file": "/nonexistent", "enabled": False}}))
    assert cli.main(["-c", str(path), "bot"]) == 0
    assert capsys.readouterr().out.strip() == "bot: telegram.enabled is false; nothing to do"
    path.write_text(json.dumps({"advanced": {"state_dir": str(tmp_path / "s")}}))
    assert cli.main(["-c", str(path), "bot"]) == 0


def test_bot_pair_prints_a_code(tmp_path, capsys):
    from vpn_director import cli
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"advanced": {"state_dir": str(tmp_path / "s")}}))
    assert cli.main(["-c", str(path), "bot", "pair"]) == 0
    out = capsys.readouterr().out
    code = re.search(r"pairing code: (\d{8}) \(valid 10 minutes", out).group(1)
    assert Access(None, str(tmp_path / "s")).take_code(code)


def test_settings_import_nothing_heavy():
    import subprocess
    import sys
    code = ("import sys; import vpn_director.bot.settings; "
            "bad = [m for m in ('dataclasses', 'typing', 'socket', 'ssl', 'urllib.request', 'http.client', "
            "'logging') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(__file__))))
    assert out.stdout.strip() == "[]", out.stderr


def test_an_admin_removed_from_the_file_is_refused_at_once(setup):
    setup.fake.user_sends("/status")
    step(setup)
    raw = json.load(open(setup.path))
    raw["telegram"]["admins"] = [7007]
    with open(setup.path + ".new", "w") as fh:
        json.dump(raw, fh)
    os.replace(setup.path + ".new", setup.path)  # as an edit does: a new file in place
    setup.fake.user_sends("/status")
    step(setup)
    assert setup.router.calls == ["status"]
    assert setup.fake.sent()[-1]["text"] == "This bot is private."
