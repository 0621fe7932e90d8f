"""install / uninstall into a temporary --root: files and modes, idempotent hooks that keep the
owner's lines, an uninstall that restores the owner's bytes; the hooks' own conditions."""

import json
import os
import stat
import subprocess

import pytest

import rootfs
from netns import ROOT
from vpn_director import cli, config, install
from vpn_director.errors import InstallError

EXAMPLE = os.path.join(ROOT, "examples", "vpn-director.json")
MERLIN_FILES = {
    "opt/vpn-director/vpn-director.pyz": 0o644,
    "opt/vpn-director/vpn-director.json": 0o600,
    "opt/sbin/vpn-director": 0o755,
    "opt/etc/init.d/S99vpn-director": 0o755,
    "jffs/scripts/firewall-start": 0o755,
    "jffs/scripts/nat-start": 0o755,
    "jffs/scripts/wan-event": 0o755,
    "jffs/scripts/openvpn-event": 0o755,
    "jffs/scripts/wgclient-start": 0o755,
    "jffs/scripts/wgclient-stop": 0o755,
}
SYSTEMD_FILES = {
    "usr/local/lib/vpn-director/vpn-director.pyz": 0o644,
    "usr/local/sbin/vpn-director": 0o755,
    "etc/vpn-director/vpn-director.json": 0o600,
    "etc/systemd/system/vpn-director.service": 0o644,
    "etc/systemd/system/vpn-director-watchd.service": 0o644,
    "etc/systemd/system/vpn-director-web.service": 0o644,
    "etc/systemd/system/vpn-director-bot.service": 0o644,
    "etc/systemd/system/vpn-director-watch.service": 0o644,
    "etc/systemd/system/vpn-director-watch.timer": 0o644,
    "etc/systemd/system/vpn-director-update.service": 0o644,
    "etc/systemd/system/vpn-director-update.timer": 0o644,
    "etc/systemd/system/vpn-director-subs.service": 0o644,
    "etc/systemd/system/vpn-director-subs.timer": 0o644,
}
HOOKS = ("firewall-start", "nat-start", "wan-event", "openvpn-event", "wgclient-start", "wgclient-stop")


def tree(root):
    """{relative path: (bytes, mode)} of every file under root."""
    out = {}
    for d, _, files in os.walk(str(root)):
        for f in files:
            p = os.path.join(d, f)
            if os.path.islink(p):
                out[os.path.relpath(p, str(root))] = ("->" + os.readlink(p), None)
                continue
            with open(p, "rb") as fh:
                out[os.path.relpath(p, str(root))] = (fh.read(), stat.S_IMODE(os.stat(p).st_mode))
    return out


def vpd(*args):
    return cli.main(list(args))


