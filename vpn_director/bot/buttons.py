"""Inline buttons: device and server lists, a device's menu, and confirmations.

Every change asks first: the Confirm button is bound to the user who asked and is valid
CONFIRM_S seconds; the pending change lives only in this process (a restart voids it). Every
button carries callbacks' config tag: pressed on a message made from an older config, it says
the message is outdated and does nothing.
"""

import secrets

from .. import config
from . import callbacks
from .render import b, button, esc, pre_chunks, status_html, table

CONFIRM_S = 60
MAX_BUTTONS = 40
MAX_SERVERS = 30


def _label(row):
    return "%s (%s)" % (row["address"], row["name"]) if row.get("name") else row["address"]


def device_list(bot, ctx, cfg, all_devices, edit=None):
    rows = bot.router.devices(cfg) if all_devices else bot.router.clients(cfg)
    if not rows:
        return bot.reply(ctx, esc(bot.t(ctx, "devices_none" if all_devices else "clients_none")), edit=edit)
    tag = callbacks.tag(cfg)
    lines = table([(r["address"], r.get("name") or "-", r["via"] + (" " + bot.t(ctx, "paused_mark") if r.get("paused") else ""))
                   for r in rows])
    keys = [button(_label(r)[:40], callbacks.encode(tag, "d", r["address"])) for r in rows[:MAX_BUTTONS]]
    grid = [keys[i:i + 2] for i in range(0, len(keys), 2)]
    chunks = pre_chunks(lines)
    for chunk in chunks[:-1]:
        bot.reply(ctx, chunk)
    bot.reply(ctx, chunks[-1] + "\n" + esc(bot.t(ctx, "pick_device")), grid, edit=edit)


def device_menu(bot, ctx, cfg, addr, edit):
    row = next((r for r in bot.router.devices(cfg) if r["address"] == addr), None)
    if row is None:
        return bot.reply(ctx, esc(bot.t(ctx, "outdated")), edit=edit)
    tag = callbacks.tag(cfg)
    from ..ops import devices
    index = {t.name: str(i) for i, t in enumerate(cfg.tunnels)}
    ways = [("x" if via == "xray" else index[via], via) for via in devices.vias(cfg)]
    keys = [button(bot.t(ctx, "via", via=name), callbacks.encode(tag, "m", addr, k)) for k, name in ways
            if row["via"] != name]
    if row["via"] != "direct" or row.get("listed_in"):
        keys.append(button(bot.t(ctx, "direct"), callbacks.encode(tag, "m", addr, "-")))
    grid = [keys[i:i + 2] for i in range(0, len(keys), 2)]
    if row.get("listed_in") or row.get("paused"):
        grid.append([button(bot.t(ctx, "resume" if row.get("paused") else "pause"),
                            callbacks.encode(tag, "r" if row.get("paused") else "p", addr)),
                     button(bot.t(ctx, "remove"), callbacks.encode(tag, "x", addr))])
    grid.append([button(bot.t(ctx, "back"), callbacks.encode(tag, "l"))])
    route = bot.t(ctx, "direct") if row["via"] == "direct" else bot.t(ctx, "via", via=row["via"])
    bot.reply(ctx, esc(bot.t(ctx, "device_menu", device=_label(row), route=route)), grid, edit=edit)


def server_list(bot, ctx, cfg, edit=None):
    if not config.xray_enabled(cfg):
        return bot.reply(ctx, esc(bot.t(ctx, "no_xray")), edit=edit)
    servers = bot.router.servers(cfg)
    if not servers:
        return bot.reply(ctx, esc(bot.t(ctx, "servers_none")), edit=edit)
    tag = callbacks.tag(cfg)
    rows = [("*" if s["active"] else "", str(s["number"]), s["name"][:32], s["label"],
             bot.t(ctx, "latency", ms=s["latency_ms"]) if isinstance(s["latency_ms"], int) else "-")
            for s in servers]
    keys = [button("%d %s" % (s["number"], s["name"][:30]), callbacks.encode(tag, "sw", s["id"]))
            for s in servers[:MAX_SERVERS] if not s["active"]]
    grid = [keys[i:i + 2] for i in range(0, len(keys), 2)]
    bot.reply(ctx, b(bot.t(ctx, "servers_head")) + "\n" + pre_chunks(table(rows))[0], grid, edit=edit)


