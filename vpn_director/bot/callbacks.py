"""Callback data of the inline buttons: "1|TAG|ACTION|ARG...", at most 64 bytes.

1 is the format version; TAG stands for the config file the message was made from (its inode,
size and modification time), so a button on a message older than the last config change finds
a different tag and does nothing but say the message is outdated. Arguments are addresses,
tunnel numbers and ids from that config: never free text.
"""

import hashlib

VERSION = "1"
SEP = "|"
MAX_BYTES = 64


def tag(cfg):
    ident = repr(cfg.file_id) if cfg is not None else "none"
    return hashlib.sha256(ident.encode("ascii")).hexdigest()[:6]


def encode(cfg_tag, action, *args):
    data = SEP.join([VERSION, cfg_tag, action] + [str(a) for a in args])
    if len(data.encode("utf-8")) > MAX_BYTES or any(SEP in str(a) for a in args):
        raise ValueError("callback data too long or malformed: %r" % data)
    return data


def decode(data):
    """(tag, action, [args]) or None for data of another format (an older bot version)."""
    parts = str(data or "").split(SEP)
    if len(parts) < 3 or parts[0] != VERSION:
        return None
    return parts[1], parts[2], parts[3:]
