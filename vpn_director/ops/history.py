"""The last versions of the config under <data_dir>/history/: when, what changed, and the file.

One file a version (`000012.json`: time, one-line summary, the config text exactly as written),
numbered on and on so a number keeps meaning the same version while old ones are dropped. Only
the operations layer writes here, under the run lock. Before the first edit the file as found is
kept too, and so is a hand edit made since the last version: a rollback can reach either.
"""

import difflib
import json
import os
import re
import time
from dataclasses import dataclass
from typing import List, Optional

from .. import config
from . import HISTORY_KEEP, OpsError, rawfile

KEEP = HISTORY_KEEP
FILE_RE = re.compile(r"^(\d{6,})\.json$")
FOUND = "as found before the first edit"
BY_HAND = "edited outside vpn-director"


@dataclass
class Version:
    number: int
    time: float
    summary: str
    text: str  # the config file's content as it was after this change

    def when(self):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.time))

    def as_dict(self):
        return {"version": self.number, "time": self.time, "when": self.when(), "summary": self.summary}


def directory(data_dir):
    return os.path.join(data_dir, "history")


def versions(data_dir) -> List[Version]:
    """Every kept version, oldest first; unreadable files are skipped."""
    d = directory(data_dir)
    try:
        names = os.listdir(d)
    except OSError:
        return []
    out = []
    for name in names:
        m = FILE_RE.match(name)
        if not m:
            continue
        try:
            with open(os.path.join(d, name), encoding="utf-8") as fh:
                body = json.load(fh)
            out.append(Version(int(m.group(1)), float(body["time"]), str(body["summary"]), str(body["config"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return sorted(out, key=lambda v: v.number)


def record(data_dir, before, after, summary, now=time.time, keep=KEEP):
    """Keep `after` (bytes) as a new version, preceded by `before` when the history does not end
    with it. Returns the new version's number."""
    d = directory(data_dir)
    os.makedirs(d, mode=0o700, exist_ok=True)
    kept = versions(data_dir)
    last = kept[-1] if kept else None
    n = last.number if last else 0
    if before is not None and (last is None or last.text.encode("utf-8") != before):
        n += 1
        _write(d, n, now(), FOUND if last is None else BY_HAND, before)
    n += 1
    _write(d, n, now(), summary, after)
    for v in versions(data_dir)[:-keep]:
        try:
            os.unlink(os.path.join(d, "%06d.json" % v.number))
        except OSError:
            pass
    return n


def _write(d, n, when, summary, data):
    body = {"time": when, "summary": summary, "config": data.decode("utf-8")}
    rawfile.write(os.path.join(d, "%06d.json" % n), (json.dumps(body, ensure_ascii=False) + "\n").encode("utf-8"))


def get(data_dir, number) -> Version:
    kept = versions(data_dir)
    for v in kept:
        if v.number == number:
            return v
    if not kept:
        raise OpsError("no config history yet in %s" % directory(data_dir))
    raise OpsError("no version %d in the history (kept: %d to %d)" % (number, kept[0].number, kept[-1].number))


def previous(data_dir, number) -> Optional[Version]:
    older = [v for v in versions(data_dir) if v.number < number]
    return older[-1] if older else None


def diff(old_text, new_text, old_label, new_label):
    """Unified diff of two config texts; "" if they are equal."""
    lines = difflib.unified_diff(old_text.splitlines(True), new_text.splitlines(True), old_label, new_label)
    return "".join(l if l.endswith("\n") else l + "\n" for l in lines)


def rollback(data_dir, number):
    """The change (see txn) that puts version `number` back, byte for byte."""
    def change(raw, cfg, out):
        v = get(data_dir, number)
        raw.clear()
        raw.update(config.parse_text(v.text, "%s version %d" % (directory(data_dir), number)))
        out.exact = v.text.encode("utf-8")
        return "rollback to version %d (%s)" % (number, v.summary)
    return change
