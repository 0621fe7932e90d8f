"""HTML for Telegram (parse_mode HTML, never MarkdownV2): every value passes through esc(), and
long text is cut into messages of at most LIMIT characters, each with its tags balanced."""

import html

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
