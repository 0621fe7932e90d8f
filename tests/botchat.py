"""A bot in a chat for the command tests: canned router data (FakeRouter, every call recorded),
a config file with one tunnel, a frozen clock, and the fake Bot API (botfake)."""

import json

from botfake import ADMIN, TOKEN, FakeBotApi
from vpn_director import config
from vpn_director.bot.api import Api
from vpn_director.bot.poller import Bot
from vpn_director.bot.router import Router
from vpn_director.bot.transport import Transport


class Clock:
    def __init__(self, t=1_800_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


class Outcome:
    def __init__(self, summary, notes=()):
        self.summary, self.notes, self.warnings, self.cfg = summary, list(notes), [], None


class FakeRouter(Router):
    """Canned router data with a script tag in it; every call is recorded."""

    def __init__(self, path):
        super().__init__(path)
        self.calls = []

    def status(self, cfg):
        self.calls.append("status")
        return {"ok": False, "objects": [{"kind": "set", "name": "XRAY_CLIENTS", "status": "MISSING"},
                                         {"kind": "set", "name": "de", "status": "OK", "country": True,
                                          "listed": 12, "fetched": "2026-01-01 04:17"}],
                "tunnels": [{"tunnel": "wgc1", "state": "UP", "kill_switch": True}],
                "warnings": ["client <script>alert(1)</script> & co"]}

    def clients(self, cfg):
        self.calls.append("clients")
        return [{"address": "192.168.50.10", "name": "Anna's <phone>", "via": "xray", "paused": False,
                 "listed_in": ["xray"]}]

    devices = clients

    def edit(self, change):
        self.calls.append("edit")
        return Outcome("client 192.168.50.10: xray → wgc1")

    def logs(self, cfg, lines):
        self.calls.append("logs")
        return ["line %d <tag> & a_b *x*" % i + " " + "y" * 100 for i in range(lines)]

    def trace(self, cfg, src, dst):
        self.calls.append("trace")
        return {"route": "tunnel", "tunnel": "wgc1", "table": "wgc1", "mark": "0x10000", "steps": ["a <b>"]}


def chat(tmp_path, language="en"):
    """A bot (no alerts) with a FakeRouter, answering the fake Bot API; close s.fake after."""
    rt = tmp_path / "rt_tables"
    rt.write_text("111 wgc1\n")
    raw = {"data_dir": str(tmp_path / "data"), "xray": {"clients": ["192.168.50.10"], "exclude_sets": []},
           "tunnel_director": {"tunnels": {"wgc1": {"clients": []}}},
           "advanced": {"state_dir": str(tmp_path / "state"), "rt_tables": str(rt)},
           "telegram": {"token_file": str(tmp_path / "token"), "admins": [ADMIN], "allowed_users": ["@old_admin"],
                        "language": language}}
    path = tmp_path / "vpn-director.json"
    path.write_text(json.dumps(raw, indent=1))
    fake = FakeBotApi()
    clock = Clock()
    router = FakeRouter(str(path))
    cfg = config.load(str(path))

    class Setup:
        pass
    s = Setup()
    s.path, s.fake, s.clock, s.router, s.cfg = str(path), fake, clock, router, cfg
    s.bot = Bot(cfg.telegram, Api(TOKEN, Transport(fake.url), sleep=lambda x: None), router, cfg.state_dir,
                clock=clock, log=lambda m: None, warn=lambda m: None, alerts=False)
    return s


def step(s):
    s.bot.poll_once(timeout=0)