def ask(bot, ctx, cfg, what, question, edit=None):
    """Ask to confirm `what` (kind, args...); only ctx.user may confirm, within CONFIRM_S."""
    pid = secrets.token_hex(4)
    bot.pending = {k: v for k, v in bot.pending.items() if v["expires"] > bot.clock()}
    bot.pending[pid] = {"user": ctx.user, "expires": bot.clock() + CONFIRM_S, "tag": callbacks.tag(cfg),
                        "what": what}
    tag = callbacks.tag(cfg)
    bot.reply(ctx, esc(question), [[button(bot.t(ctx, "confirm"), callbacks.encode(tag, "y", pid)),
                                    button(bot.t(ctx, "cancel"), callbacks.encode(tag, "n", pid))]], edit=edit)


def _change(what):
    from ..ops import clients
    kind, args = what[0], what[1:]
    if kind == "move":  # a device's "via ..." or "direct" button
        return clients.route_device(args[0], args[1])
    return {"pause": clients.pause, "resume": clients.resume, "remove": clients.remove}[kind](args[0])


def confirmed(bot, ctx, pid, edit):
    p = bot.pending.pop(pid, None)
    if p is None or p["user"] != ctx.user or p["expires"] < bot.clock():
        if p is not None and p["user"] != ctx.user:
            bot.pending[pid] = p  # someone else's: it stays theirs
        return bot.reply(ctx, esc(bot.t(ctx, "expired")), edit=edit)
    cfg = bot.router.config()
    if callbacks.tag(cfg) != p["tag"]:
        return bot.reply(ctx, esc(bot.t(ctx, "outdated")), edit=edit)
    if p["what"][0] == "switch":
        return bot.reply(ctx, bot.switch_result(ctx, cfg, p["what"][1]), edit=edit)
    bot.reply(ctx, bot.edit_result(ctx, _change(p["what"])), edit=edit)


def pressed(bot, ctx, data, edit):
    """One button press from an allowed user; returns the short answer for answerCallbackQuery."""
    parsed = callbacks.decode(data)
    if parsed is None:
        return bot.t(ctx, "outdated")
    tag, action, args = parsed
    cfg = bot.router.config()
    if action == "st":  # read-only: a Refresh works on any status message
        bot.reply(ctx, status_html(bot, ctx, bot.router.status(cfg)),
                  [[button(bot.t(ctx, "refresh"), callbacks.encode(callbacks.tag(cfg), "st"))]], edit=edit)
        return None
    if action == "n":
        if args and bot.pending.get(args[0], {}).get("user") == ctx.user:  # only the one who asked
            bot.pending.pop(args[0])
            bot.reply(ctx, esc(bot.t(ctx, "cancelled")), edit=edit)
        else:
            bot.reply(ctx, esc(bot.t(ctx, "expired")), edit=edit)
        return None
    if action == "y" and len(args) == 1:
        confirmed(bot, ctx, args[0], edit)
        return None
    if tag != callbacks.tag(cfg):
        return bot.t(ctx, "outdated")
    addr = args[0] if args else ""
    if action in ("d", "m", "p", "r", "x") and not _is_addr(addr):
        return bot.t(ctx, "outdated")
    device = addr
    if action == "l":
        device_list(bot, ctx, cfg, all_devices=False, edit=edit)
    elif action == "d":
        device_menu(bot, ctx, cfg, addr, edit)
    elif action == "m" and len(args) == 2:
        way = args[1]
        if way == "x":
            via = "xray"
        elif way == "-":
            via = "direct"
        elif way.isdigit() and int(way) < len(cfg.tunnels):
            via = cfg.tunnels[int(way)].name
        else:
            return bot.t(ctx, "outdated")
        question = bot.t(ctx, "ask_direct", device=device) if via == "direct" else \
            bot.t(ctx, "ask_move", device=device, via=via)
        ask(bot, ctx, cfg, ("move", addr, via), question, edit)
    elif action in ("p", "r", "x"):
        kind = {"p": "pause", "r": "resume", "x": "remove"}[action]
        ask(bot, ctx, cfg, (kind, addr), bot.t(ctx, "ask_" + kind, device=device), edit)
    elif action == "sw" and len(args) == 1:
        server = next((s for s in bot.router.servers(cfg) if s["id"] == args[0]), None)
        if server is None:
            return bot.t(ctx, "outdated")
        ask(bot, ctx, cfg, ("switch", server["id"]), bot.t(ctx, "ask_switch", server=server.get("name") or
                                                           server["id"]), edit)
    else:
        return bot.t(ctx, "outdated")
    return None


def _is_addr(text):
    try:
        config.parse_net(text)
    except ValueError:
        return False
    return True
