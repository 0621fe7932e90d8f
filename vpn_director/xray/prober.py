"""Real-delay tests of servers through a throw-away Xray of our own (the prober), never the live one.

The prober (probeproc) runs a hard link of the xray binary under another name, so Entware's
`pidof xray`/`killall xray` never see it, and is stopped through its own process group: the live
Xray is never signalled. Its config has one SOCKS inbound on 127.0.0.1 per candidate (in-N,
consecutive free ports) routed to that candidate's outbound (out-N). The config is `-test`ed
first, and a refused one is bisected so only the bad candidates are reported. Every candidate
gets an HTTP GET of the probe URL through its inbound, in parallel (bounded); only HTTP 204
passes. Why the others failed comes from the client side (timeout, status) and from Xray's log
at loglevel info (probelog), where each session names its out-N.

The watch daemon calls test(cfg, servers, urls, timeout_s, concurrency); `xray test` goes through
actions.test, which records the results in the store.
"""

import os
from concurrent.futures import ThreadPoolExecutor

from .. import state
from . import XrayError, generate, probelog, socks, switch, version
from .probeproc import PORTS, Prober, config, exited, probe_dir, prober_binary, remove, write_config

CONCURRENCY = 8
LOCK_WAIT = 120  # seconds to wait for another prober run (the watch daemon's, a user's)


def refused(argv, outbounds, directory):
    """{N: Xray's refusal} for the candidates whose outbound Xray refuses. A refusal naming out-N
    blames N at once (real Xray: "failed to build outbound config with tag out-N"); otherwise the
    failing group is split in halves (the second half of a failing group whose first half passes
    fails for sure, so it is split without a test) until single candidates remain."""
    path = os.path.join(directory, "test.json")
    bad = {}

    def check(group, line=None):
        """Whether `group` fails, blaming its bad candidates; `line`: it is known to fail so."""
        if line is None:
            # real ports (-test binds nothing; Xray refuses port 0): the range's first ones
            write_config(path, config({n: outbounds[n] for n in group}, {n: PORTS[0] + n for n in group},
                                      os.path.join(directory, "probe.log")))
            line = switch.test_config(argv, path)
            if line is None:
                return False
        named = probelog.blamed(line)
        if named in group:
            bad[named] = line
            rest = [n for n in group if n != named]
            if rest:
                check(rest)
        elif len(group) == 1:
            bad[group[0]] = line
        else:
            half = len(group) // 2
            check(group[half:], None if check(group[:half]) else line)
        return True
    try:
        if outbounds:
            check(sorted(outbounds))
    finally:
        remove(path)
    return bad


def test(cfg, servers, urls=None, timeout_s=10.0, concurrency=CONCURRENCY):
    """Test `servers` (store dicts) through the prober: {id: {"ok", "latency_ms", "reason"}}.
    A server passes when a probe URL answers HTTP 204 through it (the next URL is tried only
    after a failure); reason is "" then, else why the first URL failed. XrayError when the
    prober itself cannot run (no binary, no free ports, it does not start): that says nothing
    about the servers."""
    urls = list(urls or [cfg.xray.side.probe_url])
    for url in urls:
        if not url.startswith("http://"):
            raise XrayError("probe URL %s: only plain http:// URLs can be probed" % url)
    uniq = list({s["id"]: s for s in servers}.values())
    if not uniq:
        return {}
    results, outbounds = {}, {}
    d = probe_dir(cfg)
    state.ensure_dir(cfg.state_dir)
    with state.locked(d, LOCK_WAIT):
        binary = prober_binary(cfg)
        ver = version.detect([binary])
        for n, s in enumerate(uniq):
            try:
                version.check(s, ver)
                outbounds[n] = generate.proxy_outbound(s)
            except XrayError as e:
                results[n] = _fail("unusable: %s" % e)
        for n, line in refused([binary], outbounds, d).items():
            results[n] = _fail("refused by Xray: %s" % line)
            del outbounds[n]
        if outbounds:
            with Prober(cfg, outbounds, binary) as p:
                tried = _probe_all(p, urls, timeout_s, concurrency)
                if exited(p.proc):  # its verdicts would say nothing about the servers
                    raise XrayError("the prober exited during the test: %s" % (p.why() or "no error logged"))
                results.update(probelog.verdicts(tried, p.log))
    return {s["id"]: results[n] for n, s in enumerate(uniq)}


def _probe_all(p, urls, timeout_s, concurrency):
    """{N: (status or None, ms, SocksError or None)} of each candidate's first passing URL, or
    of its first URL when none passes."""
    def one(n):
        first = None
        for url in urls:
            try:
                status, ms = p.get(n, url, timeout_s)
                got = (status, ms, None)
            except socks.SocksError as e:
                got = (None, None, e)
            if got[0] == 204:
                return n, got
            first = first or got
        return n, first
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(p.outbounds)))) as pool:
        return dict(pool.map(one, sorted(p.outbounds)))


def _fail(reason):
    return {"ok": False, "latency_ms": None, "reason": reason}