def test_merlin_files_and_modes(tmp_path, capsys):
    assert vpd("install", "--root", str(tmp_path)) == 0
    files = tree(tmp_path)
    assert {p: m for p, (_, m) in files.items()} == MERLIN_FILES
    text = {p: data.decode() for p, (data, _) in files.items() if not p.endswith(".pyz")}
    assert text["opt/sbin/vpn-director"].startswith("#!/bin/sh\n")
    assert "exec /opt/bin/python3 -I -S /opt/vpn-director/vpn-director.pyz \"$@\"" in text["opt/sbin/vpn-director"]
    assert "VPD_CONFIG:-/opt/vpn-director/vpn-director.json" in text["opt/sbin/vpn-director"]
    init = text["opt/etc/init.d/S99vpn-director"]
    for verb in ("start)", "stop)", "restart)", "status)"):
        assert verb in init
    assert 'cru a vpn-director-watch "* * * * * /opt/sbin/vpn-director apply --if-changed' in init
    assert 'cru a vpn-director-update "17 4 * * * /opt/sbin/vpn-director update' in init
    assert "cru d vpn-director-watch" in init and "cru d vpn-director-update" in init
    assert 'cru a vpn-director-subs "23 * * * * /opt/sbin/vpn-director xray sub update --due' in init
    assert "cru d vpn-director-subs" in init
    # the watch daemon: started in the background after apply, its PID recorded, stopped first
    assert '"$PROG" "$d" </dev/null >/dev/null 2>&1 &' in init and "PIDDIR=/var/run" in init
    assert 'DAEMONS="watch' in init
    assert 'grep -qF "/opt/vpn-director/vpn-director.pyz" "/proc/$pid/cmdline"' in init
    start, stop = init.split("    start)")[1].split(";;")[0], init.split("    stop)")[1].split(";;")[0]
    assert start.index("apply") < start.index("daemon_start") and stop.index("daemon_stop") < stop.index('"$PROG" stop')
    assert files["opt/vpn-director/vpn-director.json"][0] == open(EXAMPLE, "rb").read()
    for hook in HOOKS:
        body = text["jffs/scripts/" + hook]
        assert body.startswith("#!/bin/sh\n# >>> vpn-director >>>")
        assert body.endswith("# <<< vpn-director <<<\n")
        assert "/opt/sbin/vpn-director apply --if-changed </dev/null >/dev/null 2>&1 &" in body
    assert 'if [ "$2" = "connected" ]' in text["jffs/scripts/wan-event"]
    assert "up|route-up|down)" in text["jffs/scripts/openvpn-event"]
    out = capsys.readouterr().out
    assert "wrote /opt/vpn-director/vpn-director.json (the example config" in out
    assert "/opt/etc/init.d/S99vpn-director start" in out


def test_hooks_and_scripts_hold_no_config_values(tmp_path):
    install.Installer("merlin", str(tmp_path), say=lambda m: None).install()
    raw = json.load(open(EXAMPLE))
    values = {c for c in raw["xray"]["clients"] + raw["xray"]["servers"]} | set(raw["tunnel_director"]["tunnels"])
    for rel, (data, _) in tree(tmp_path).items():
        if rel.startswith(("jffs/", "opt/sbin/", "opt/etc/")):
            assert not [v for v in values if v in data.decode()], rel


def test_install_twice_gives_the_same_files(tmp_path, capsys):
    assert vpd("install", "--root", str(tmp_path)) == 0
    first = tree(tmp_path)
    capsys.readouterr()
    assert vpd("install", "--root", str(tmp_path)) == 0
    assert tree(tmp_path) == first
    out = capsys.readouterr().out
    assert "kept /opt/vpn-director/vpn-director.json (existing config)" in out
    assert out.count("unchanged ") == len(MERLIN_FILES) - 1  # everything but the kept config


def test_existing_config_is_never_overwritten(tmp_path):
    cfg = tmp_path / "opt" / "vpn-director" / "vpn-director.json"
    cfg.parent.mkdir(parents=True)
    cfg.write_text('{"xray": {"clients": ["10.0.0.1"]}}')
    os.chmod(str(cfg), 0o640)
    install.Installer("merlin", str(tmp_path), say=lambda m: None).install()
    assert cfg.read_text() == '{"xray": {"clients": ["10.0.0.1"]}}'
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o640


OWNER_HOOKS = {
    "plain": (b"#!/bin/sh\nlogger -t mine 'firewall restarted'\n/jffs/scripts/mine.sh &\n", 0o755),
    "ends with exit": (b"#!/bin/sh\niptables -I INPUT -s 10.9.9.9 -j DROP\nexit 0\n\n", 0o755),
    "no final newline": (b"#!/bin/sh\necho mine", 0o755),
    "not executable": (b"#!/bin/sh\necho disabled on purpose\n", 0o644),
    "crlf and latin-1": (b"#!/bin/sh\r\necho caf\xe9\r\n", 0o700),
    "only a shebang": (b"#!/bin/sh\n", 0o755),
    "empty": (b"", 0o755),
}


