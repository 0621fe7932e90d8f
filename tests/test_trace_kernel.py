"""trace against the kernel: random configs and packets in the lab, trace's verdict vs who really answered."""

import json
import os
import random

import pytest


pytestmark = pytest.mark.kernel

CLIENTS = ["192.168.50.%d" % i for i in (10, 11, 17, 20, 21, 30, 33, 40, 45)]
TUNNELS = ["wgc1", "wgc2", "ovpnc1", "ovpnc2"]
DESTS = ["8.8.8.8", "77.88.8.8", "91.198.1.1", "10.10.10.10", "203.0.113.10", "1.1.1.1"]
POOL = CLIENTS + ["192.168.50.16/29", "192.168.50.32/28", "192.168.50.0/27", "192.168.50.40/30"]
TOPOLOGY = {"xray": {"clients": CLIENTS, "servers": ["203.0.113.10"], "exclude_sets": ["ru"]},
            "tunnel_director": {"tunnels": {t: {"clients": []} for t in TUNNELS}}}
SEED = int(os.environ.get("VPD_TRACE_SEED", "20261126"))
CONFIGS = int(os.environ.get("VPD_TRACE_CONFIGS", "4"))


def random_config(rng):
    """1-4 tunnels in random order with overlapping clients, Xray on or off, random exclusions."""
    tunnels = rng.sample(TUNNELS, rng.randint(1, 4))
    cfg = {"tunnel_director": {"tunnels": {
        t: {"clients": rng.sample(POOL, rng.randint(1, 4)), "exclude": rng.sample(["ru", "ua"], rng.randint(0, 2))}
        for t in tunnels}},
        "xray": {"clients": rng.sample(POOL, rng.randint(1, 3)) if rng.random() < 0.7 else [],
                 "servers": ["203.0.113.10"], "exclude_sets": rng.sample(["ru", "ua"], rng.randint(0, 2))}}
    if rng.random() < 0.3:
        cfg["paused_clients"] = [rng.choice(CLIENTS)]
    return cfg


def trace_json(lab, src, dst, proto, *extra):
    p = lab.vpd("trace", src, dst, "--proto", proto, "--json", *extra)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.fixture
def lab(make_lab):
    lab = make_lab(extra_destinations=DESTS)
    lab.up(TOPOLOGY)
    return lab


def test_trace_matches_the_kernel_on_random_configs(lab, backend):
    rng = random.Random("%s-%s" % (SEED, backend))
    cases, mismatches = 0, []
    targets = [{"dst": d, "port": 7000, "proto": p} for d in DESTS for p in ("tcp", "udp")]
    for n in range(CONFIGS):
        raw = random_config(rng)
        lab.write_config(raw)
        applied = lab.apply()
        assert applied.returncode == 0, applied.stderr
        expect = lab.expectation()  # trace over the desired state, in process
        for client in CLIENTS:
            for t, answer in zip(targets, lab.probe(client, targets)):
                verdict, name = expect(client, t["dst"], t["proto"])
                cases += 1
                who = answer.split()[0]
                table_ok = verdict.route != "tunnel" or verdict.table == who
                if who != name or not table_ok:
                    mismatches.append((n, client, t["dst"], t["proto"], verdict.route, verdict.table, answer))
    print("\ntrace vs kernel (%s): %d cases over %d random configs, %d mismatches (seed %s)"
          % (backend, cases, CONFIGS, len(mismatches), SEED))
    assert cases >= 300
    assert not mismatches, "VPD_TRACE_SEED=%s reproduces: %s" % (SEED, mismatches[:10])


def test_trace_cli_and_live_agree_with_probes(lab):
    raw = {"xray": {"clients": ["192.168.50.10"], "servers": ["203.0.113.10"], "exclude_sets": ["ru"]},
           "tunnel_director": {"tunnels": {"wgc2": {"clients": ["192.168.50.16/29"], "exclude": ["ua"]},
                                           "wgc1": {"clients": ["192.168.50.20"]}}}}
    assert lab.apply(raw).returncode == 0
    for src, dst, who in (("192.168.50.10", "8.8.8.8", "xray"), ("192.168.50.10", "77.88.8.8", "wan"),
                          ("192.168.50.20", "8.8.8.8", "wgc2"), ("192.168.50.20", "91.198.1.1", "wan"),
                          ("192.168.50.30", "8.8.8.8", "wan")):
        desired = trace_json(lab, src, dst, "udp")
        live = trace_json(lab, src, dst, "udp", "--live")
        assert live["differs"] == ""
        assert (live["route"], live["table"], live["mark"]) == (desired["route"], desired["table"], desired["mark"])
        seen = lab.probe(src, [{"dst": dst, "port": 7000, "proto": "udp"}])[0].split()[0]
        assert seen == who == {"xray": "xray", "direct": "wan"}.get(desired["route"], desired["table"])
        if live["route"] == "tunnel":  # the kernel's own lookup with that mark leaves by the tunnel
            assert "dev %s" % live["table"] in live["kernel"]


def test_trace_live_names_where_kernel_and_config_disagree(lab):
    raw = {"xray": {"clients": [], "exclude_sets": []},
           "tunnel_director": {"tunnels": {"wgc1": {"clients": ["192.168.50.20"], "exclude": ["ru"]}}}}
    assert lab.apply(raw).returncode == 0
    ipt = "iptables-%s" % lab.backend
    lab._run([ipt, "-t", "mangle", "-D", "TUN_DIR", "-s", "192.168.50.20/32", "-m", "set", "--match-set", "ru",
              "dst", "-j", "RETURN"], ns=lab.router)  # the ru exclusion is gone
    live = trace_json(lab, "192.168.50.20", "77.88.8.8", "tcp", "--live")
    assert live["route"] == "tunnel" and live["desired"]["route"] == "direct"
    assert live["differs"] == ('differs at step 1: desired \'TUN_DIR: src=192.168.50.20 + dst in "ru"? Yes → '
                               'RETURN (no mark)\', live \'TUN_DIR: src=192.168.50.20? Yes → MARK 0x10000\'')
    assert lab.probe("192.168.50.20", [{"dst": "77.88.8.8", "port": 7000, "proto": "tcp"}])[0].startswith("wgc1")
    p = lab.vpd("trace", "192.168.50.20", "77.88.8.8", "--live")
    assert "desired state: differs at step 1" in p.stdout


def test_check_live_reports_a_foreign_rule_on_our_mark(lab):
    raw = {"tunnel_director": {"tunnels": {"wgc1": {"clients": ["192.168.50.20"]}}}, "xray": {"clients": []}}
    lab.write_config(raw)
    assert lab.vpd("check", "--live").returncode == 0
    lab._run(["ip", "rule", "add", "pref", "150", "fwmark", "0x10000/0x10000", "lookup", "120"], ns=lab.router)
    p = lab.vpd("check", "--live")
    assert p.returncode == 2
    assert "matches mark 0x10000 before ours: tunnel wgc1's traffic would go to table 120" in p.stderr
