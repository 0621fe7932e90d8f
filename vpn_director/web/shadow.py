"""Logins against the router's own password file (`webui.shadow_file`: /etc/shadow, or a
passwd-style file with the hash in the second field, as on Keenetic).

A user that is missing, locked (`!`, `*`) or has no password fails exactly like a wrong password,
after the same kind of work (a dummy hash is checked), so answers do not tell which names exist.
A session keeps a fingerprint of the stored hash: a changed password ends it.
"""

import hashlib

from . import WebError, crypt

# A SHA-512 hash of a random password nobody knows: checked for users that cannot log in.
DUMMY = "$6$wq0lQHxUpr3n0GxJ$Faie9sVzGUAhhj2lixr4MKaWr5syuVFBTfI3xhMfMESlV15mhPILQJXTQARHjxRoN2V713rMzpSxwoe5DG.uH/"
MAX_USER = 64


def valid_user(user):
    return isinstance(user, str) and 0 < len(user) <= MAX_USER and user.isprintable() and ":" not in user


def stored_hash(path, user):
    """The user's hash field, or None if the user is not in the file. WebError if unreadable."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 2 and fields[0] == user:
                    return fields[1]
    except OSError as e:
        raise WebError("cannot read the password file %s: %s" % (path, e.strerror or e), 500)
    return None


def fingerprint(stored):
    """A short digest of the stored hash: equal while the password stays the same."""
    return hashlib.sha256(("vpn-director web session\0" + stored).encode("utf-8", "replace")).hexdigest()[:32]


def login(path, user, password):
    """The fingerprint of the user's hash if the password is right, else None."""
    if not valid_user(user) or not isinstance(password, str):
        crypt.verify("x", DUMMY)
        return None
    stored = stored_hash(path, user)
    usable = bool(stored) and stored[0] not in "!*" and stored.startswith(("$1$", "$5$", "$6$"))
    if not usable:
        crypt.verify(password, DUMMY)
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