@pytest.mark.parametrize("kind", sorted(OWNER_HOOKS))
def test_owner_hook_keeps_its_lines_and_uninstall_restores_its_bytes(tmp_path, kind):
    original, mode = OWNER_HOOKS[kind]
    scripts = tmp_path / "jffs" / "scripts"
    scripts.mkdir(parents=True)
    for hook in HOOKS[:2]:
        (scripts / hook).write_bytes(original)
        os.chmod(str(scripts / hook), mode)
    before = tree(tmp_path)
    say = []
    install.Installer("merlin", str(tmp_path), say=say.append).install()
    once = tree(tmp_path)
    for hook in HOOKS[:2]:
        data, new_mode = once["jffs/scripts/" + hook]
        assert new_mode & 0o111  # the firmware only runs executable hooks
        assert data.count(b"# >>> vpn-director >>>") == 1
        # take our block out by hand: exactly the owner's bytes are left (bar a final newline we added)
        lines = data.splitlines(keepends=True)
        start = next(i for i, l in enumerate(lines) if l.startswith(b"# >>> vpn-director"))
        end = next(i for i, l in enumerate(lines) if l.startswith(b"# <<< vpn-director"))
        rest = b"".join(lines[:start] + lines[end + 1:])
        assert rest in (original, original + b"\n")
        if original.rstrip().endswith(b"exit 0"):
            assert lines[end + 1].startswith(b"exit 0")  # our block runs before the owner's exit
    if not mode & 0o100:
        assert any("was not executable" in m for m in say)
    install.Installer("merlin", str(tmp_path), say=lambda m: None).install()
    assert tree(tmp_path) == once  # idempotent
    install.Installer("merlin", str(tmp_path), say=lambda m: None).uninstall()
    after = tree(tmp_path)
    assert after.pop("opt/vpn-director/vpn-director.json")  # the config stays
    assert after == before


def test_block_is_updated_in_place_and_later_owner_lines_kept(tmp_path):
    install.Installer("merlin", str(tmp_path), say=lambda m: None).install()
    hook = tmp_path / "jffs" / "scripts" / "firewall-start"
    old = hook.read_text().replace("apply --if-changed", "apply --an-older-flag")
    hook.write_text(old + "echo added later by the owner\n")
    said = []
    install.Installer("merlin", str(tmp_path), say=said.append).install()
    text = hook.read_text()
    assert "--an-older-flag" not in text and "apply --if-changed" in text
    assert text.endswith("# <<< vpn-director <<<\necho added later by the owner\n")
    assert "updated the vpn-director block in /jffs/scripts/firewall-start" in said
    install.Installer("merlin", str(tmp_path), say=lambda m: None).uninstall()
    # the file was ours, but the owner wrote into it since: it stays, with their line
    assert hook.read_text() == "#!/bin/sh\necho added later by the owner\n"


def test_duplicate_blocks_collapse_into_the_first(tmp_path):
    scripts = tmp_path / "jffs" / "scripts"
    scripts.mkdir(parents=True)
    block = "".join(install.render_block(["true"], []))
    (scripts / "nat-start").write_text("#!/bin/sh\necho a\n" + block + "echo b\n" + block + "echo c\n")
    os.chmod(str(scripts / "nat-start"), 0o755)
    install.Installer("merlin", str(tmp_path), say=lambda m: None).install()
    text = (scripts / "nat-start").read_text()
    assert text.count("# >>> vpn-director") == 1
    assert text.index("echo a") < text.index("apply --if-changed") < text.index("echo b") < text.index("echo c")


def test_a_block_without_end_marker_is_refused_and_left_alone(tmp_path, capsys):
    scripts = tmp_path / "jffs" / "scripts"
    scripts.mkdir(parents=True)
    broken = "#!/bin/sh\n# >>> vpn-director >>> managed\necho half a block\n"
    (scripts / "wan-event").write_text(broken)
    assert vpd("install", "--root", str(tmp_path)) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "/jffs/scripts/wan-event: a vpn-director block has no end marker" in err
    assert (scripts / "wan-event").read_text() == broken
    with pytest.raises(InstallError):
        install.remove_blocks(broken, 0o755, "wan-event")


