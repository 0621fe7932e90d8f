"""The config file as the owner keeps it: read raw, write back with every key, in order, atomically.

An edit changes only what it means to change. Keys vpn-director does not know (other areas'
settings, the owner's own notes) stay, object keys keep their order (tunnel order decides slot,
mark and priority), and the file keeps its mode and owner. The write goes to a temporary file in
the same directory, is flushed to disk, then renamed over the config: a reader or a power cut
sees the old file or the new one, never half of one.
"""

import json
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from typing import Optional

from .. import config
from ..errors import ConfigError

NEW_MODE = 0o600  # a new config lists client addresses: owner only
LINE_WIDTH = 100  # lists of plain values up to this width stay on one line, as people write them


@dataclass
class Snapshot:
    """The file as read: its exact bytes (to put back), its stat (mode and owner), its parse."""

    path: str  # the real file (a symlinked config is written through the link)
    data: bytes
    st: Optional[os.stat_result]
    raw: object

    @property
    def indent(self):
        m = re.search(rb"\n([ \t]+)\S", self.data)
        return m.group(1).decode() if m else "  "


def read(path):
    """Snapshot of the config file; ConfigError if it cannot be read or is not JSON."""
    real = os.path.realpath(path)
    try:
        with open(real, "rb") as fh:
            data = fh.read(config.MAX_CONFIG_BYTES + 1)  # the same bound, BOM and depth rules as apply
            st = os.fstat(fh.fileno())
    except OSError as e:
        raise ConfigError(["%s: cannot read config: %s" % (path, e.strerror or e)])
    return Snapshot(real, data, st, config.parse_bytes(data, path))


def dumps(raw, indent="  "):
    """JSON text of a raw config: objects one key a line, short lists of plain values on one line."""
    def enc(v, level):
        pad = indent * (level + 1)
        if isinstance(v, dict):
            if not v:
                return "{}"
            items = ["%s%s: %s" % (pad, json.dumps(k, ensure_ascii=False), enc(x, level + 1)) for k, x in v.items()]
            return "{\n" + ",\n".join(items) + "\n" + indent * level + "}"
        if isinstance(v, list):
            if not v:
                return "[]"
            if not any(isinstance(x, (dict, list)) for x in v):
                one = "[" + ", ".join(json.dumps(x, ensure_ascii=False) for x in v) + "]"
                if len(pad) + len(one) <= LINE_WIDTH:
                    return one
            return "[\n" + ",\n".join(pad + enc(x, level + 1) for x in v) + "\n" + indent * level + "]"
        return json.dumps(v, ensure_ascii=False)
    return enc(raw, 0) + "\n"


def write(path, data, like=None):
    """Replace `path` with `data` (bytes) atomically; mode and owner from `like` (a stat), else 0600."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".vpd-edit-")
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, stat.S_IMODE(like.st_mode) if like else NEW_MODE)
        if like and (like.st_uid, like.st_gid) != (os.geteuid(), os.getegid()):
            try:
                os.fchown(fd, like.st_uid, like.st_gid)
            except PermissionError:
                pass  # not root: the file becomes ours, as any editor would make it
        os.fsync(fd)
        os.close(fd)
        fd = None
        os.replace(tmp, path)
    except BaseException:
        if fd is not None:
            os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _sync_dir(directory)


def restore(snap):
    """Put the file back exactly as it was read (bytes, mode, owner)."""
    write(snap.path, snap.data, snap.st)


def _sync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a directory; the rename is still atomic
    finally:
        os.close(fd)
