"""Country lists: download from the configured sources in order, validate, cache with metadata.

The cache is `<data_dir>/ipsets/<cc>.zone` (the list as downloaded) and `<cc>.json` beside it
(source, time, entry counts, checksum; listcache.py reads it). Apply only ever reads the cache,
so a router that boots without internet still routes; `vpn-director update` refreshes it.
"""

import hashlib
import json
import os
import socket
import time
import urllib.parse
from dataclasses import dataclass
from typing import Optional

from . import __version__, config, sets, state
from .errors import DataError
from .listcache import cached_members, meta_path, read_meta, used

DEFAULT_TIMEOUT = config.IPSET_TIMEOUT
DEFAULT_MAX_BYTES = config.IPSET_MAX_BYTES
CHUNK = 64 << 10
BOM = b"\xef\xbb\xbf"


class FetchError(Exception):
    """One source failed; the message says why, in a few words."""


@dataclass
class Refreshed:
    cc: str
    url: str
    entries: int  # lines in the list
    aggregated: int  # set members after aggregation
    previous: Optional[int]  # members of the cached list before, None if there was none
    changed: bool

    def summary(self):
        was = "new" if self.previous is None else "unchanged" if not self.changed else \
            "was %d" % self.previous
        return "%s: %d entries (%d after aggregation, %s) from %s" % (
            self.cc, self.entries, self.aggregated, was, self.url)


# --- downloading ------------------------------------------------------------------------------

def download(url, timeout=DEFAULT_TIMEOUT, max_bytes=DEFAULT_MAX_BYTES):
    """The body of `url` (http, https or file). Raises FetchError naming the fault."""
    if url.startswith("file:"):
        return _read_file(url, max_bytes)
    return _read_http(url, timeout, max_bytes)


def _read_file(url, max_bytes):
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise FetchError("file URL names another host (%s)" % parts.netloc)
    try:
        with open(urllib.parse.unquote(parts.path), "rb") as fh:
            body = fh.read(max_bytes + 1)
    except OSError as e:
        raise FetchError(_reason(e))
    if len(body) > max_bytes:
        raise FetchError("too large: more than %d bytes" % max_bytes)
    return body


