"""Run inside the lab's router namespace by test_bot_kernel: a fake Bot API on the namespace's
own 127.0.0.1 and the real bot (real Router: operations layer, apply on this kernel). A user
sends /clients, taps a device, taps "via TUNNEL" and confirms; prints what the bot sent."""

import json
import sys

from botfake import ADMIN, TOKEN, FakeBotApi
from vpn_director import config
from vpn_director.bot.api import Api
from vpn_director.bot.poller import Bot
from vpn_director.bot.router import Router
from vpn_director.bot.transport import Transport


def main(path, device, tunnel):
    fake = FakeBotApi()
    cfg = config.load(path)
    bot = Bot(cfg.telegram, Api(TOKEN, Transport(fake.url), sleep=lambda s: None), Router(path), cfg.state_dir,
              log=lambda m: None, warn=lambda m: None, alerts=False)
    fake.user_sends("/clients")
    bot.poll_once(0)
    listed = fake.sent()[-1]
    fake.user_presses(next(d for t, d in fake.last_buttons() if t.startswith(device)), 101, user=ADMIN)
    bot.poll_once(0)
    fake.user_presses(fake.button("via %s" % tunnel), 101)
    bot.poll_once(0)
    question = fake.sent("editMessageText")[-1]["text"]
    fake.user_presses(fake.button("Confirm"), 101)
    bot.poll_once(0)
    print(json.dumps({"list": listed["text"], "question": question,
                      "result": fake.sent("editMessageText")[-1]["text"]}))
    fake.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
