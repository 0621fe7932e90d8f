"""Logins against the router's own password file (`webui.shadow_file`: /etc/shadow, or a
passwd-style file with the hash in the second field, as on Keenetic).

A user that is missing, locked (`!`, `*`) or has no password fails exactly like a wrong password,
after the same work: a dummy hash of the same scheme, rounds and salt as the file's first usable
hash (the router's admin account; `$1$` with 1000 rounds on Asuswrt) is checked, so answers and
their time do not tell which names exist. A session keeps a fingerprint of the stored hash: a
changed password ends it.
"""

import hashlib

from . import WebError, crypt

# A SHA-512 hash of a random password nobody knows: the dummy's model when the file has no usable hash.
DEFAULT_DUMMY = "$6$wq0lQHxUpr3n0GxJ$Faie9sVzGUAhhj2lixr4MKaWr5syuVFBTfI3xhMfMESlV15mhPILQJXTQARHjxRoN2V713rMzpSxwoe5DG.uH/"
SCHEMES = ("$1$", "$5$", "$6$")
MAX_USER = 64


def valid_user(user):
    return isinstance(user, str) and 0 < len(user) <= MAX_USER and user.isprintable() and ":" not in user


def usable(stored):
    """A hash this module can check: not locked, not empty, a known scheme."""
    return bool(stored) and stored[0] not in "!*" and stored.startswith(SCHEMES) and crypt.cost(stored) is not None


def scan(path, user):
    """(the user's hash field or None if the user is not in the file, the first usable hash of the
    file or None). WebError if the file is unreadable."""
    mine, first = None, None
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                fields = line.rstrip("\n").split(":")
                if len(fields) < 2:
                    continue
                if mine is None and user is not None and fields[0] == user:
                    mine = fields[1]
                if first is None and usable(fields[1]):
                    first = fields[1]
    except OSError as e:
        raise WebError("cannot read the password file %s: %s" % (path, e.strerror or e), 500)
    return mine, first


def stored_hash(path, user):
    """The user's hash field, or None if the user is not in the file. WebError if unreadable."""
    return scan(path, user)[0]


def dummy(model):
    """A hash no password matches ("!" is no crypt character) that costs what checking `model`
    costs: its scheme, rounds and salt. DEFAULT_DUMMY's when there is no model."""
    return (model if model and usable(model) else DEFAULT_DUMMY).rsplit("$", 1)[0] + "$!"


def fingerprint(stored):
    """A short digest of the stored hash: equal while the password stays the same."""
    return hashlib.sha256(("vpn-director web session\0" + stored).encode("utf-8", "replace")).hexdigest()[:32]


def login(path, user, password):
    """The fingerprint of the user's hash if the password is right, else None."""
    name = user if valid_user(user) else None
    stored, model = scan(path, name)
    if name is None or not isinstance(password, str):
        crypt.verify(password if isinstance(password, str) else "x", dummy(model))
        return None
    if not usable(stored):
        crypt.verify(password, dummy(model))
        return None
    return fingerprint(stored) if crypt.verify(password, stored) else None


def current(path, user):
    """The fingerprint of the user's hash now, or None (gone, locked, unreadable)."""
    try:
        stored = stored_hash(path, user)
    except WebError:
        return None
    if not stored or stored[0] in "!*":
        return None
    return fingerprint(stored)
