"""HTML for Telegram (parse_mode HTML, never MarkdownV2): every value passes through esc(), and
long text is cut into messages of at most LIMIT characters, each with its tags balanced. Also the
/status message, which the command and its Refresh button both show."""

import html
import time

LIMIT = 4096  # characters per message (Telegram's limit)
MAX_CHUNKS = 3  # longer output goes as a document


def esc(value):
    return html.escape(str(value), quote=False)


def b(value):
    return "<b>%s</b>" % esc(value)


def code(value):
    return "<code>%s</code>" % esc(value)


def pre_chunks(lines, limit=LIMIT):
    """Plain text lines -> messages "<pre>...</pre>", each at most `limit` characters; a line
    too long for one message is cut (an escaped entity is never split)."""
    room = limit - len("<pre></pre>")
    out, cur, size = [], [], 0
    for line in lines:
        piece = esc(line)
        while len(piece) > room:  # one very long line: cut where no entity is open
            cut = room
            amp = piece.rfind("&", 0, cut)
            if amp != -1 and piece.find(";", amp) >= cut:
                cut = amp
            if cur:
                out.append(cur)
                cur, size = [], 0
            out.append([piece[:cut]])
            piece = piece[cut:]
        extra = len(piece) + (1 if cur else 0)
        if cur and size + extra > room:
            out.append(cur)
            cur, size, extra = [], 0, len(piece)
        cur.append(piece)
        size += extra
    if cur or not out:
        out.append(cur)
    return ["<pre>%s</pre>" % "\n".join(c) for c in out]


def table(rows):
    """Rows of cells -> aligned plain-text lines (shown in <pre>)."""
    if not rows:
        return []
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def button(label, data):
    return {"text": label[:64], "callback_data": data}


def status_html(bot, ctx, rep):
    """The /status message: drift, tunnels, country lists, Xray, last apply."""
    bad = [o for o in rep.get("objects", []) if o.get("status") != "OK"]
    lines = [b(bot.t(ctx, "status_ok") if rep.get("ok") else bot.t(ctx, "status_drift", n=len(bad)))]
    for o in bad[:10]:
        lines.append("  %s %s %s" % (esc(o["status"]), esc(o["kind"]), esc(o["name"])))
    lines.append("")
    lines.append(b(bot.t(ctx, "tunnels")))
    for s in rep.get("tunnels", []):
        lines.append("  %s: %s%s" % (esc(s["tunnel"]), code(s["state"]),
                                     "" if s.get("kill_switch") else " " + esc(bot.t(ctx, "kill_switch_off"))))
    if not rep.get("tunnels"):
        lines.append("  " + esc(bot.t(ctx, "no_tunnels")))
    lists = [o for o in rep.get("objects", []) if o.get("country")]
    if lists:
        lines += ["", b(bot.t(ctx, "lists"))]
        for o in lists:
            lines.append("  %s: %s%s" % (esc(o["name"]), esc(bot.t(ctx, "list_entries", n=o.get("listed", "?"))),
                                        ", %s" % esc(o["fetched"]) if o.get("fetched") else ""))
    for key in ("xray", "xray_health"):
        if rep.get(key):
            lines += ["", esc(rep[key])]
    for w in rep.get("warnings", []):
        lines += ["", "⚠ " + esc(w)]
    applied = bot.last_apply()
    lines += ["", esc(bot.t(ctx, "last_apply", when=time.strftime("%Y-%m-%d %H:%M", time.localtime(applied))
                            if applied else bot.t(ctx, "never")))]
    return "\n".join(lines)