def _read_http(url, timeout, max_bytes):
    # imported here: ssl and http.client cost megabytes that apply and file:// sources never need
    import urllib.error
    import urllib.request
    from http.client import HTTPException, IncompleteRead

    class Redirects(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, req, fp, code, msg, headers, newurl):
            if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
                raise FetchError("redirected to %s" % newurl[:80])
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    opener = urllib.request.build_opener(Redirects)
    req = urllib.request.Request(url, headers={"User-Agent": "vpn-director/%s" % __version__})
    deadline = time.monotonic() + timeout
    try:
        with opener.open(req, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length", "") if resp.headers else ""
            if length.isdigit() and int(length) > max_bytes:
                raise FetchError("too large: %s bytes (limit %d)" % (length, max_bytes))
            expected = int(length) if length.isdigit() else None
            body = bytearray()
            while True:
                # the socket timeout bounds each read; this bounds a server that trickles
                if time.monotonic() > deadline:
                    raise FetchError("timed out after %ss" % timeout)
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                body += chunk
                if len(body) > max_bytes:
                    raise FetchError("too large: more than %d bytes" % max_bytes)
            if expected is not None and len(body) < expected:
                raise FetchError("truncated: got %d of %d bytes" % (len(body), expected))
            return bytes(body)
    except urllib.error.HTTPError as e:
        raise FetchError("HTTP %d %s" % (e.code, e.reason))
    except urllib.error.URLError as e:
        if isinstance(e.reason, socket.timeout):
            raise FetchError("timed out after %ss" % timeout)
        raise FetchError(_reason(e.reason))
    except socket.timeout:
        raise FetchError("timed out after %ss" % timeout)
    except IncompleteRead as e:
        raise FetchError("truncated: got %d bytes, %s more expected" % (len(e.partial), e.expected))
    except HTTPException as e:
        # not quoted: the text is whatever the other end sent (a URL may name any local service)
        raise FetchError("not a valid HTTP answer (%s)" % type(e).__name__)
    except (OSError, ValueError) as e:
        raise FetchError(_reason(e))


def _reason(e):
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def _lines(text):
    """Lines of `text` one at a time (a list of 100k line strings would cost megabytes)."""
    pos, n = 0, len(text)
    while pos < n:
        end = text.find("\n", pos)
        if end < 0:
            end = n
        yield text[pos:end]
        pos = end + 1


def parse_body(body):
    """Validate a downloaded list; return its packed prefixes. Raises FetchError naming the fault,
    never quoting the body: a misconfigured source may be any file on the router."""
    text = body.decode("ascii", errors="replace")
    head = text.lstrip()[:200].lower()
    if not head:
        raise FetchError("empty answer")
    if head.startswith("<") or "<html" in head:
        raise FetchError("an HTML page, not a list")
    where = {"line": 0}

    def numbered():
        for n, line in enumerate(_lines(text), start=1):
            where["line"] = n
            yield line
    try:
        prefixes = sets.parse_prefixes(numbered(), "line")
    except DataError:
        raise FetchError("not a list of IPv4 CIDRs (line %d)" % where["line"])
    if not prefixes:
        raise FetchError("no entries, only comments")
    return prefixes


def fetch(cc, sources, previous=None, force=False, timeout=DEFAULT_TIMEOUT, max_bytes=DEFAULT_MAX_BYTES):
    """Try the sources in order: (url, body, prefixes, members) of the first good one.

    A list with half or fewer of the `previous` member count is refused unless `force`, and the
    next source is tried. Raises FetchError naming every source and its fault, on one line.
    """
    tried = []
    for template in sources:
        url = template.replace("{cc}", cc)
        try:
            body = download(url, timeout, max_bytes)
            if body.startswith(BOM):
                body = body[len(BOM):]  # saved by a Windows editor; the cache is read without it
            prefixes = parse_body(body)
            members = sets.members(prefixes)
            if previous and len(members) * 2 <= previous and not force:
                raise FetchError("shrank from %d to %d entries (half or less of the cached list; "
                                 "--force accepts it)" % (previous, len(members)))
            return url, body, prefixes, members
        except FetchError as e:
            tried.append("%s: %s" % (url, e))
    raise FetchError("; ".join(tried) if tried else "no sources (ipsets.sources is empty)")


def save(data_dir, cc, url, body, prefixes, members):
    """Write the list, then its metadata, each atomically (a reader sees old or new, never half);
    `members` (sets.Cidrs, the aggregate) is kept beside the list for the apply that follows."""
    os.makedirs(os.path.join(data_dir, "ipsets"), mode=0o755, exist_ok=True)
    digest = hashlib.sha256(body).hexdigest()
    path = sets.zone_path(data_dir, cc)
    state.write_atomic(path, body, mode=0o644)  # bytes as received: the checksum is of the file
    sets.store_country_cache(path, members, len(prefixes))
    members = len(members)
    now = time.time()
    meta = {"cc": cc, "source": url, "fetched": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "fetched_epoch": int(now), "entries": len(prefixes), "aggregated": members,
            "bytes": len(body), "sha256": digest}
    state.write_atomic(meta_path(data_dir, cc), json.dumps(meta, indent=1, sort_keys=True) + "\n", mode=0o644)


def refresh(cfg, names=None, force=False):
    """Refresh the cache of every country set the config uses: ([Refreshed], [(cc, message)])."""
    done, failed = [], []
    for cc in used(cfg) if names is None else names:
        previous = cached_members(cfg.data_dir, cc)
        old = read_meta(cfg.data_dir, cc).get("sha256")
        try:
            url, body, prefixes, members = fetch(cc, cfg.ipset_sources, previous, force,
                                                 cfg.ipset_timeout, cfg.ipset_max_bytes)
        except FetchError as e:
            kept = "cached and live set kept" if os.path.exists(sets.zone_path(cfg.data_dir, cc)) else \
                "nothing cached yet"
            failed.append((cc, "%s: no usable list, %s; tried %s" % (cc, kept, e)))
            continue
        save(cfg.data_dir, cc, url, body, prefixes, members)
        done.append(Refreshed(cc, url, len(prefixes), len(members), previous,
                              old != hashlib.sha256(body).hexdigest()))
    return done, failed


