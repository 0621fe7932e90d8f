"""trace over the desired state: the document's traffic-flow examples, set lookups, the CLI."""

import ipaddress
import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from doc_examples import EXAMPLE_1, EXAMPLE_2, EXAMPLE_3
from netns import ROOT
from vpn_director import cli, trace


# The document's steps, written out by hand. Where the document abbreviates, the comment says
# what the chain really evaluates in between.
def test_example_1_us(tracer):
    v = tracer(EXAMPLE_1, "192.168.50.10", "8.8.8.8")
    assert v.steps == [
        "XRAY_TPROXY: src in XRAY_CLIENTS? Yes",
        "dst in XRAY_SERVERS? No",
        "dst private? No",
        'dst in "ru"? No',
        "TPROXY to Xray port 12345, mark 0x100",  # the document leaves out the port number
        "Packet delivered to Xray process",
    ]
    assert (v.route, v.table, v.mark) == ("xray", "100", 0x100)


def test_example_1_ru(tracer):
    v = tracer(EXAMPLE_1, "192.168.50.10", "77.88.8.8")
    assert v.steps == [
        "XRAY_TPROXY: src in XRAY_CLIENTS? Yes",
        "dst in XRAY_SERVERS? No",  # not in the document's list for this packet, but evaluated first
        "dst private? No",
        'dst in "ru"? Yes → RETURN',
        # the document's "TUN_DIR_*: no rules for this client": this config has no TUN_DIR at all
        "Goes to main table → WAN (direct)",
    ]
    assert (v.route, v.table, v.mark) == ("direct", "main", 0)


# The document's example 2 assumes Xray runs for someone else (its step 1 is the Xray check).
EXAMPLE_2_WITH_XRAY = dict(EXAMPLE_2, xray={"clients": ["192.168.50.10"], "exclude_sets": ["ru"]})


def test_example_2_us(tracer):
    v = tracer(EXAMPLE_2_WITH_XRAY, "192.168.1.5", "8.8.8.8")
    assert v.steps == [
        "XRAY_TPROXY: src in XRAY_CLIENTS? No → RETURN",
        'TUN_DIR: src=192.168.1.5 + dst in "ru"? No',
        "TUN_DIR: src=192.168.1.5? Yes → MARK 0x10000",
        "ip rule pref 16384: fwmark 0x10000 → table ovpnc3",
        "Goes through tunnel ovpnc3",  # the document: "Goes through OpenVPN tunnel"
    ]
    assert (v.route, v.table, v.mark, v.tunnel) == ("tunnel", "ovpnc3", 0x10000, "ovpnc3")


def test_example_2_ru(tracer):
    v = tracer(EXAMPLE_2_WITH_XRAY, "192.168.1.5", "77.88.8.8")
    assert v.steps == [
        "XRAY_TPROXY: src in XRAY_CLIENTS? No → RETURN",
        'TUN_DIR: src=192.168.1.5 + dst in "ru"? Yes → RETURN (no mark)',
        "Goes to main table → WAN (direct)",
    ]
    assert (v.route, v.table, v.mark) == ("direct", "main", 0)


def test_example_2_alone_has_no_xray_step(tracer):
    v = tracer(EXAMPLE_2, "192.168.1.5", "8.8.8.8")
    assert v.steps[0] == 'TUN_DIR: src=192.168.1.5 + dst in "ru"? No'
    assert v.route == "tunnel"


def test_example_3_xray_wins(tracer):
    v = tracer(EXAMPLE_3, "192.168.50.10", "8.8.8.8")
    assert v.steps == [
        "XRAY_TPROXY: src in XRAY_CLIENTS? Yes",
        "dst in XRAY_SERVERS? No",
        "dst private? No",
        'dst in "ru"? No',
        "TPROXY to Xray port 12345, mark 0x100",  # TUN_DIR is never evaluated
        "Packet delivered to Xray process",
    ]
    assert v.route == "xray"
    assert not any(s.startswith("TUN_DIR") for s in v.steps)


def test_private_destination_and_rules_in_json(tracer):
    v = tracer(EXAMPLE_3, "192.168.50.10", "10.1.2.3")
    assert "dst private (10.0.0.0/8)? Yes → RETURN" in v.steps
    assert (v.route, v.table) == ("tunnel", "wgc1")  # falls through to the tunnel
    d = v.as_dict()
    assert set(d) >= {"route", "table", "mark", "steps"}
    assert d["mark"] == "0x10000"
    assert d["rules"][d["steps"].index("dst private (10.0.0.0/8)? Yes → RETURN")] == "-d 10.0.0.0/8 -j RETURN"


def _naive(members, ip):
    best = None
    for m in members:
        net = ipaddress.IPv4Network(m.split()[0])
        if ip in net and (best is None or net.prefixlen > best[0].prefixlen):
            best = (net, m.endswith("nomatch"))
    return best is not None and not best[1]


