"""The bot over the shared operations layer (no kernel: edits are written, not applied): its device
list and its "direct" button are ops.devices and ops.clients.route_device, its server list
xray.actions.server_rows, as in the web UI."""

import json
import os

import pytest

from botfake import ADMIN, TOKEN, FakeBotApi
import test_ops
from test_ops import BASE
from vpn_director import config
from vpn_director.bot.api import Api
from vpn_director.bot.poller import Bot
from vpn_director.bot.router import Router
from vpn_director.bot.transport import Transport
from vpn_director.ops import devices, txn
from vpn_director.xray import actions
from webtest import SECRET_PASSWORD, SECRET_UUID, store_servers

conf = test_ops.conf  # the config fixture of the operations layer's tests


class WriteOnly(Router):
    """The real router, but an edit is written and kept in the history without an apply."""

    def edit(self, change):
        return txn.run(self.path, change, apply=False)


@pytest.fixture
def bot(conf):
    raw = json.loads(json.dumps(BASE))
    raw["telegram"] = {"token": TOKEN, "admins": [ADMIN]}
    path = conf(raw)
    cfg = config.load(path)
    os.makedirs(os.path.join(cfg.data_dir, "ipsets"))
    with open(os.path.join(cfg.data_dir, "ipsets", "ru.zone"), "w") as fh:
        fh.write("77.88.0.0/16\n")  # the country list a trace reads
    fake = FakeBotApi()
    b = Bot(cfg.telegram, Api(TOKEN, Transport(fake.url), sleep=lambda x: None), WriteOnly(path), cfg.state_dir,
            log=lambda m: None, warn=lambda m: None, alerts=False)
    b.fake, b.path, b.cfg = fake, path, cfg
    yield b
    fake.close()


def press(bot, label):
    bot.fake.user_presses(bot.fake.button(label), 101)
    bot.poll_once(timeout=0)


def test_direct_for_a_device_inside_a_routed_subnet_pauses_it(bot):
    bot.fake.user_sends("/devices")
    bot.poll_once(timeout=0)
    listed = [label for label, _ in bot.fake.last_buttons()]
    assert listed == [r["address"] + (" (%s)" % r["name"] if r["name"] else "") for r in devices.rows(bot.cfg)]
    press(bot, "192.168.50.24")
    assert "192.168.50.24 goes via wgc1" in bot.fake.sent("editMessageText")[-1]["text"]
    assert [label for label, _ in bot.fake.last_buttons()][:4] == ["via xray", "via wgc2", "direct", "Back"]
    press(bot, "direct")
    press(bot, "Confirm")
    text = bot.fake.sent("editMessageText")[-1]["text"]
    assert "client 192.168.50.24: paused (it is inside 192.168.50.0/24 of wgc1)" in text
    assert json.load(open(bot.path))["paused_clients"] == ["192.168.50.24"]
    row = next(r for r in bot.router.devices(config.load(bot.path)) if r["address"] == "192.168.50.24")
    assert (row["via"], row["paused"]) == ("direct", True)


def test_servers_are_the_shared_rows_without_credentials(bot):
    ids = store_servers(bot.cfg.data_dir)
    assert [r["id"] for r in bot.router.servers(bot.cfg)] == ids
    assert bot.router.servers(bot.cfg) == actions.server_rows(bot.cfg)
    raw = json.load(open(bot.path))
    raw["xray"]["active_server"] = ids[0]
    with open(bot.path, "w") as fh:
        json.dump(raw, fh)
    bot.fake.user_sends("/servers")
    bot.poll_once(timeout=0)
    text = bot.fake.sent()[-1]["text"]
    assert "First" in text and "Second" in text
    assert SECRET_UUID not in json.dumps(bot.fake.calls) and SECRET_PASSWORD not in json.dumps(bot.fake.calls)
    assert [label for label, _ in bot.fake.last_buttons()] == ["2 Second"]  # no switch to the active one


def test_trace_takes_a_device_name_or_mac_like_the_web_ui(bot):
    for token in ("annas-phone", "aa:bb:cc:dd:ee:01", "192.168.50.23"):
        bot.fake.user_sends("/trace %s 8.8.8.8" % token)
    bot.fake.user_sends("/trace 192.168.50.0/24 8.8.8.8")  # a subnet is no device
    bot.poll_once(timeout=0)
    texts = [p["text"] for p in bot.fake.sent()]
    assert all(t.startswith("192.168.50.23 → 8.8.8.8: <b>wgc1</b>") for t in texts[:3]), texts
    assert len(texts) == 4 and texts[3].startswith("Failed: 192.168.50.0/24 is a subnet")  # one device only
