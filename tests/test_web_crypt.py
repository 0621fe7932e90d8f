"""The shadow-file password check: published SHA-crypt vectors, MD5-crypt, openssl passwd output,
locked and unknown users."""

import subprocess

import pytest

from vpn_director.web import crypt, shadow
from webtest import openssl_hash, write_shadow

# Drepper, "Unix crypt using SHA-256 and SHA-512": default rounds, custom rounds, a salt cut to
# 16 characters, rounds=10 raised to the minimum of 1000.
VECTORS = [
    ("$5$saltstring", "Hello world!", "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"),
    ("$5$rounds=10000$saltstringsaltstring", "Hello world!",
     "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA"),
    ("$5$rounds=5000$toolongsaltstring", "This is just a test",
     "$5$rounds=5000$toolongsaltstrin$Un/5jzAHMgOGZ5.mWJpuVolil07guHPvOW8mGRcvxa5"),
    ("$5$rounds=10$roundstoolow", "the minimum number is still observed",
     "$5$rounds=1000$roundstoolow$yfvwcWrQ8l/K0DAWyuPMDNHpIVlTQebY9l/gL972bIC"),
    ("$6$saltstring", "Hello world!",
     "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"),
    ("$6$rounds=10000$saltstringsaltstring", "Hello world!",
     "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v."),
    ("$6$rounds=5000$toolongsaltstring", "This is just a test",
     "$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1yxdYcz/e1JSbq3y6JMxxl8audkUEm0"),
    ("$6$rounds=10$roundstoolow", "the minimum number is still observed",
     "$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4ZEQpyUNGc0dqbpBYYBaHHrsX."),
    ("$1$saltstring", "Hello world!", "$1$saltstri$YMyguxXMBpd2TEZ.vS/3q1"),
    ("$1$abcd1234", "password", "$1$abcd1234$Kx528z52Ohx1JLSzliZmw0"),
]


@pytest.mark.parametrize("setting,password,expected", VECTORS)
def test_published_vectors(setting, password, expected):
    assert crypt.hash_of(password, setting) == expected
    assert crypt.verify(password, expected)
    assert not crypt.verify(password + "x", expected)


@pytest.mark.parametrize("scheme", ["-1", "-5", "-6"])
@pytest.mark.parametrize("password", ["testpass", "p", "пароль с пробелом", "x" * 200])
def test_openssl_passwd(scheme, password):
    stored = openssl_hash(password, scheme)
    assert crypt.verify(password, stored)
    assert not crypt.verify(password + "!", stored)


def test_openssl_rounds_and_salt():
    stored = subprocess.run(["openssl", "passwd", "-6", "-salt", "abcdefgh", "secret"], stdout=subprocess.PIPE,
                            universal_newlines=True, check=True).stdout.strip()
    assert crypt.hash_of("secret", "$6$abcdefgh") == stored


@pytest.mark.parametrize("stored", ["", "!", "*", "!$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQ",
                                    "$2b$10$abcdefghijklmnopqrstuv", "plaintext", "$6$"])
def test_locked_empty_and_unknown_schemes_never_match(stored):
    assert not crypt.verify("Hello world!", stored)
    assert not crypt.verify("", stored)


def test_shadow_login_and_fingerprint(tmp_path):
    path = write_shadow(tmp_path / "shadow", "s3cret")
    fp = shadow.login(path, "admin", "s3cret")
    assert fp and fp == shadow.current(path, "admin")
    write_shadow(tmp_path / "shadow", "changed")
    assert shadow.current(path, "admin") != fp


def test_locked_and_unknown_users_fail_like_a_wrong_password(tmp_path):
    path = write_shadow(tmp_path / "shadow", "s3cret")
    for user, password in (("admin", "wrong"), ("locked", "s3cret"), ("nobody", ""), ("root", "s3cret"),
                           ("ghost", "s3cret"), ("bad:name", "s3cret"), ("", "s3cret"), ("admin", None)):
        assert shadow.login(path, user, password) is None, user
    assert shadow.current(path, "locked") is None and shadow.current(path, "ghost") is None


def test_unreadable_password_file(tmp_path):
    from vpn_director.web import WebError
    with pytest.raises(WebError, match="cannot read the password file"):
        shadow.login(str(tmp_path / "missing"), "admin", "x")


@pytest.mark.parametrize("scheme, cost", [("-1", ("md5", 1000)), ("-5", ("sha256", 5000)),
                                          ("-6", ("sha512", 5000))])
def test_a_missing_or_locked_user_costs_what_the_admin_costs(tmp_path, monkeypatch, scheme, cost):
    """The work done for each login, counted (no timing): one check of the same scheme, rounds and
    salt length whether the user exists or not. Asuswrt's admin hash is $1$ (1000 MD5 rounds)."""
    path = write_shadow(tmp_path / "shadow", "s3cret", scheme=scheme)
    admin = shadow.stored_hash(path, "admin")
    work = []
    real = crypt.hash_of

    def counted(password, setting):
        work.append((crypt.cost(setting), len(setting.split("$")[-2])))
        return real(password, setting)
    monkeypatch.setattr(crypt, "hash_of", counted)
    for user, password in (("admin", "wrong"), ("admin", "s3cret"), ("ghost", "s3cret"), ("locked", "s3cret"),
                           ("root", "s3cret"), ("nobody", ""), ("bad:name", "x"), ("", "x"), ("admin", None)):
        work.clear()
        shadow.login(path, user, password)
        assert work == [(cost, len(admin.split("$")[-2]))], user


def test_a_file_without_a_usable_hash_falls_back_to_sha512_5000_rounds(tmp_path, monkeypatch):
    path = tmp_path / "shadow"
    path.write_text("root:*:19000::::::\nadmin:$y$j9T$abc$def:19000::::::\nlocked:!$1$ab$cd:1::::::\n")
    seen = []
    real = crypt.hash_of
    monkeypatch.setattr(crypt, "hash_of", lambda pw, setting: seen.append(crypt.cost(setting)) or real(pw, setting))
    for user in ("admin", "ghost", "locked"):
        assert shadow.login(str(path), user, "x") is None
    assert seen == [("sha512", 5000)] * 3
    rounds = "$6$rounds=12000$abcdefgh$" + "x" * 86
    assert shadow.dummy(rounds) == "$6$rounds=12000$abcdefgh$!" and crypt.cost(shadow.dummy(rounds)) == (
        "sha512", 12000)
    assert not crypt.verify("anything", shadow.dummy(rounds))
