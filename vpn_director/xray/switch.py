"""`xray use`: put one server's generated config in force without ever leaving a broken Xray.

  render -> `xray run -test` on a file whose name Xray's -confdir never loads -> keep the running
  file as <config>.prev -> rename the new file into place -> restart only the Xray process ->
  wait until it listens on the TPROXY and SOCKS ports -> one GET of the probe URL through the
  SOCKS inbound (success only on HTTP 204).

Any failure after the rename puts the previous bytes back, restarts Xray on them and reports
Xray's own last error line. The routing (chains, sets, ip rules) is not touched: during the
restart clients' proxied packets meet a closed port and are dropped, never sent direct.
"""

import os
import subprocess
import time

from .. import state
from . import XrayError, generate, service, socks, version

TEST_TIMEOUT = 60


def test_config(argv, path):
    """Xray's own verdict on a config file: None if it builds, else Xray's last output line."""
    try:
        r = subprocess.run(argv + ["run", "-test", "-format", "json", "-c", path], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=TEST_TIMEOUT)
    except subprocess.TimeoutExpired:
        return "`xray run -test` did not finish in %ds" % TEST_TIMEOUT
    except OSError as e:
        return "cannot run %s: %s" % (argv[0], e.strerror or e)
    if r.returncode == 0:
        return None
    lines = [ln for ln in r.stdout.decode(errors="replace").splitlines() if ln.strip()]
    failed = [ln for ln in lines if "Failed to start" in ln or "failed" in ln.lower()]
    return (failed or lines or ["exit %d" % r.returncode])[-1].strip()


def log_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def log_tail(path, since, keep=("Failed to start", "[Error]", "panic:")):
    """Xray's last error line written to its log after offset `since` ("" if none)."""
    try:
        with open(path, "rb") as f:
            f.seek(since)
            text = f.read(1 << 16).decode(errors="replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in text.splitlines() if any(k in ln for k in keep)]
    return lines[-1] if lines else ""


def wait_ready(cfg, backend, timeout=None, sleep=time.sleep):
    """Until Xray listens on the TPROXY and the SOCKS port; XrayError if it dies or times out."""
    side = cfg.xray.side
    ports = (cfg.xray.tproxy_port, side.socks_port)
    deadline = time.monotonic() + (timeout or side.start_timeout)
    while True:
        missing = [p for p in ports if not service.listening(p)]
        if not missing:
            return
        if backend.name == "managed" and not backend.running():
            raise XrayError("Xray exited right after the start")
        if time.monotonic() >= deadline:
            raise XrayError("Xray does not listen on port %s after %ds" % (", ".join(map(str, missing)),
                                                                           timeout or side.start_timeout))
        sleep(0.1)


def probe(cfg, timeout=10.0):
    """(latency ms) of the probe URL through the SOCKS inbound; XrayError unless HTTP 204."""
    try:
        status, ms = socks.http_get(cfg.xray.side.socks_port, cfg.xray.side.probe_url, timeout)
    except socks.SocksError as e:
        raise XrayError("the probe through the proxy failed: %s" % e)
    if status != 204:
        raise XrayError("the probe through the proxy got HTTP %d instead of 204" % status)
    return ms


def restart(cfg, backend, check=True):
    """Restart the Xray process and wait until it listens (and answers the probe if `check`)."""
    log = service.error_log(cfg, backend)
    since = log_size(log)
    try:
        backend.restart()
        wait_ready(cfg, backend)
        return probe(cfg) if check else None
    except XrayError as e:
        why = log_tail(log, since)
        raise XrayError("%s%s" % (e, "; Xray says: %s" % why if why else ""))


def switch(cfg, server, backend=None, xray_argv=None):
    """Put `server` in force (the caller holds the run lock); returns the probe's latency in ms."""
    backend = backend or service.pick(cfg)
    argv = xray_argv or service.binary_argv(cfg.xray.side)
    ver = version.detect(argv)
    if ver is not None:
        version.check(server, ver)
    path = service.config_path(cfg, backend)
    data = generate.render(cfg, server, service.error_log(cfg, backend))
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    new = path + ".new"  # not *.json: Entware's -confdir would merge it into the running config
    state.write_atomic(new, data, mode=0o600)
    refused = test_config(argv, new)
    if refused:
        _unlink(new)
        hint = version.reality_hint(ver) if ver and "reality" in server.get("label", "") else ""
        raise XrayError("Xray refused the config for %s: %s%s; nothing changed" % (_name(server), refused,
                                                                                   hint and " (%s)" % hint))
    prev = _read(path)
    if prev is not None:
        state.write_atomic(path + ".prev", prev, mode=0o600)
    backend.prepare_file(new)
    os.replace(new, path)
    try:
        return restart(cfg, backend)
    except XrayError as e:
        raise XrayError("switching to %s failed: %s. %s" % (_name(server), e, _put_back(cfg, backend, path, prev)))


def _put_back(cfg, backend, path, prev):
    """Restore the previous config file byte for byte and restart Xray on it; says how it went."""
    if prev is None:
        _unlink(path)
        try:
            backend.stop()
        except XrayError:
            pass
        return "There was no previous config: the new one is removed and Xray stopped"
    state.write_atomic(path, prev, mode=0o600)
    backend.prepare_file(path)
    try:
        restart(cfg, backend, check=False)
    except XrayError as e:
        return "The previous config is back, but Xray did not come up on it: %s" % e
    return "The previous config is back and Xray runs on it"


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _name(server):
    return "%r (%s)" % (server.get("name", server["id"]), server["id"])