def test_hook_symlink_outside_root_is_refused(tmp_path):
    scripts = tmp_path / "root" / "jffs" / "scripts"
    scripts.mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    outside.write_text("#!/bin/sh\n")
    (scripts / "firewall-start").symlink_to(outside)
    with pytest.raises(InstallError, match="outside"):
        install.Installer("merlin", str(tmp_path / "root"), say=lambda m: None).install()
    assert outside.read_text() == "#!/bin/sh\n"


def test_uninstall_of_nothing_is_fine(tmp_path):
    assert vpd("uninstall", "--root", str(tmp_path)) == 0
    assert tree(tmp_path) == {}


def test_systemd_files_units_and_example(tmp_path):
    assert vpd("install", "--target", "systemd", "--root", str(tmp_path)) == 0
    files = tree(tmp_path)
    assert {p: m for p, (_, m) in files.items()} == SYSTEMD_FILES
    text = {p: d.decode() for p, (d, _) in files.items() if not p.endswith(".pyz")}
    unit = text["etc/systemd/system/vpn-director.service"]
    for line in ("Type=oneshot", "RemainAfterExit=yes", "ExecStart=/usr/local/sbin/vpn-director apply",
                 "ExecStop=/usr/local/sbin/vpn-director stop", "WantedBy=multi-user.target"):
        assert line + "\n" in unit
    for job, args, schedule in (("watch", "apply --if-changed", "OnUnitActiveSec=1min"),
                                ("update", "update", "OnCalendar=daily")):
        assert "ExecStart=/usr/local/sbin/vpn-director %s\n" % args in text[
            "etc/systemd/system/vpn-director-%s.service" % job]
        timer = text["etc/systemd/system/vpn-director-%s.timer" % job]
        assert schedule in timer and "PartOf=vpn-director.service" in timer
        assert "WantedBy=vpn-director.service" in timer  # the timers run while the service is started
    daemon = text["etc/systemd/system/vpn-director-watchd.service"]
    for line in ("Type=simple", "ExecStart=/usr/local/sbin/vpn-director watch", "Restart=on-failure",
                 "PartOf=vpn-director.service", "After=vpn-director.service", "WantedBy=vpn-director.service"):
        assert line + "\n" in daemon
    web = text["etc/systemd/system/vpn-director-web.service"]
    assert "ExecStart=/usr/local/sbin/vpn-director web\n" in web and "Description=vpn-director: the web UI\n" in web
    assert "VPD_CONFIG:-/etc/vpn-director/vpn-director.json" in text["usr/local/sbin/vpn-director"]
    assert "exec /usr/bin/python3 -I -S /usr/local/lib/vpn-director/vpn-director.pyz" in text["usr/local/sbin/vpn-director"]
    raw = json.loads(text["etc/vpn-director/vpn-director.json"])
    assert raw["data_dir"] == "/var/lib/vpn-director" and raw["advanced"]["state_dir"] == "/run/vpn-director"
    example = json.load(open(EXAMPLE))
    assert raw["xray"] == example["xray"] and raw["tunnel_director"] == example["tunnel_director"]
    assert vpd("uninstall", "--target", "systemd", "--root", str(tmp_path)) == 0
    assert set(tree(tmp_path)) == {"etc/vpn-director/vpn-director.json"}


class FakeRun:
    """Stands in for subprocess.run: records argv, answers `nvram get` with `nvram`."""

    def __init__(self, nvram="1"):
        self.calls, self.nvram = [], nvram

    def __call__(self, argv, **kw):
        self.calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, self.nvram + "\n" if argv[0] == "nvram" else "", "")


def live_installer(target, root, run, said):
    inst = install.Installer(target, str(root), say=said.append, run=run)
    inst.live = True  # as at /, with the files still going to root
    return inst