nets = st.builds(lambda a, p: str(ipaddress.IPv4Network((a, p), strict=False)).replace("/32", ""),
                 st.integers(0, 2 ** 32 - 1), st.integers(1, 32))


@settings(max_examples=300, deadline=None)
@given(st.lists(nets, max_size=30), st.lists(nets, max_size=5), st.lists(st.integers(0, 2 ** 32 - 1), max_size=40))
def test_set_index_agrees_with_longest_prefix_match(members, holes, probes):
    entries = members + [h + " nomatch" for h in holes if h not in members]
    for ms in (members, entries):
        idx = trace.SetIndex(ms)  # the first lookups probe the texts, later ones use the index
        ips = probes + [int(ipaddress.IPv4Network(m.split()[0]).network_address) for m in ms]
        for ip in ips + ips + ips:
            assert (ip in idx) == _naive(ms, ipaddress.IPv4Address(ip))


@settings(max_examples=200, deadline=None)
@given(st.lists(nets, min_size=1, max_size=40), st.lists(st.integers(0, 2 ** 32 - 1), max_size=40))
def test_set_index_over_packed_country_sets(members, probes):
    from vpn_director import sets
    packed = sets.parse_prefixes(members, "test")
    cidrs = sets.members(packed)  # aggregated and packed, as country sets are loaded
    idx = trace.SetIndex(cidrs)
    ips = probes + [int(ipaddress.IPv4Network(m).network_address) for m in members]
    for ip in ips + ips:  # the first lookups probe, later ones use the interval index
        assert (ip in idx) == _naive(members, ipaddress.IPv4Address(ip))


def _config(tmp_path):
    (tmp_path / "ipsets").mkdir(exist_ok=True)
    (tmp_path / "ipsets" / "ru.zone").write_text("77.88.0.0/16\n")
    (tmp_path / "rt").write_text("111 wgc1\n")
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(dict(EXAMPLE_3, data_dir=str(tmp_path), advanced={"rt_tables": str(tmp_path / "rt")})))
    return str(cfg)


def _cli(tmp_path, *args, stdout=subprocess.PIPE):
    return subprocess.run([sys.executable, "-m", "vpn_director", "-c", _config(tmp_path), "trace"] + list(args),
                          stdout=stdout, stderr=subprocess.PIPE, universal_newlines=True,
                          env={"PYTHONPATH": ROOT, "PATH": "/usr/bin:/bin"})


def test_cli_human_and_json(tmp_path):
    p = _cli(tmp_path, "192.168.50.10", "77.88.8.8", "--proto", "udp", "--dport", "443")
    assert p.returncode == 0, p.stderr
    assert "192.168.50.10 → 77.88.8.8:443 udp (desired state)" in p.stdout
    assert '  4. dst in "ru"? Yes → RETURN' in p.stdout
    assert "route: direct  table: main  mark: 0x0" in p.stdout
    j = json.loads(_cli(tmp_path, "192.168.50.11", "8.8.8.8", "--json").stdout)
    assert (j["route"], j["table"], j["mark"]) == ("xray", "100", "0x100")


@pytest.mark.parametrize("port", ["99999", "65536", "-5", "0", "http"])
def test_cli_rejects_a_dport_outside_1_to_65535(tmp_path, port):
    p = _cli(tmp_path, "192.168.50.10", "77.88.8.8", "--dport=" + port)
    assert p.returncode == 2 and "argument --dport: %r is not a port (1..65535)" % port in p.stderr
    assert p.stdout == ""


def test_a_reader_that_goes_away_ends_trace_quietly(tmp_path):
    """`vpn-director trace ... | true`: no traceback, no "internal error"."""
    r, w = os.pipe()
    os.close(r)  # the reader has gone before the first line is written
    try:
        p = _cli(tmp_path, "192.168.50.10", "77.88.8.8", stdout=w)
    finally:
        os.close(w)
    assert (p.returncode, p.stderr) == (1, "")


def test_a_broken_pipe_that_is_not_stdout_is_still_reported(tmp_path, monkeypatch, capsys):
    def broken(args, cfg, out):
        raise BrokenPipeError(32, "Broken pipe")
    monkeypatch.setitem(cli.COMMANDS, "trace", broken)
    assert cli.main(["-c", _config(tmp_path), "trace", "192.168.50.10", "8.8.8.8"]) == 1
    assert "internal error: BrokenPipeError" in capsys.readouterr().err


def test_cli_rejects_bad_addresses(tmp_path):
    p = _cli(tmp_path, "192.168.50.300", "8.8.8.8")
    assert p.returncode == 2 and "SRC '192.168.50.300' is not an IPv4 address" in p.stderr
