"""state.pid_lock: the one-daemon lock the bot and the watch daemon share."""

import errno
import os

import pytest

from vpn_director import state
from vpn_director.bot import BotError, poller
from vpn_director.errors import LockError


def test_the_holder_writes_its_pid_and_a_second_taker_is_told_who_holds_it(tmp_path):
    path = str(tmp_path / "d.pid")
    fd = state.pid_lock(path)
    try:
        assert open(path).read() == "%d\n" % os.getpid()
        assert os.stat(path).st_mode & 0o777 == 0o600
        with pytest.raises(state.Held) as held:
            state.pid_lock(path)
        assert held.value.holder == " (PID %d)" % os.getpid() and isinstance(held.value, LockError)
    finally:
        os.close(fd)
    fd = state.pid_lock(path)  # closing released it
    os.close(fd)


def test_a_mode_is_kept_and_a_symlink_is_not_followed(tmp_path):
    path = str(tmp_path / "w.pid")
    os.close(state.pid_lock(path, mode=0o644))
    assert os.stat(path).st_mode & 0o777 == 0o644
    target = tmp_path / "elsewhere"
    target.write_text("keep\n")
    os.symlink(str(target), str(tmp_path / "link.pid"))
    with pytest.raises(OSError) as e:
        state.pid_lock(str(tmp_path / "link.pid"))
    assert e.value.errno == errno.ELOOP and target.read_text() == "keep\n"


def test_one_bot_per_token(tmp_path):
    sd = str(tmp_path / "state")
    fd = poller.lock(sd, "123:secret")
    try:
        with pytest.raises(BotError, match=r"^another bot polls with this token \(PID %d\)$" % os.getpid()) as e:
            poller.lock(sd, "123:secret")
        assert "secret" not in str(e.value)
        os.close(poller.lock(sd, "456:other"))  # another token: another lock
    finally:
        os.close(fd)
