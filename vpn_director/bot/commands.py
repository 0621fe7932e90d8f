"""The commands: one TABLE gives /help and setMyCommands; each handler is a thin call into the
router (reports, ops, xray actions) with validated arguments, and answers in escaped HTML.

handler(bot, ctx, args): ctx is the Request (chat, user, language), args the words after the
command. Nothing a user types reaches a shell or a kernel tool's command line. The rules for
what an argument may be live in one place each, shared with the command line and the web UI:
an exclusion's target and list in ops.excludes (its change raises OpsError with the reason),
a trace's addresses in reports.check_trace_args, a device in ops.names.resolve; this module
checks only the shape of a command (how many words, a number's range) and shows the reason.
Every text a user sees comes from strings.py (telegram.language).
"""

import re
import sys

from .. import __version__, config
from ..errors import VpdError
from . import buttons, callbacks
from .render import b, esc, pre_chunks, status_html, table

MAX_LOG_LINES = 2000
SERVER_KEY_RE = re.compile(r"^[A-Za-z0-9 ._()#-]{1,48}$")
LINK_SCHEMES = ("vless", "vmess", "trojan", "ss", "hysteria2", "hy2")


def cmd_help(bot, ctx, args):
    lines = [esc(bot.t(ctx, "help_head"))] + ["/%s - %s" % (name, esc(bot.t(ctx, "cmd_" + name)))
                                              for name, _ in TABLE]
    bot.reply(ctx, "\n".join(lines))


def cmd_status(bot, ctx, args):
    cfg = bot.router.config()
    rep = bot.router.status(cfg)
    bot.reply(ctx, status_html(bot, ctx, rep),
              [[{"text": bot.t(ctx, "refresh"), "callback_data": callbacks.encode(callbacks.tag(cfg), "st")}]])


def cmd_devices(bot, ctx, args):
    buttons.device_list(bot, ctx, bot.router.config(), all_devices=True)


def cmd_clients(bot, ctx, args):
    buttons.device_list(bot, ctx, bot.router.config(), all_devices=False)


def cmd_exclude(bot, ctx, args):
    from ..ops import excludes
    if not args:
        cfg = bot.router.config()
        rows = [("xray", ", ".join(cfg.xray.exclude_sets + [str(n) for n in cfg.xray.exclude_ips]) or "-")]
        rows += [(t.name, ", ".join(t.exclude) or "-") for t in cfg.tunnels]
        bot.reply(ctx, b(bot.t(ctx, "exclusions")) + "\n" + pre_chunks(table(rows))[0] + "\n"
                  + esc(bot.t(ctx, "exclude_usage")))
        return
    if len(args) not in (2, 3) or args[0] not in ("add", "remove"):
        return bot.reply(ctx, esc(bot.t(ctx, "exclude_usage")))
    change = (excludes.add if args[0] == "add" else excludes.remove)(*args[1:])  # it checks both: OpsError
    bot.reply(ctx, bot.edit_result(ctx, change))


def cmd_trace(bot, ctx, args):
    from .. import reports
    if len(args) != 2:
        return bot.reply(ctx, esc(bot.t(ctx, "trace_usage")))
    cfg = bot.router.config()
    try:
        net, _ = bot.router.resolve(cfg, args[0])
        src = str(net.network_address)
        reports.check_trace_args(src, args[1])
    except VpdError as e:
        return bot.reply(ctx, bot.failed(ctx, e) + "\n" + esc(bot.t(ctx, "trace_usage")))
    rep = bot.router.trace(cfg, src, args[1])
    head = "%s → %s: %s" % (esc(src), esc(args[1]), b(rep.get("tunnel") or rep.get("route")))
    detail = [bot.t(ctx, "trace_detail", table=rep.get("table"), mark=rep.get("mark"))] + list(rep.get("steps", []))
    bot.reply(ctx, head + "\n" + pre_chunks(detail)[0])


def cmd_logs(bot, ctx, args):
    n = 30
    if args:
        if not (args[0].isascii() and args[0].isdigit() and 1 <= int(args[0]) <= MAX_LOG_LINES):
            return bot.reply(ctx, esc(bot.t(ctx, "cmd_logs")))
        n = int(args[0])
    lines = bot.router.logs(bot.router.config(), n)
    if lines is None:
        return bot.reply(ctx, esc(bot.t(ctx, "logs_none")))
    if not lines:
        return bot.reply(ctx, esc(bot.t(ctx, "logs_empty")))
    chunks = pre_chunks(lines)
    if len(chunks) > bot.max_chunks:
        bot.api.document(ctx.chat, "vpn-director.log", ("\n".join(lines) + "\n").encode("utf-8"),
                         caption=esc(bot.t(ctx, "log_lines", n=len(lines))))
        return
    for chunk in chunks:
        bot.reply(ctx, chunk)


def cmd_ip(bot, ctx, args):
    cfg = bot.router.config()
    rows = []
    for path, (addr, why) in bot.router.ip(cfg, cfg.telegram.ip_url):
        rows.append((bot.t(ctx, "direct") if path == "direct" else path, addr or bot.t(ctx, "unmeasured", why=why)))
    bot.reply(ctx, b(bot.t(ctx, "ip_head")) + "\n" + pre_chunks(table(rows))[0])


def cmd_version(bot, ctx, args):
    bot.reply(ctx, esc(bot.t(ctx, "version", version=__version__, python=sys.version.split()[0])))


def cmd_servers(bot, ctx, args):
    buttons.server_list(bot, ctx, bot.router.config())


def cmd_switch(bot, ctx, args):
    key = " ".join(args)
    if not SERVER_KEY_RE.match(key):
        return bot.reply(ctx, esc(bot.t(ctx, "switch_usage")))
    cfg = bot.router.config()
    if not config.xray_enabled(cfg):
        return bot.reply(ctx, esc(bot.t(ctx, "no_xray")))
    buttons.ask(bot, ctx, cfg, ("switch", key), bot.t(ctx, "ask_switch", server=key))


def cmd_import(bot, ctx, args):
    link = args[0] if len(args) == 1 else ""
    scheme = link.split("://", 1)[0].lower() if "://" in link else ""
    if scheme not in LINK_SCHEMES or len(link) > 4096:
        return bot.reply(ctx, esc(bot.t(ctx, "import_usage")))
    cfg = bot.router.config()
    try:
        counts, added, known, stored = bot.router.import_text(cfg, link)
    except VpdError as e:
        return bot.reply(ctx, esc(bot.t(ctx, "failed", error=e)))
    bot.reply(ctx, esc(bot.t(ctx, "imported", counts=counts, added=added, known=known)))


# name -> handler; the order is the order of /help and of Telegram's command menu
TABLE = [
    ("status", cmd_status), ("devices", cmd_devices), ("clients", cmd_clients), ("exclude", cmd_exclude),
    ("trace", cmd_trace), ("logs", cmd_logs), ("ip", cmd_ip), ("servers", cmd_servers), ("switch", cmd_switch),
    ("import", cmd_import), ("version", cmd_version), ("help", cmd_help), ("pair", None),
]
HANDLERS = dict(TABLE, start=cmd_help)


def menu(bot, lang):
    """setMyCommands' list for a language, from TABLE."""
    from .strings import text
    return [(name, text(lang, "cmd_" + name)) for name, _ in TABLE]
