"""Password hashes of the shadow file, checked in pure Python: MD5-crypt ($1$, Poul-Henning Kamp)
and SHA-crypt ($5$ SHA-256, $6$ SHA-512, Ulrich Drepper's specification). Python's own `crypt`
module is gone in 3.13, and a router's Python may not have it at all.
"""

import hashlib
import hmac

ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
MAX_PASSWORD = 1024  # bytes: SHA-crypt's cost grows with the password's length
ROUNDS_DEFAULT, ROUNDS_MIN, ROUNDS_MAX = 5000, 1000, 999999999

# SHA-crypt's byte order of the final digest, three bytes to four characters (the last group shorter)
_SHA256_ORDER = [(0, 10, 20), (21, 1, 11), (12, 22, 2), (3, 13, 23), (24, 4, 14), (15, 25, 5), (6, 16, 26),
                 (27, 7, 17), (18, 28, 8), (9, 19, 29)]
_SHA512_ORDER = [(0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4), (47, 5, 26), (6, 27, 48),
                 (28, 49, 7), (50, 8, 29), (9, 30, 51), (31, 52, 10), (53, 11, 32), (12, 33, 54), (34, 55, 13),
                 (56, 14, 35), (15, 36, 57), (37, 58, 16), (59, 17, 38), (18, 39, 60), (40, 61, 19), (62, 20, 41)]
_MD5_ORDER = [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)]


def _b64(b2, b1, b0, n):
    w = (b2 << 16) | (b1 << 8) | b0
    out = []
    for _ in range(n):
        out.append(ITOA64[w & 0x3F])
        w >>= 6
    return "".join(out)


def _encode(digest, order, tail):
    text = "".join(_b64(digest[a], digest[b], digest[c], 4) for a, b, c in order)
    return text + tail(digest)


def _rounds(h, c, p, s, rounds):
    """The stretching loop MD5-crypt and SHA-crypt share: each round hashes the last digest `c`
    with the password bytes `p` and salt bytes `s`, in an order set by the round number."""
    for i in range(rounds):
        data = p if i & 1 else c
        if i % 3:
            data += s
        if i % 7:
            data += p
        data += c if i & 1 else p
        c = h(data)
    return c


def _repeat(block, length):
    return (block * (length // len(block) + 1))[:length]


def sha_crypt(password, setting, algo="sha512"):
    """The full hash string for `password` (bytes) and a `$5$`/`$6$` setting (salt and rounds
    taken from it; the rest ignored), or None if the setting is malformed."""
    magic = "$5$" if algo == "sha256" else "$6$"
    if not setting.startswith(magic):
        return None
    rest = setting[3:]
    rounds, custom = ROUNDS_DEFAULT, False
    if rest.startswith("rounds="):
        num, sep, rest = rest[7:].partition("$")
        if not sep or not num.isdigit() or len(num) > 10:
            return None
        rounds, custom = min(max(int(num), ROUNDS_MIN), ROUNDS_MAX), True
    salt = rest.split("$", 1)[0][:16].encode("ascii", "replace")
    def h(data):
        return hashlib.new(algo, data).digest()
    pw = password
    size = 32 if algo == "sha256" else 64
    b = h(pw + salt + pw)
    a_in = pw + salt + _repeat(b, len(pw))
    n = len(pw)
    while n:
        a_in += b if n & 1 else pw
        n >>= 1
    a = h(a_in)
    p = _repeat(h(pw * len(pw)), len(pw)) if pw else b""
    s = _repeat(h(salt * (16 + a[0])), len(salt)) if salt else b""
    c = _rounds(h, a, p, s, rounds)
    if size == 32:
        text = _encode(c, _SHA256_ORDER, lambda d: _b64(0, d[31], d[30], 3))
    else:
        text = _encode(c, _SHA512_ORDER, lambda d: _b64(0, 0, d[63], 2))
    return "%s%s%s$%s" % (magic, "rounds=%d$" % rounds if custom else "", salt.decode("ascii"), text)


def md5_crypt(password, setting):
    """The full `$1$` hash string for `password` (bytes), or None if the setting is not `$1$`."""
    if not setting.startswith("$1$"):
        return None
    salt = setting[3:].split("$", 1)[0][:8].encode("ascii", "replace")
    pw = password
    final = hashlib.md5(pw + salt + pw).digest()
    ctx = pw + b"$1$" + salt
    for i in range(len(pw), 0, -16):
        ctx += final[:min(16, i)]
    n = len(pw)
    while n:
        ctx += b"\0" if n & 1 else pw[:1]
        n >>= 1
    final = hashlib.md5(ctx).digest()
    final = _rounds(lambda data: hashlib.md5(data).digest(), final, pw, salt, 1000)
    text = _encode(final, _MD5_ORDER, lambda d: _b64(0, 0, d[11], 2))
    return "$1$%s$%s" % (salt.decode("ascii"), text)


def cost(setting):
    """(scheme, rounds) of a hash or setting: ("md5", 1000), ("sha256"|"sha512", rounds); None
    for any other. Two hashes of equal cost take the same work to check."""
    if setting.startswith("$1$"):
        return "md5", 1000
    if not setting.startswith(("$5$", "$6$")):
        return None
    rounds = ROUNDS_DEFAULT
    rest = setting[3:]
    if rest.startswith("rounds="):
        num = rest[7:].partition("$")[0]
        if not num.isdigit() or len(num) > 10:
            return None
        rounds = min(max(int(num), ROUNDS_MIN), ROUNDS_MAX)
    return ("sha256" if setting.startswith("$5$") else "sha512"), rounds


def hash_of(password, setting):
    """crypt(3) for the schemes we know: the hash string, or None for any other setting."""
    pw = password.encode("utf-8") if isinstance(password, str) else password
    if len(pw) > MAX_PASSWORD:
        return None
    if setting.startswith("$6$"):
        return sha_crypt(pw, setting, "sha512")
    if setting.startswith("$5$"):
        return sha_crypt(pw, setting, "sha256")
    if setting.startswith("$1$"):
        return md5_crypt(pw, setting)
    return None


def verify(password, stored):
    """True if `password` matches the stored hash; a locked (`!`, `*`), empty or unknown-scheme
    hash never matches. Compared in constant time."""
    if not stored or stored[0] in "!*" or not stored.isascii():
        return False
    got = hash_of(password, stored)
    return got is not None and hmac.compare_digest(got.encode("ascii", "replace"), stored.encode("ascii"))
