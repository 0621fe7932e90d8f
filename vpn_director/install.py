"""install / uninstall on the router: Asuswrt-Merlin with Entware, or a systemd gateway.

Every file refers to the final paths; `--root DIR` only changes where they are written (tests,
packaging). Firmware hook scripts belong to the owner: we add or update one marked block and
leave every other byte alone, and uninstall takes exactly that block out again.
"""

import json
import os
import pkgutil
import re
import subprocess
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from . import pyz
from .errors import InstallError, UsageError
from .state import write_atomic

WATCH_ARGS = "apply --if-changed"  # the per-minute drift check; the watch daemon also runs it
PID_DIR = "/var/run"  # Merlin: where the init script records its daemons (vpn-director-NAMEd.pid)
# The long-running commands the init script / systemd units start and stop: name -> (systemd
# unit, what it does, seconds to wait for it at stop).
DAEMONS = {
    # SIGTERM ends it after the current round, so a switch in progress finishes first
    "watch": ("vpn-director-watchd.service", "the watch daemon (Xray health checks and failover, routing "
                                             "watchdog, subscriptions)", "120s"),
    "web": ("vpn-director-web.service", "the web UI", "10s"),
    "bot": ("vpn-director-bot.service", "the Telegram bot", "10s"),
}
UPDATE_ARGS = "update"
SUBS_ARGS = "xray sub update --due"  # each subscription at its own interval_h; hourly is the finest
SHEBANG = "#!/bin/sh\n"
BEGIN = "# >>> vpn-director >>>"
END = "# <<< vpn-director <<<"
BEGIN_NOTE = " managed by 'vpn-director install'; 'vpn-director uninstall' removes it"
# What install did to an owner's file, kept in the marker so uninstall can undo exactly that.
FLAG_RE = re.compile(r"\[(created|newline|mode=[0-7]{3,4})\]")
EXIT_RE = re.compile(r"^\s*exit(\s+\d+)?\s*;?\s*$")
SAFE_PATH_RE = re.compile(r"^/[A-Za-z0-9_./-]+$")


@dataclass(frozen=True)
class Target:
    name: str
    python: str
    program: str
    launcher: str
    config: str
    # path -> (template, extra placeholder values); all 0644 unless listed in `executables`
    files: Dict[str, Tuple[str, Dict[str, str]]]
    executables: Tuple[str, ...] = ()
    hooks: Tuple[str, ...] = ()
    example_paths: Dict[str, str] = field(default_factory=dict)  # data_dir/state_dir for this system
    units: Tuple[str, ...] = ()  # systemd units to enable


def _merlin():
    launcher = "/opt/sbin/vpn-director"
    quiet = " </dev/null >/dev/null 2>&1"
    init = "/opt/etc/init.d/S99vpn-director"
    return Target(
        name="merlin", python="/opt/bin/python3", program="/opt/vpn-director/vpn-director.pyz",
        launcher=launcher, config="/opt/vpn-director/vpn-director.json",
        files={init: ("merlin-init.sh", {
            "PID_DIR": PID_DIR, "DAEMONS": " ".join(DAEMONS),
            # cru: Merlin's cron front end; its table lives in /tmp, so the init script re-adds it at boot
            "WATCH_CRON": "* * * * * %s %s%s" % (launcher, WATCH_ARGS, quiet),
            "UPDATE_CRON": "17 4 * * * %s %s%s" % (launcher, UPDATE_ARGS, quiet),
            "SUBS_CRON": "23 * * * * %s %s%s" % (launcher, SUBS_ARGS, quiet)})},
        executables=(init,),
        hooks=("firewall-start", "nat-start", "wan-event", "openvpn-event", "wgclient-start", "wgclient-stop"))


