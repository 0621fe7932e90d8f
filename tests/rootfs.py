"""An installed Merlin tree under a temporary --root, and a way to run its files for real.

The installed files name their final paths (/opt/sbin/vpn-director, /opt/bin/python3). To run
them unchanged, the tree's /opt is bind-mounted over /opt in a private mount namespace (the one
`ip netns exec` creates, or `unshare -m`), and /opt/bin/python3 stands for Entware's python3.
"""

import os
import shutil
import subprocess
import sys

from vpn_director.install import Installer

# The sourced hook keeps the caller's positional parameters and `wait` collects the job it
# puts in the background, so the run is over when the shell exits. Fixed text; paths come in
# through the environment.
RUN_HOOK = 'mount --bind "$VPD_TEST_OPT" /opt && . "$VPD_TEST_HOOK"; wait'


def can_bind_opt():
    return os.geteuid() == 0 and os.path.isdir("/opt") and shutil.which("unshare") is not None


def install(root, target="merlin"):
    """Install into `root` and provide /opt/bin/python3; returns the install messages."""
    said = []
    Installer(target, str(root), say=said.append).install()
    if target == "merlin":
        py = root / "opt" / "bin" / "python3"
        py.parent.mkdir(parents=True, exist_ok=True)
        if not py.exists():
            py.symlink_to(sys.executable)
    return said


def hook_argv(root, hook, args=(), netns=None):
    """argv that runs the installed hook `hook` with `args` as the firmware would pass them."""
    prefix = ["ip", "netns", "exec", netns] if netns else ["unshare", "-m"]
    return prefix + ["sh", "-c", RUN_HOOK, hook] + list(args)


def hook_env(root, hook, extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(VPD_TEST_OPT=str(root / "opt"), VPD_TEST_HOOK=str(root / "jffs" / "scripts" / hook))
    env.update(extra or {})
    return env


def run_hook(root, hook, args=(), netns=None, env=None):
    return subprocess.run(hook_argv(root, hook, args, netns), env=hook_env(root, hook, env),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