def test_live_systemd_install_enables_and_uninstall_disables(tmp_path):
    run = FakeRun()
    inst = live_installer("systemd", tmp_path, run, [])
    inst.install()
    assert run.calls == [["systemctl", "daemon-reload"],
                         ["systemctl", "enable", "vpn-director.service", "vpn-director-watchd.service",
                          "vpn-director-web.service", "vpn-director-bot.service", "vpn-director-watch.timer",
                          "vpn-director-update.timer", "vpn-director-subs.timer"]]
    del run.calls[:]
    inst.uninstall()
    assert run.calls == [["systemctl", "disable", "--now", "vpn-director-subs.timer", "vpn-director-update.timer",
                          "vpn-director-watch.timer", "vpn-director-bot.service", "vpn-director-web.service",
                          "vpn-director-watchd.service",
                          "vpn-director.service"],
                         ["systemctl", "daemon-reload"]]


def test_live_merlin_install_warns_about_jffs_scripts_and_uninstall_stops_first(tmp_path):
    run, said = FakeRun(nvram="0"), []
    inst = live_installer("merlin", tmp_path, run, said)
    inst.install()
    assert run.calls == [["nvram", "get", "jffs2_scripts"]]  # no cron, no apply: the config is an example
    assert any("JFFS custom scripts are off" in m for m in said)
    assert any("/opt/bin/python3 is missing" in m for m in said)
    del run.calls[:]
    inst.uninstall()
    assert run.calls == [[str(tmp_path / "opt/etc/init.d/S99vpn-director"), "stop"]]


def test_unknown_target_is_bad_usage(tmp_path, capsys):
    assert vpd("install", "--target", "openwrt", "--root", str(tmp_path)) == 2
    assert tree(tmp_path) == {}


@pytest.mark.parametrize("root", ["", "rel/root"])
@pytest.mark.parametrize("command", ["install", "uninstall"])
def test_empty_or_relative_root_is_bad_usage_not_an_install_into_the_cwd(tmp_path, monkeypatch, capsys, root,
                                                                         command):
    monkeypatch.chdir(tmp_path)  # run from `/`, an empty --root would have been a live install
    assert vpd(command, "--root", root) == 2
    err = capsys.readouterr().err
    assert err == "vpn-director: error: --root must be an absolute directory path, got %r\n" % root
    assert tree(tmp_path) == {}


# --- the hooks' conditions, run for real against a stand-in program -----------------------

needs_bind = pytest.mark.skipif(not rootfs.can_bind_opt(), reason="needs root, /opt and unshare")


@needs_bind
@pytest.mark.parametrize("hook,args,env,runs", [
    ("firewall-start", ["eth0"], {}, True),
    ("nat-start", [], {}, True),
    ("wan-event", ["0", "connected"], {}, True),
    ("wan-event", ["0", "disconnected"], {}, False),
    ("wan-event", ["0", "init"], {}, False),
    ("openvpn-event", ["tun11"], {"script_type": "route-up"}, True),
    ("openvpn-event", ["tun11"], {"script_type": "up"}, True),
    ("openvpn-event", ["tun11"], {"script_type": "down"}, True),
    ("openvpn-event", ["tun11"], {"script_type": "ipchange"}, False),
    ("wgclient-start", ["1"], {}, True),
    ("wgclient-stop", ["1"], {}, True),
])
def test_hook_starts_the_watchdog_on_its_events_only(tmp_path, hook, args, env, runs):
    rootfs.install(tmp_path)
    calls = tmp_path / "calls"
    fake = tmp_path / "opt" / "sbin" / "vpn-director"
    fake.write_text("#!/bin/sh\necho \"$*\" >> %s\n" % calls)
    p = rootfs.run_hook(tmp_path, hook, args, env=env)
    assert p.returncode == 0, p.stderr
    got = calls.read_text().splitlines() if calls.exists() else []
    assert got == (["apply --if-changed"] if runs else [])