def _systemd():
    units = "/etc/systemd/system/"
    jobs = {
        "watch": ("re-apply when the live state drifts", WATCH_ARGS, "OnActiveSec=1min\nOnUnitActiveSec=1min"),
        "update": ("refresh the country lists", UPDATE_ARGS,
                   "OnCalendar=daily\nRandomizedDelaySec=1h\nPersistent=true"),
        "subs": ("refresh the Xray subscriptions that are due", SUBS_ARGS,
                 "OnCalendar=hourly\nRandomizedDelaySec=5min"),
    }
    files = {units + "vpn-director.service": ("vpn-director.service", {})}
    for name, (unit, desc, stop_timeout) in DAEMONS.items():
        files[units + unit] = ("daemon.service", {"DESCRIPTION": desc, "ARGS": name, "STOP_TIMEOUT": stop_timeout})
    for job, (desc, args, schedule) in jobs.items():
        files[units + "vpn-director-%s.service" % job] = ("job.service", {"DESCRIPTION": desc, "ARGS": args})
        files[units + "vpn-director-%s.timer" % job] = ("job.timer", {"DESCRIPTION": desc, "SCHEDULE": schedule})
    return Target(
        name="systemd", python="/usr/bin/python3", program="/usr/local/lib/vpn-director/vpn-director.pyz",
        launcher="/usr/local/sbin/vpn-director", config="/etc/vpn-director/vpn-director.json", files=files,
        example_paths={"data_dir": "/var/lib/vpn-director", "state_dir": "/run/vpn-director"},
        units=("vpn-director.service",) + tuple(unit for unit, _, _ in DAEMONS.values())
        + ("vpn-director-watch.timer", "vpn-director-update.timer", "vpn-director-subs.timer"))


TARGETS = {"merlin": _merlin(), "systemd": _systemd()}
HOOK_DIR = "/jffs/scripts"
# The firmware calls these; each starts the watchdog in the background, so the owner's lines
# after our block (and the firmware) never wait for a boot wait or the run lock.
HOOK_BODIES = {
    "firewall-start": ["if [ -x {prog} ]; then", "    {run}", "fi"],
    "nat-start": ["if [ -x {prog} ]; then", "    {run}", "fi"],
    # $2 is the WAN event; only a completed connection changes routes
    "wan-event": ['if [ "$2" = "connected" ] && [ -x {prog} ]; then', "    {run}", "fi"],
    # OpenVPN passes the phase in $script_type; tunnel up/down moves the firmware's mark rules
    "openvpn-event": ['case "$script_type" in', "    up|route-up|down)",
                      "        if [ -x {prog} ]; then {run} fi ;;", "esac"],
    # a WireGuard client ($1: its unit) up or down: the firmware re-inserts its own rules (its DNS
    # redirection included) above ours
    "wgclient-start": ["if [ -x {prog} ]; then", "    {run}", "fi"],
    "wgclient-stop": ["if [ -x {prog} ]; then", "    {run}", "fi"],
}


def hook_body(hook, launcher):
    run = "%s %s </dev/null >/dev/null 2>&1 &" % (launcher, WATCH_ARGS)
    return [line.format(prog=launcher, run=run) for line in HOOK_BODIES[hook]]


def template(name, values):
    text = pkgutil.get_data(pyz.PACKAGE, "templates/" + name).decode("utf-8")
    for key, value in values.items():
        text = text.replace("@%s@" % key, value)
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise InstallError("template %s: no value for %s" % (name, ", ".join(left)))
    return text


def contents(target):
    """{path: (bytes, mode)} of every file the target installs (config and hooks aside)."""
    common = {"PROGRAM": target.program, "PYTHON": target.python, "LAUNCHER": target.launcher,
              "CONFIG": target.config}
    for value in common.values():
        if not SAFE_PATH_RE.match(value):  # these go into shell scripts unquoted
            raise InstallError("unsafe install path %r" % value)
    out = {target.program: (pyz.program_bytes(), 0o644),
           target.launcher: (template("launcher.sh", common).encode(), 0o755)}
    for path, (name, extra) in target.files.items():
        mode = 0o755 if path in target.executables else 0o644
        out[path] = (template(name, dict(common, **extra)).encode(), mode)
    return out


def example_config(target):
    """The shipped example config as bytes (adapted to the target's paths), or None."""
    try:
        data = pkgutil.get_data(pyz.PACKAGE, pyz.EXAMPLE)
    except OSError:
        data = None
    if data is None:
        path = pyz.source_example()
        if not path:
            return None
        with open(path, "rb") as fh:
            data = fh.read()
    if not target.example_paths:
        return data
    raw = json.loads(data.decode("utf-8"))
    raw["data_dir"] = target.example_paths["data_dir"]
    raw.setdefault("advanced", {})["state_dir"] = target.example_paths["state_dir"]
    return (json.dumps(raw, indent=2) + "\n").encode()


# --- hook blocks: pure text functions ------------------------------------------------------

@dataclass
class Block:
    start: int  # line index of the begin marker
    end: int  # line index after the end marker
    flags: List[str]


