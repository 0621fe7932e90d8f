"""Why a candidate failed, from the prober's client side and from Xray's own log (loglevel info).

Xray 26 writes one line per event, each session with its id (verified with Xray-core 26.10.10):

  2026/12/01 17:32:49.957269 [Info] [2887720764] app/dispatcher: taking detour [out-1] for [tcp:8.8.8.8:80]
  ... [Info] [2887720764] app/proxyman/outbound: app/proxyman/outbound: failed to process outbound
      traffic > ... > common/retry: [transport/internet/tcp: failed to dial to dest > dial tcp
      10.77.0.1:24009: connect: connection refused] > common/retry: all retry attempts failed
  ... [Error] [967821191] transport/internet/websocket: failed to dial to 10.77.0.2:8443 >
      transport/internet/tls: peer cert is unrecognized (against pinnedPeerCertSha256)
  ... > tls: failed to verify certificate: x509: certificate signed by unknown authority

so the "taking detour [out-N]" line ties a session to candidate N, and that session's later
lines say what went wrong. The SOCKS client sees none of it: Xray's SOCKS inbound accepts the
CONNECT before dialing, then closes the connection when the outbound fails.

Reasons (a prefix names the class): "timeout", "connection refused" (and other connect errors:
"network is unreachable", "no route to host"), "TLS: <Xray's words>", "DNS: <words>",
"HTTP <code> (not 204)", "connection closed[ (<Xray's last words>)]"; the prober adds
"refused by Xray: <line>" and "unusable: <why>".
"""

import re
import time

from . import socks

LINE_RE = re.compile(r"^\S+ \S+ \[\w+\] \[(\d+)\] (.*)$")
DETOUR_RE = re.compile(r"^app/dispatcher: taking detour \[out-(\d+)\]")
BLAME_RE = re.compile(r"\bout-(\d+)\b")
TLS_RE = re.compile(r"(?:x509: |transport/internet/tls: |\btls: |\bREALITY: )([^\]>\n]+)")
CONNECT_RE = re.compile(r"\bconnect: ([a-z][a-z ]+)")
DNS_RE = re.compile(r"\blookup \S+(?: on \S+)?: ([^\]>\n]+)")
END = "failed to process outbound traffic"
GRACE = 1.5  # seconds for Xray's log to catch up with a connection it has just closed


def blamed(line):
    """The candidate index a refusal names (out-N), or None."""
    m = BLAME_RE.search(line or "")
    return int(m.group(1)) if m else None


def sessions(text):
    """{N: [messages of the sessions routed to out-N]} from the log's text."""
    owner, out = {}, {}
    for raw in text.splitlines():
        m = LINE_RE.match(raw.strip())
        if not m:
            continue
        sid, msg = m.groups()
        d = DETOUR_RE.match(msg)
        if d:
            owner[sid] = int(d.group(1))
        if sid in owner:
            out.setdefault(owner[sid], []).append(msg)
    return out


def log_reason(messages):
    """The most telling reason in a candidate's log messages ("" if none says why)."""
    text = "\n".join(messages)
    m = TLS_RE.search(text)
    if m:
        line = text[m.start():].split("\n", 1)[0]
        words = line[line.index("x509: "):] if "x509: " in line else m.group(1)
        return "TLS: %s" % _short(re.split(r"\]| > ", words)[0])
    m = CONNECT_RE.search(text)
    if m:
        return m.group(1).strip()
    m = DNS_RE.search(text)
    if m:
        return "DNS: %s" % _short(m.group(1))
    if "i/o timeout" in text:
        return "timeout"
    return ""


def _last_words(messages):
    """The last link of the session's final error chain: "failed to read complete server
    response header" (what the connection-closed case shows)."""
    ends = [m for m in messages if END in m]
    if not ends:
        return ""
    last = ends[-1].split(" > ")[-1]
    return _short(last.split(": ", 1)[-1])


def _short(words, limit=120):
    words = " ".join(words.split()).strip(" :")
    return words if len(words) <= limit else words[:limit - 1] + "…"


def verdicts(tried, log_path, grace=GRACE, read=None):
    """{N: {"ok", "latency_ms", "reason"}} from _probe_all's {N: (status, ms, error)}."""
    read = read or (lambda: read_text(log_path))
    closed = {n for n, (_, _, err) in tried.items() if err is not None and not isinstance(err, socks.SocksTimeout)}
    deadline = time.monotonic() + grace
    while True:
        by = sessions(read())
        waiting = [n for n in closed if not any(END in m for m in by.get(n, ())) and not log_reason(by.get(n, ()))]
        if not waiting or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    out = {}
    for n, (status, ms, err) in tried.items():
        if status == 204:
            out[n] = {"ok": True, "latency_ms": ms, "reason": ""}
            continue
        if status is not None:
            reason = "HTTP %d (not 204)" % status
        else:
            reason = log_reason(by.get(n, ()))
            if not reason and isinstance(err, socks.SocksTimeout):
                reason = "timeout"
            elif not reason:
                words = _last_words(by.get(n, ()))
                reason = "connection closed (%s)" % words if words else "connection closed"
        out[n] = {"ok": False, "latency_ms": None, "reason": reason}
    return out


def read_text(path, limit=8 << 20):
    """The first `limit` bytes of a log as text ("" if it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode(errors="replace")
    except OSError:
        return ""