INIT_RUN = r"""
mount --bind "$VPD_TEST_OPT" /opt && mount --bind "$VPD_TEST_RUN" /var/run || exit 9
init=/opt/etc/init.d/S99vpn-director
$init start
sleep 1
pid=$(cat /var/run/vpn-director-watchd.pid)
kill -0 "$pid" && echo "running $pid"
$init start  # a second start keeps the one daemon
[ "$(cat /var/run/vpn-director-watchd.pid)" = "$pid" ] && echo "same $pid"
$init status | sed -n 1p  # reads everything: no SIGPIPE cuts the script short
$init stop
kill -0 "$pid" 2>/dev/null || echo "gone"
[ -e /var/run/vpn-director-watchd.pid ] || echo "no pid file"
echo 12345 > /var/run/vpn-director-watchd.pid  # a stale PID of something else is never killed
$init stop
wait
"""


@needs_bind
def test_init_script_starts_and_stops_the_watch_daemon(tmp_path):
    rootfs.install(tmp_path)
    calls = tmp_path / "calls"
    fake = tmp_path / "opt" / "sbin" / "vpn-director"
    # a stand-in program: records its arguments; `watch` becomes a long-running process whose command
    # line names the archive and watch, as the real launcher's python does; SIGTERM ends it
    fake.write_text("#!/bin/sh\necho \"$*\" >> %s\n[ \"$1\" = watch ] && exec /opt/bin/python3 -c "
                    "'import signal,time; signal.signal(signal.SIGTERM, lambda *a: exit(0)); time.sleep(60)' "
                    "/opt/vpn-director/vpn-director.pyz watch\nexit 0\n" % calls)
    (tmp_path / "run").mkdir()
    env = dict(os.environ, VPD_TEST_OPT=str(tmp_path / "opt"), VPD_TEST_RUN=str(tmp_path / "run"))
    p = subprocess.run(["unshare", "-m", "sh", "-c", INIT_RUN], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    pid = lines[0].split()[1]
    assert lines == ["running " + pid, "same " + pid, "watch daemon: running (PID %s)" % pid, "gone", "no pid file"]
    # apply runs in the background (no terminal) at each start; one watch daemon only; the stand-in's
    # `web` and `bot` exit at once (as a web UI or a bot turned off in the config do), so each start
    # tries them again
    assert sorted(calls.read_text().splitlines()) == ["apply", "apply", "bot", "bot", "status", "stop", "stop",
                                                      "watch", "web", "web"]


@needs_bind
def test_hook_without_the_program_still_runs_the_owners_lines(tmp_path):
    scripts = tmp_path / "jffs" / "scripts"
    scripts.mkdir(parents=True)
    (scripts / "firewall-start").write_text("#!/bin/sh\necho before >> %s/owner\n" % tmp_path)
    os.chmod(str(scripts / "firewall-start"), 0o755)
    rootfs.install(tmp_path)
    with open(str(scripts / "firewall-start"), "a") as fh:
        fh.write("echo after >> %s/owner\n" % tmp_path)
    os.unlink(str(tmp_path / "opt" / "sbin" / "vpn-director"))  # e.g. Entware not mounted yet
    p = rootfs.run_hook(tmp_path, "firewall-start")
    assert p.returncode == 0 and p.stderr == ""
    assert (tmp_path / "owner").read_text() == "before\nafter\n"


def test_block_text_functions_round_trip():
    for original, mode in OWNER_HOOKS.values():
        text = original.decode("latin-1")
        added, new_mode = install.add_block(text, mode, ["true"])
        assert install.remove_blocks(added, new_mode) == (text, mode, True)
    created, mode = install.add_block(None, None, ["true"])
    assert (created.startswith("#!/bin/sh\n"), mode) == (True, 0o755)
    assert install.remove_blocks(created, mode) == (None, 0o755, True)


def test_example_config_validates_for_both_targets(tmp_path):
    rt = tmp_path / "rt_tables"
    rt.write_text("111 wgc1\n113 ovpnc1\n")
    for target in ("merlin", "systemd"):
        raw = json.loads(install.example_config(install.TARGETS[target]).decode())
        raw["advanced"]["rt_tables"] = str(rt)
        cfg = config.validate(raw)
        assert cfg.warnings == []