def find_blocks(lines, where="hook"):
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].startswith(BEGIN):
            j = i + 1
            while j < len(lines) and lines[j].rstrip("\r\n") != END:
                if lines[j].startswith(BEGIN):
                    break
                j += 1
            if j >= len(lines) or lines[j].startswith(BEGIN):
                raise InstallError("%s: a vpn-director block has no end marker (%r); fix the file by hand"
                                   % (where, END))
            blocks.append(Block(i, j + 1, FLAG_RE.findall(lines[i])))
            i = j + 1
        else:
            i += 1
    return blocks


def render_block(body, flags):
    marker = BEGIN + BEGIN_NOTE + "".join(" [%s]" % f for f in flags)
    return [marker + "\n"] + [line + "\n" for line in body] + [END + "\n"]


def add_block(text, mode, body, where="hook"):
    """(text or None, mode or None) -> (new text, new mode): our block added or updated in place."""
    if text is None:
        return SHEBANG + "".join(render_block(body, ["created"])), 0o755
    lines = text.splitlines(keepends=True)
    blocks = find_blocks(lines, where)
    if blocks:
        first = blocks[0]
        new = lines[:first.start] + render_block(body, first.flags)
        kept = lines[first.end:]
        for b in reversed(blocks[1:]):  # stray copies go; the first one's place is kept
            del kept[b.start - first.end:b.end - first.end]
        return "".join(new + kept), mode
    flags = []
    if not mode & 0o100:
        flags.append("mode=%04o" % mode)
        mode |= 0o111
    at = len(lines)
    last = max((i for i, l in enumerate(lines) if l.strip()), default=None)
    if last is not None and EXIT_RE.match(lines[last]):
        at = last  # a block after a final `exit` would never run
    elif lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
        flags.append("newline")
    return "".join(lines[:at] + render_block(body, flags) + lines[at:]), mode


def remove_blocks(text, mode, where="hook"):
    """-> (text or None to delete the file, mode, found): every block of ours taken out."""
    lines = text.splitlines(keepends=True)
    blocks = find_blocks(lines, where)
    if not blocks:
        return text, mode, False
    flags = blocks[0].flags
    at_end = blocks[-1].end == len(lines)
    for b in reversed(blocks):
        del lines[b.start:b.end]
    out = "".join(lines)
    if "newline" in flags and at_end and out.endswith("\n"):
        out = out[:-1]
    if "created" in flags and out == SHEBANG:
        return None, mode, True
    for f in flags:
        if f.startswith("mode="):
            mode = int(f[5:], 8)
    return out, mode, True


# --- the file system -----------------------------------------------------------------------

