"""`vpn-director bot` (the daemon) and `vpn-director bot pair` (a one-time pairing code).

Registered by the main command line; the bot's modules load only when one of these runs.
"""

import os
import sys

from ..errors import EXIT_OK


def register(sub, common):
    p = sub.add_parser("bot", help="the Telegram bot daemon: status, devices, servers and alerts in a chat",
                       description="Long-polls the Bot API with the token of telegram.token_file (or "
                                   "telegram.token) and answers the numeric user IDs in telegram.admins, in "
                                   "private chats only. telegram.proxy: direct, auto (direct, then Xray's "
                                   "SOCKS inbound) or socks5://127.0.0.1:PORT. Exits at once when telegram is "
                                   "not configured or telegram.enabled is false. SIGTERM ends it.")
    p.set_defaults(ops=cmd_run)
    acts = p.add_subparsers(dest="bot_action", metavar="[ACTION]")
    pair = acts.add_parser("pair", parents=[common],
                           help="print a one-time code (valid 10 minutes): /pair CODE in a private chat with "
                                "the bot adds that account to telegram.admins",
                           description="Print a one-time 8-digit code, valid 10 minutes. Sending /pair CODE to "
                                       "the bot from a private chat adds that Telegram account's numeric ID to "
                                       "telegram.admins (a config edit with a history version).")
    pair.set_defaults(ops=cmd_pair)


def _cfg(args, out):
    from ..ops import txn
    return txn.load(args.config, out.warn)


def cmd_pair(args, out):
    from .access import PAIR_VALID_S, Access
    cfg = _cfg(args, out)
    code = Access(cfg.telegram, cfg.state_dir).new_code()
    out.info("pairing code: %s (valid %d minutes, once)" % (code, PAIR_VALID_S // 60))
    out.info("send  /pair %s  to the bot from a private chat with the account to add" % code)
    if not cfg.telegram.configured:
        out.warn("telegram.token_file is not set yet: the bot cannot start without it")
    return EXIT_OK


def cmd_run(args, out):
    from .. import log
    from . import BotError, poller, settings
    from .api import Api
    from .router import Router
    from .transport import Transport
    cfg = _cfg(args, out)
    tg = cfg.telegram
    if not tg.configured or not tg.enabled:
        out.info("bot: %s; nothing to do" % ("telegram.enabled is false" if tg.configured else
                                             "no telegram.token_file in the config"))
        return EXIT_OK
    if os.geteuid() != 0:
        raise BotError("bot needs root: its commands change the routing")
    log.setup(args.verbose)
    problem = log.configure(cfg.log_syslog, cfg.log_file, cfg.log_max_bytes)
    if problem:
        out.warn(problem)
    token = settings.read_token(tg)
    fd = poller.lock(cfg.state_dir, token)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # under systemd each line reaches the journal at once
    try:
        api = None

        def say(msg):
            out.note(api.mask(msg) if api else msg)

        def warn(msg):
            out.warn(api.mask(msg) if api else msg)

        def debug(msg):  # tracebacks of unexpected errors: the log only, with -v
            log.debug(api.mask(msg) if api else msg)
        mode = "socks" if tg.proxy.startswith("socks5") else tg.proxy
        transport = Transport(tg.api_base, mode, tg.socks_port(cfg.xray.side.socks_port), log=say)
        api = Api(token, transport, log=say)
        bot = poller.Bot(tg, api, Router(cfg.path), cfg.state_dir, log=say, warn=warn, debug=debug)
        say("bot: started (PID %d), proxy %s" % (os.getpid(), tg.proxy))
        code = poller.serve(bot)
        say("bot: stopped")
        return code
    finally:
        os.close(fd)
