"""Logging for unattended runs: syslog with the vpn-director tag, a size-capped file, -v/-q."""

import json
import os
import stat
import subprocess
import sys

import pytest

from fakesyslog import Syslog
from netns import ROOT
from vpn_director import log


@pytest.fixture
def syslog(tmp_path):
    s = Syslog(tmp_path / "log.sock")
    yield s
    s.close()


@pytest.fixture(autouse=True)
def no_handlers_left():
    yield
    log.reset()


def vpd(args, env=None):
    full = dict(os.environ, PYTHONPATH=ROOT)
    full.pop("JOURNAL_STREAM", None)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "vpn_director"] + args, env=full, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True)


def test_a_hook_run_with_a_broken_config_leaves_its_error_in_syslog(tmp_path, syslog):
    bad = tmp_path / "bad.json"
    bad.write_text('{"xray": {"clients": ["192.168.1.300"]}}')
    p = vpd(["-q", "-c", str(bad), "apply", "--if-changed"], env={"VPD_SYSLOG": syslog.path})
    assert p.returncode == 2
    msgs = syslog.messages()
    assert any(m.startswith("<11>vpn-director[") and "invalid config: 1 problem(s)" in m for m in msgs), msgs
    assert any("xray.clients[0]" in m for m in msgs)


def test_install_logs_what_it_did_and_syslog_can_be_turned_off(tmp_path, syslog):
    p = vpd(["install", "--root", str(tmp_path / "root")], env={"VPD_SYSLOG": syslog.path})
    assert p.returncode == 0, p.stderr
    msgs = syslog.messages()
    assert any("<14>vpn-director[" in m and "wrote /opt/sbin/vpn-director" in m for m in msgs), msgs
    p = vpd(["uninstall", "--root", str(tmp_path / "root")], env={"VPD_SYSLOG": "off"})
    assert p.returncode == 0 and syslog.messages() == []


def test_read_only_commands_stay_out_of_syslog(tmp_path, syslog):
    cfg = tmp_path / "c.json"
    cfg.write_text('{"xray": {"exclude_sets": []}}')
    p = vpd(["-c", str(cfg), "check"], env={"VPD_SYSLOG": syslog.path})
    assert p.returncode == 0, p.stderr
    assert syslog.messages() == []


def test_missing_syslog_socket_is_not_an_error(tmp_path):
    assert log.setup(env={"VPD_SYSLOG": str(tmp_path / "nothing-here")}) is None
    log.info("goes nowhere, quietly")


def test_under_systemd_the_journal_already_has_stdout(syslog):
    assert log.setup(env={"JOURNAL_STREAM": "8:123"}) is None
    assert log.setup(env={"JOURNAL_STREAM": "8:123", "VPD_SYSLOG": syslog.path}) is not None


def test_verbose_adds_the_details(syslog):
    log.setup(verbose=False, env={"VPD_SYSLOG": syslog.path})
    log.debug("a detail")
    log.info("a summary")
    assert [m.split(": ", 1)[1] for m in syslog.messages()] == ["a summary"]
    log.setup(verbose=True, env={"VPD_SYSLOG": syslog.path})
    log.debug("a detail")
    assert [m.split(": ", 1)[1] for m in syslog.messages()] == ["a detail"]


def test_log_file_is_capped_and_private(tmp_path):
    path = tmp_path / "vpn-director.log"
    log.setup(env={"VPD_SYSLOG": "off"})
    assert log.configure(True, str(path), max_bytes=2048) is None
    for i in range(200):
        log.info("apply all: %d change(s) in 0.01s" % i)
    log.reset()
    assert path.stat().st_size <= 2048
    rotated = tmp_path / "vpn-director.log.1"
    assert rotated.exists() and rotated.stat().st_size <= 2048
    assert sorted(os.listdir(str(tmp_path))) == ["vpn-director.log", "vpn-director.log.1"]  # one old copy only
    assert "apply all: 199 change(s)" in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) & 0o007 == 0


