"""The `xray` command for machines without an Xray binary: the Xray-core Python package.

PyPI's `Xray-core` package embeds real Xray-core (26.x) as a CPython extension with one useful
call, `xray.startFromJSON(text)`: it starts an instance inside the calling process (exit 23 on a
config error, printing nothing) and keeps it running in Go threads that ignore SIGTERM. This
module gives it the command line that vpn-director drives on a router, for the lab and tests:

  python -m vpn_director.xray.embedded version
  python -m vpn_director.xray.embedded run -c FILE          (also -config FILE, -c stdin:)
  python -m vpn_director.xray.embedded run -test [-format json] -c FILE

`run` starts the instance in a child process and stays as its parent: SIGTERM/SIGINT to the
parent kill the child, and the parent exits with the child's status. The child's argv[0] is
named after the command that ran us (VPD_XRAY_NAME, set by a wrapper script from its own name;
default "xray"), so `pidof xray` finds a live Xray and not the prober, a hard link of the same
wrapper named vpd-xray-probe, as on a router. argv[0] is an absolute path beside sys.executable:
CPython finds its virtualenv from there (a bare name would lose it). `-test` builds the config in
a throw-away network namespace (so it neither binds the real ports nor dials anything) and
reports "Configuration OK." once Xray logs that it started, or exit 23 like `xray run -test`.
"""

import json
import os
import re
import signal
import subprocess
import sys

STARTED = " started"  # Xray's log line: "[Warning] core: Xray 26.10.10 started"
TEST_TIMEOUT = 20


def _module():
    """The optional Xray-core package, or None when this interpreter does not have it."""
    try:
        import xray
    except ImportError:
        return None
    return xray


def available():
    """Whether the Xray-core package can be imported by this interpreter."""
    return _module() is not None


def command():
    """argv prefix that runs this module as the `xray` command."""
    return [sys.executable, "-m", "vpn_director.xray.embedded"]


def _child_argv0():
    """The instance's argv[0]: <sys.executable's directory>/<VPD_XRAY_NAME or "xray">."""
    name = os.environ.get("VPD_XRAY_NAME", "")
    if not re.match(r"^[A-Za-z0-9._+-]{1,64}$", name) or name in (".", ".."):
        name = "xray"
    return os.path.join(os.path.dirname(sys.executable), name)


def _read(path):
    if path == "stdin:":
        return sys.stdin.read()
    with open(path, encoding="utf-8") as f:
        return f.read()


def _start(text):
    """Child: start the instance and wait to be killed."""
    import time
    xray = _module()
    if xray is None:
        sys.exit("the Xray-core Python package is not installed for %s (pip install Xray-core)" % sys.executable)
    xray.startFromJSON(text)
    while True:
        time.sleep(3600)


def _netns_start(text):
    """Child of -test/version: a private network namespace with only loopback, then start."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=False)
    _start(text)


def _run(text):
    child = subprocess.Popen([_child_argv0()] + command()[1:] + ["_start"], executable=sys.executable,
                             stdin=subprocess.PIPE)
    child.stdin.write(text.encode())
    child.stdin.close()

    stopped = []

    def stop(signum, frame):
        # only a kill here: the main thread is inside child.wait(), which holds Popen's lock
        stopped.append(signum)
        child.kill()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = child.wait()
    return 0 if stopped else code


def _try_start(text):
    """(started, exit code, Xray's version) for a config run in a throw-away namespace."""
    try:
        cfg = json.loads(text)
    except ValueError as e:
        return False, 23, "Failed to start: main: failed to load config files: invalid JSON: %s" % e
    if isinstance(cfg, dict):
        cfg["log"] = {"loglevel": "warning", "access": "none"}  # the "started" line on stdout
        text = json.dumps(cfg)
    argv = command() + ["_netns_start"]
    if os.geteuid() == 0:
        argv = ["unshare", "--net"] + argv
    child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    child.stdin.write(text.encode())
    child.stdin.close()
    lines = []
    try:
        for raw in child.stdout:
            line = raw.decode(errors="replace").rstrip()
            lines.append(line)
            if line.endswith(STARTED) and "core: Xray " in line:
                return True, 0, line.split("core: ", 1)[1][:-len(STARTED)]
        code = child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    if code == 23:
        return False, 23, "Failed to start: the embedded Xray-core rejected the configuration (exit 23)"
    return False, code or 1, "Failed to start: exit %s%s" % (code, (": " + lines[-1]) if lines else "")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_start"]:
        _start(sys.stdin.read())
    if argv[:1] == ["_netns_start"]:
        _netns_start(sys.stdin.read())
    if argv[:1] in (["version"], ["-version"]):
        ok, code, what = _try_start('{"outbounds":[{"protocol":"freedom"}]}')
        if not ok:
            print(what)
            return code
        print("%s (Xray, Penetrates Everything.) embedded by the Xray-core Python package %s"
              % (what, _module().__version__))
        return 0
    if argv[:1] == ["run"]:
        argv = argv[1:]
    test = "-test" in argv
    argv = [a for a in argv if a != "-test"]
    path = None
    i = 0
    while i < len(argv):
        if argv[i] in ("-c", "-config") and i + 1 < len(argv):
            path = argv[i + 1]
            i += 2
        elif argv[i] == "-format" and i + 1 < len(argv):
            if argv[i + 1] != "json":
                print("only -format json is supported", file=sys.stderr)
                return 2
            i += 2
        else:
            print("usage: xray version | run [-test] [-format json] -c FILE", file=sys.stderr)
            return 2
    if path is None:
        print("usage: xray version | run [-test] [-format json] -c FILE", file=sys.stderr)
        return 2
    try:
        text = _read(path)
    except OSError as e:
        print("Failed to start: main: failed to read config: %s" % e)
        return 23
    if test:
        ok, code, what = _try_start(text)
        print("Configuration OK." if ok else what)
        return code
    return _run(text)


if __name__ == "__main__":
    sys.exit(main())