class Installer:
    def __init__(self, target, root="/", say=print, run=subprocess.run):
        if target not in TARGETS:
            raise InstallError("unknown target %r (merlin or systemd)" % target)
        if not root or not os.path.isabs(root):
            # abspath("") is the current directory: from `/` that would be a live install
            raise UsageError("--root must be an absolute directory path, got %r" % (root,))
        self.t = TARGETS[target]
        self.root = os.path.abspath(root)
        self.live = self.root == "/"  # only then are cron, systemd and the firmware touched
        self.say = say
        self.run = run

    def path(self, final):
        return os.path.join(self.root, final.lstrip("/"))

    def hook_paths(self):
        return {h: os.path.join(HOOK_DIR, h) for h in self.t.hooks}

    def install(self):
        for final, (data, mode) in sorted(contents(self.t).items()):
            self._write(final, data, mode)
        self._config()
        for hook, final in sorted(self.hook_paths().items()):
            self._hook(final, hook_body(hook, self.t.launcher))
        if self.live:
            self._activate()
        self.say("installed for %s; next: edit %s, check it with `%s check`, then %s"
                 % (self.t.name, self.t.config, self.t.launcher, self._start_hint()))

    def uninstall(self):
        if self.live:
            self._deactivate()
        for final in self.hook_paths().values():
            self._unhook(final)
        for final in sorted(contents_paths(self.t)):
            path = self.path(final)
            if os.path.lexists(path):
                _fs(os.unlink, path)
                self.say("removed %s" % final)
        _remove_if_empty(os.path.dirname(self.path(self.t.program)))
        if os.path.exists(self.path(self.t.config)):
            self.say("kept %s (your config) and its data_dir; remove them by hand if you like" % self.t.config)
        if self.live and self.t.units:
            self._system(["systemctl", "daemon-reload"])

    # --- files ---
    def _write(self, final, data, mode):
        path = self.path(final)
        old = _read_bytes(path)
        if old == data and _mode(path) == mode:
            self.say("unchanged %s" % final)
            return
        _fs(os.makedirs, os.path.dirname(path), 0o755, exist_ok=True)
        _fs(write_atomic, path, data, mode)
        self.say("%s %s" % ("updated" if old is not None else "wrote", final))

    def _config(self):
        path = self.path(self.t.config)
        if os.path.exists(path):
            self.say("kept %s (existing config)" % self.t.config)
            return
        data = example_config(self.t)
        if data is None:
            self.say("no example config in this build: write %s yourself" % self.t.config)
            return
        _fs(os.makedirs, os.path.dirname(path), 0o755, exist_ok=True)
        _fs(write_atomic, path, data, 0o600)
        self.say("wrote %s (the example config: edit it before starting)" % self.t.config)

    def _hook(self, final, body):
        path = self._owner_file(final)
        old = _read_bytes(path)
        text = None if old is None else old.decode("utf-8", "surrogateescape")
        mode = _mode(path)
        new, new_mode = add_block(text, mode, body, final)
        if new == text and new_mode == mode:
            self.say("unchanged %s" % final)
            return
        _fs(os.makedirs, os.path.dirname(path), 0o755, exist_ok=True)
        _fs(write_atomic, path, new.encode("utf-8", "surrogateescape"), new_mode)
        if text is None:
            self.say("created %s" % final)
        else:
            self.say("%s the vpn-director block in %s" % ("updated" if BEGIN in text else "added", final))
            if new_mode != mode:
                self.say("note: %s was not executable; it is now, so its other lines run too" % final)

    def _unhook(self, final):
        path = self._owner_file(final)
        old = _read_bytes(path)
        if old is None:
            return
        new, mode, found = remove_blocks(old.decode("utf-8", "surrogateescape"), _mode(path), final)
        if not found:
            return
        if new is None:
            _fs(os.unlink, path)
            self.say("removed %s (it held only our block)" % final)
            return
        _fs(write_atomic, path, new.encode("utf-8", "surrogateescape"), mode)
        self.say("removed the vpn-director block from %s" % final)

    def _owner_file(self, final):
        """Edit through a symlink to its target, but never outside --root."""
        path = self.path(final)
        real = os.path.realpath(path)
        if real != path and not (self.live or real.startswith(self.root + os.sep)):
            raise InstallError("%s is a symlink to %s, outside %s" % (final, real, self.root))
        return real

    # --- the live system ---
    def _activate(self):
        if self.t.units:
            self._system(["systemctl", "daemon-reload"])
            self._system(["systemctl", "enable"] + list(self.t.units))
            return
        if not os.path.exists(self.path(self.t.python)):
            self.say("warning: %s is missing: install it with `opkg install python3`" % self.t.python)
        p = self._system(["nvram", "get", "jffs2_scripts"], quiet=True)
        if p is not None and p.stdout.strip() != "1":
            self.say("warning: JFFS custom scripts are off, so the firmware ignores the hooks: enable "
                     "them (Administration > System) or run `nvram set jffs2_scripts=1; nvram commit`")

    def _deactivate(self):
        if self.t.units:
            self._system(["systemctl", "disable", "--now"] + list(reversed(self.t.units)))
            return
        for final in self.t.executables:  # the init script's stop: cron jobs out, routing removed
            if os.path.exists(self.path(final)):
                self._system([self.path(final), "stop"])

    def _start_hint(self):
        if self.t.units:
            return "`systemctl start vpn-director`"
        return "`%s start`" % self.t.executables[0]

    def _system(self, argv, quiet=False):
        try:
            p = self.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
        except OSError as e:
            if not quiet:
                self.say("warning: cannot run %s: %s" % (argv[0], e.strerror or e))
            return None
        if p.returncode != 0 and not quiet:
            self.say("warning: `%s` failed: %s" % (" ".join(argv), (p.stderr or p.stdout).strip()[:300]))
        return p


def contents_paths(target):
    return [target.program, target.launcher] + list(target.files)


def _read_bytes(path):
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise InstallError("cannot read %s: %s" % (path, e.strerror or e))


def _mode(path):
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return None


def _remove_if_empty(path):
    try:
        os.rmdir(path)
    except OSError:
        pass


def _fs(fn, path, *args, **kw):
    try:
        return fn(path, *args, **kw)
    except OSError as e:
        raise InstallError("%s: %s" % (path, e.strerror or e))