def test_unwritable_log_file_is_a_warning(tmp_path):
    log.setup(env={"VPD_SYSLOG": "off"})
    problem = log.configure(True, str(tmp_path / "no" / "such" / "dir" / "x.log"))
    assert problem and "logging to it is off" in problem


@pytest.mark.parametrize("foreign", ["file", "rotated copy"])
def test_a_log_file_setting_never_rotates_or_deletes_a_file_that_is_not_our_log(tmp_path, foreign):
    path = tmp_path / "firewall-start"  # advanced.log.file naming the wrong file
    script = b"#!/bin/sh\n/opt/sbin/other-tool start\n"
    victim = path if foreign == "file" else tmp_path / "firewall-start.1"
    victim.write_bytes(script)
    log.setup(env={"VPD_SYSLOG": "off"})
    problem = log.configure(True, str(path), max_bytes=256)
    assert problem and "is not a vpn-director log" in problem and "logging to the file is off" in problem
    assert "\n" not in problem and "other-tool" not in problem
    for i in range(50):
        log.info("apply all: %d change(s) in 0.01s" % i)
    log.reset()
    assert victim.read_bytes() == script
    assert sorted(os.listdir(str(tmp_path))) == [victim.name]


def test_our_own_log_and_an_empty_file_are_rotated_as_usual(tmp_path):
    path = tmp_path / "vpd.log"
    path.write_bytes(b"")
    log.setup(env={"VPD_SYSLOG": "off"})
    assert log.configure(True, str(path), max_bytes=256) is None
    for i in range(50):
        log.info("apply all: %d change(s) in 0.01s" % i)
    log.reset()
    assert log.is_our_log(str(path)) and log.is_our_log(str(tmp_path / "vpd.log.1"))
    assert log.configure(True, str(path), max_bytes=256) is None  # next run: both files are ours


def test_a_foreign_file_that_appears_at_the_rotated_copy_is_kept(tmp_path):
    path = tmp_path / "vpd.log"
    log.setup(env={"VPD_SYSLOG": "off"})
    assert log.configure(True, str(path), max_bytes=256) is None
    other = tmp_path / "vpd.log.1"
    other.write_bytes(b"not ours\n")  # put there while the run goes on
    for i in range(50):
        log.info("apply all: %d change(s) in 0.01s" % i)
    log.reset()
    assert other.read_bytes() == b"not ours\n"
    assert "apply all: 0 change(s)" in path.read_text() and "apply all: 49" not in path.read_text()


def test_log_file_from_the_config(tmp_path):
    logfile = tmp_path / "vpd.log"
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"xray": {"exclude_sets": []}, "advanced": {"log": {"file": str(logfile)}}}))
    # no kernel tools on PATH: the run fails before touching anything, and says so in the file too
    p = vpd(["-c", str(cfg), "apply", "--dry-run"], env={"VPD_SYSLOG": "off", "PATH": "/nonexistent"})
    assert p.returncode == 1
    assert "not found in PATH" in p.stderr
    assert "ERROR" in logfile.read_text() and "not found in PATH" in logfile.read_text()


def test_tail_reads_the_rotated_file_first_and_only_files_of_ours(tmp_path):
    path = str(tmp_path / "vpd.log")
    assert log.tail(path) == [] and log.tail(None) == []
    (tmp_path / "vpd.log.1").write_text("".join("2026-01-01 00:00:00,000 INFO [1] old %d\n" % i for i in range(5)))
    (tmp_path / "vpd.log").write_text("".join("2026-01-01 00:00:00,000 INFO [1] new %d\n" % i for i in range(3)))
    assert [line.split()[-2:] for line in log.tail(path, 4)] == [["old", "4"], ["new", "0"], ["new", "1"],
                                                                  ["new", "2"]]
    (tmp_path / "vpd.log").write_text("#!/bin/sh\nrm -rf /\n")  # a typo'd path: never shown
    assert all("old" in line for line in log.tail(path, 10))
