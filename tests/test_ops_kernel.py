"""The editing commands on a real kernel, both iptables backends: the file after each command, the
kernel after it (status, and real TCP/UDP through the lab's virtual router), the history; a
client moved under traffic, parallel edits, a failing apply, bad input."""

import itertools
import json
import os
import subprocess
import sys
import time

import pytest

from test_faults_kernel import FAIL_WRITES, wrapper

pytestmark = pytest.mark.kernel
_n = itertools.count(1)

START = {
    "future_area": {"keep": True, "items": [1, 2]},
    "paused_clients": [],
    "xray": {"clients": ["192.168.50.10"], "servers": ["203.0.113.10"], "exclude_sets": ["ru"]},
    "tunnel_director": {"tunnels": {
        "wgc1": {"clients": ["192.168.50.20"], "exclude": ["ru"], "owner_note": "kept"},
        "ovpnc1": {"clients": []},
    }},
    "names": {"192.168.50.20": "Anna's phone"},
}
# Every client and tunnel the tests use gets a namespace: .30 and .40 join lists later, wgc2 is
# added as a tunnel later.
TOPOLOGY = {
    "xray": {"clients": ["192.168.50.10", "192.168.50.30", "192.168.50.40"], "servers": ["203.0.113.10"],
             "exclude_ips": ["198.51.100.7"]},
    "tunnel_director": {"tunnels": {"wgc1": {"clients": ["192.168.50.20"]}, "ovpnc1": {}, "wgc2": {}}},
}


@pytest.fixture
def lab(make_lab):
    return make_lab(extra_destinations=["46.4.4.4"])


def vpd(lab, *args, code=0):
    p = lab.vpd(*args)
    assert p.returncode == code, "%s: exit %d\n%s%s" % (args, p.returncode, p.stdout, p.stderr)
    return p


def path_of(lab, client, dst="8.8.8.8"):
    """Who answered a real TCP connection and a real UDP datagram from `client` to `dst`."""
    answers = {a.split()[0] for a in lab.probe(client, [{"dst": dst, "port": 7000, "proto": p} for p in ("tcp", "udp")])}
    assert len(answers) == 1, answers
    return answers.pop()


def file_raw(lab):
    with open(lab.config_path) as fh:
        return json.load(fh)


def start(lab, tmp_path):
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "de.zone").write_text("46.4.0.0/16\n")
    raw = dict(START, ipsets={"sources": ["file://%s/{cc}.zone" % zones]})
    lab.up(raw, topology=TOPOLOGY)
    os.chmod(lab.config_path, 0o640)
    vpd(lab, "apply")
    return open(lab.config_path, "rb").read()


# (command, {(client, destination): who answers}, check of the file)
STEPS = [
    ("client add 192.168.50.30 --via xray", {(".30", "8.8.8.8"): "xray"},
     lambda r: r["xray"]["clients"] == ["192.168.50.10", "192.168.50.30"]),
    ("client add 192.168.50.40 --via ovpnc1", {(".40", "8.8.8.8"): "ovpnc1"},
     lambda r: r["tunnel_director"]["tunnels"]["ovpnc1"]["clients"] == ["192.168.50.40"]),
    ("client move 192.168.50.30 --via wgc1", {(".30", "8.8.8.8"): "wgc1", (".10", "8.8.8.8"): "xray"},
     lambda r: r["xray"]["clients"] == ["192.168.50.10"]
     and r["tunnel_director"]["tunnels"]["wgc1"]["clients"] == ["192.168.50.20", "192.168.50.30"]),
    ("client pause 192.168.50.20", {(".20", "8.8.8.8"): "wan", (".30", "8.8.8.8"): "wgc1"},
     lambda r: r["paused_clients"] == ["192.168.50.20"]),
    ("client resume 192.168.50.20", {(".20", "8.8.8.8"): "wgc1"}, lambda r: r["paused_clients"] == []),
    ("client remove 192.168.50.40", {(".40", "8.8.8.8"): "wan"},
     lambda r: r["tunnel_director"]["tunnels"]["ovpnc1"]["clients"] == []),
    ("exclude add 198.51.100.7", {(".10", "198.51.100.7"): "wan", (".10", "8.8.8.8"): "xray"},
     lambda r: r["xray"]["exclude_ips"] == ["198.51.100.7"]),
    ("exclude remove ru", {(".10", "77.88.8.8"): "xray"}, lambda r: r["xray"]["exclude_sets"] == []),
    ("exclude remove ru --for wgc1", {(".20", "77.88.8.8"): "wgc1"},
     lambda r: r["tunnel_director"]["tunnels"]["wgc1"]["exclude"] == []),
    ("exclude add de --for wgc1", {(".20", "46.4.4.4"): "wan", (".20", "8.8.8.8"): "wgc1"},  # list fetched first
     lambda r: r["tunnel_director"]["tunnels"]["wgc1"]["exclude"] == ["de"]),
    ("tunnel add wgc2 --exclude ru", {}, lambda r: list(r["tunnel_director"]["tunnels"]) == ["wgc1", "ovpnc1", "wgc2"]
     and r["tunnel_director"]["tunnels"]["wgc2"] == {"clients": [], "exclude": ["ru"]}),
    ("client add 192.168.50.40 --via wgc2", {(".40", "8.8.8.8"): "wgc2", (".40", "77.88.8.8"): "wan"},
     lambda r: r["tunnel_director"]["tunnels"]["wgc2"]["clients"] == ["192.168.50.40"]),
    ("tunnel order wgc2 wgc1", {(".40", "8.8.8.8"): "wgc2", (".20", "8.8.8.8"): "wgc1"},
     lambda r: list(r["tunnel_director"]["tunnels"]) == ["wgc2", "wgc1", "ovpnc1"]),
    ("tunnel remove ovpnc1", {(".20", "8.8.8.8"): "wgc1"},
     lambda r: list(r["tunnel_director"]["tunnels"]) == ["wgc2", "wgc1"]),
]


def test_every_command_file_kernel_packets_and_history(lab, tmp_path):
    found = start(lab, tmp_path)
    for argv, probes, check in STEPS:
        out = vpd(lab, *argv.split()).stdout
        raw = file_raw(lab)
        assert check(raw), (argv, raw)
        assert list(raw) == list(START) + ["ipsets", "data_dir", "advanced"], argv  # order and unknown keys kept
        assert raw["future_area"] == START["future_area"]
        assert raw["tunnel_director"]["tunnels"]["wgc1"]["owner_note"] == "kept"
        assert os.stat(lab.config_path).st_mode & 0o777 == 0o640
        assert vpd(lab, "status").returncode == 0, argv  # the kernel matches the new file
        for (client, dst), who in probes.items():
            assert path_of(lab, "192.168.50" + client, dst) == who, (argv, client, dst)
        assert "applied " in out, out
    hist = json.loads(vpd(lab, "config", "history", "--json").stdout)
    summaries = [v["summary"] for v in hist["versions"]]
    assert summaries[0] == "as found before the first edit" and len(summaries) == len(STEPS) + 1
    assert summaries[3] == "client 192.168.50.30: xray → wgc1"
    assert summaries[-2:] == ["tunnel order: wgc2 → wgc1 → ovpnc1", "tunnel ovpnc1: removed"]
    assert hist["current"] == hist["versions"][-1]["version"]
    diff = vpd(lab, "config", "diff", str(hist["versions"][3]["version"])).stdout
    removed = [l[1:].strip() for l in diff.splitlines() if l.startswith("-") and not l.startswith("---")]
    assert '"clients": ["192.168.50.10", "192.168.50.30"],' in removed
    listing = json.loads(vpd(lab, "client", "list", "--json").stdout)["clients"]
    assert {r["address"]: (r["via"], r["name"]) for r in listing} == {
        "192.168.50.10": ("xray", ""), "192.168.50.40": ("wgc2", ""), "192.168.50.20": ("wgc1", "Anna's phone"),
        "192.168.50.30": ("wgc1", "")}
    status = vpd(lab, "status").stdout
    assert [l for l in status.splitlines() if "-s 192.168.50.20/32" in l and "-j MARK" in l][0].endswith(
        "(Anna's phone)")

    vpd(lab, "config", "rollback", "1")
    assert open(lab.config_path, "rb").read() == found
    assert vpd(lab, "status").returncode == 0
    assert [path_of(lab, c) for c in ("192.168.50.10", "192.168.50.20", "192.168.50.30", "192.168.50.40")] == [
        "xray", "wgc1", "wan", "wan"]
    assert json.loads(vpd(lab, "config", "history", "--json").stdout)["versions"][-1]["summary"] == \
        "rollback to version 1 (as found before the first edit)"


WATCH = [{"dst": "8.8.8.8", "port": 7000, "proto": "tcp"}, {"dst": "8.8.8.8", "port": 7000, "proto": "udp"}]
ROUND = [("wgc1", "wgc1"), ("direct", "wan"), ("xray", "xray")]  # --via, who answers


def test_client_move_under_traffic_never_takes_a_third_path(lab, tmp_path):
    start(lab, tmp_path)
    vpd(lab, "client", "add", "192.168.50.30", "--via", "xray")
    stop = str(tmp_path / "stop")
    logs = {}
    procs = []
    for client in ("192.168.50.30", "192.168.50.10"):  # the moving client, and one that stays on Xray
        logs[client] = str(tmp_path / ("watch-%s.jsonl" % client))
        procs.append(lab.watch(client, WATCH, logs[client], stop))
    paths, windows = ["xray"], []
    try:
        time.sleep(0.3)
        for via, who in ROUND * 3:
            t0 = time.time()
            vpd(lab, "client", "move", "192.168.50.30", "--via", via)
            windows.append((t0, time.time()))
            paths.append(who)
            time.sleep(0.25)
    finally:
        open(stop, "w").close()
        for p in procs:
            p.wait(timeout=30)

    wrong, unanswered, during = [], [], 0
    for line in open(logs["192.168.50.30"]):
        rec = json.loads(line)
        who = rec["answer"].split()[0]
        over = [i for i, (s, e) in enumerate(windows) if s <= rec["t1"] and e >= rec["t"]]
        if over:
            during += 1
            allowed = set(paths[over[0]:over[-1] + 2])  # the path before the move and the one after it
        else:
            allowed = {paths[sum(1 for s, e in windows if e <= rec["t"])]}
        if who in ("timeout", "error"):
            unanswered.append((rec, over))
        elif who not in allowed:
            wrong.append((rec, allowed))
    steady = [json.loads(l)["answer"].split()[0] for l in open(logs["192.168.50.10"])]
    print("\nmove under traffic: %d moves, %d probes of the moving client (%d during a move), %d unanswered, "
          "%d on a third path" % (len(windows), sum(1 for _ in open(logs["192.168.50.30"])), during,
                                  len(unanswered), len(wrong)))
    assert wrong == []
    assert during >= 20  # the probes really overlapped the moves
    assert all(over for _, over in unanswered) and len(unanswered) <= during // 10
    assert set(steady) == {"xray"}


def test_twenty_parallel_edits_all_land(router):
    cfg = router.config({"xray": {"clients": ["192.168.50.10"], "exclude_sets": []},
                         "tunnel_director": {"tunnels": {"wgc1": {"clients": ["192.168.50.20"]}}}})
    router.vpd("apply", config=cfg, check=0)
    argv = [sys.executable, "-m", "vpn_director", "-c", cfg, "client", "add"]
    procs = [subprocess.Popen(["ip", "netns", "exec", router.ns.name] + argv + [
        "192.168.60.%d" % i, "--via", "xray" if i % 2 else "wgc1"], env=router.env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True) for i in range(1, 21)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert [code for code, _ in results] == [0] * 20, results
    raw = json.loads(open(cfg).read())
    odd, even = ({"192.168.60.%d" % i for i in range(1, 21) if i % 2 == k} for k in (1, 0))
    assert set(raw["xray"]["clients"]) == odd | {"192.168.50.10"} and len(raw["xray"]["clients"]) == 11
    assert set(raw["tunnel_director"]["tunnels"]["wgc1"]["clients"]) == even | {"192.168.50.20"}
    router.vpd("status", config=cfg, check=0)
    members = {l.split()[2] for l in router.ipset_save().splitlines() if l.startswith("add XRAY_CLIENTS")}
    assert members == odd | {"192.168.50.10"}
    marked = {r.split()[1].replace("/32", "") for r in router.chain("TUN_DIR") if "-j MARK" in r}
    assert marked == even | {"192.168.50.20"}
    hist = json.loads(router.vpd("config", "history", "--json", config=cfg, check=0).stdout)
    assert len(hist["versions"]) == 20 and hist["current"] == hist["versions"][-1]["version"]


FAILS = {
    "chain commit": ("iptables-{b}-restore", FAIL_WRITES % "iptables-restore: simulated failure",
                     "client add 192.168.50.30 --via wgc1"),
    # the move out of Xray is applied in two steps; the second (the set) fails after the first worked
    "set load after the bridge step": ("ipset", 'if [ "$1" = "restore" ]; then cat >/dev/null; '
                                                'echo "simulated failure" >&2; exit 1; fi\nexec "$REAL" "$@"',
                                       "client move 192.168.50.10 --via wgc1"),
}


@pytest.mark.parametrize("case", sorted(FAILS))
def test_failed_apply_puts_file_and_kernel_back(router, tmp_path, case):
    tool, script, command = FAILS[case]
    cfg = router.config({"xray": {"clients": ["192.168.50.10"], "exclude_sets": ["ru"]},
                         "tunnel_director": {"tunnels": {"wgc1": {"clients": ["192.168.50.20"], "exclude": ["ru"]}}}})
    os.chmod(cfg, 0o640)
    router.vpd("apply", config=cfg, check=0)
    router.vpd("client", "add", "192.168.50.11", "--via", "xray", config=cfg, check=0)  # history has versions
    before, kernel = open(cfg, "rb").read(), router.snapshot()
    hist = router.vpd("config", "history", "--json", config=cfg, check=0).stdout
    bindir = tmp_path / "bin"
    bindir.mkdir()
    env = wrapper(bindir, tool.format(b=router.backend), script)
    err = router.vpd(*command.split(), config=cfg, check=1, env=env).stderr
    assert len(err.strip().splitlines()) == 1 and "simulated failure" in err
    assert "The config file is back as it was, and the previous routing is in force" in err
    assert open(cfg, "rb").read() == before and os.stat(cfg).st_mode & 0o777 == 0o640
    assert router.snapshot() == kernel
    assert router.vpd("config", "history", "--json", config=cfg, check=0).stdout == hist
    router.vpd("status", config=cfg, check=0)


BAD = [
    ("client add 192.168.50.300 --via xray", "not an IPv4 address or CIDR"),
    ("client add 192.168.50.30 --via wgc9", "unknown tunnel 'wgc9'"),
    ("client move 192.168.50.10 --via nowhere", "unknown tunnel 'nowhere'"),
    ("exclude add rus", "'rus' is not a two-letter country code"),
    ("exclude add de1 --for wgc1", "'de1' is not a two-letter country code"),
    ("tunnel add wgc1 --exclude russia", "'russia' is not a two-letter country code"),
    ("client add kitchen-tv --via xray", "no device of that name or MAC"),
    ("client pause 10.9.9.9", "is in no client list"),
    ("tunnel order wgc1 wgc7", "unknown tunnel 'wgc7'"),
]


def test_bad_input_exit_2_file_and_kernel_untouched(router, tmp_path):
    leases = tmp_path / "leases"
    leases.write_text("0 aa:bb:cc:dd:ee:01 192.168.50.23 annas-phone *\n")
    cfg = router.config({"xray": {"clients": ["192.168.50.10"], "exclude_sets": ["ru"]},
                         "tunnel_director": {"tunnels": {"wgc1": {"clients": ["192.168.50.20"]}}},
                         "advanced": {"leases_file": str(leases)}})
    router.vpd("apply", config=cfg, check=0)
    before, kernel = open(cfg, "rb").read(), router.snapshot()
    for command, message in BAD:
        err = router.vpd(*command.split(), config=cfg, check=2).stderr
        assert err.startswith("vpn-director: error: ") and message in err and len(err.strip().splitlines()) == 1, err
    err = router.vpd("tunnel", "add", "100", config=cfg, check=2).stderr  # the whole result is validated
    assert "tunnel_director.tunnels.100: table 100 is the Xray route table" in err
    assert open(cfg, "rb").read() == before and router.snapshot() == kernel
    assert not (router.data / "history").exists()
    out = router.vpd("client", "add", "annas-phone", "--via", "wgc1", config=cfg, check=0).stdout
    assert "annas-phone is 192.168.50.23 by its DHCP lease" in out and "route now: wgc1" in out
    assert "-s 192.168.50.23/32" in " ".join(router.chain("TUN_DIR"))


def test_lab_table_shows_device_names(backend):
    from vpn_director import lab as labmod
    raw = {"xray": {"clients": ["192.168.50.10"], "exclude_sets": ["ru"]},
           "tunnel_director": {"tunnels": {"wgc1": {"clients": ["192.168.50.20"]}}},
           "names": {"192.168.50.10": "Anna's phone"}}
    lines = []
    assert labmod.run(raw, prefix="vo%d_%d" % (os.getpid() % 100000, next(_n)), backend=backend, out=lines.append)
    rows = [l for l in "\n".join(lines).splitlines() if l.startswith("192.168.50.10")]
    assert rows and all(l.startswith("192.168.50.10 (Anna's phone)") for l in rows)


def test_an_apply_that_waited_for_the_lock_applies_the_file_as_it_is_then(router):
    """An edit made while `apply` (a hook, the watchdog) waited for the lock is not undone by it."""
    import fcntl
    cfg = router.config({"xray": {"clients": ["192.168.50.10"], "exclude_sets": []}})
    router.vpd("apply", config=cfg, check=0)
    router.state_dir.mkdir(exist_ok=True)
    fd = os.open(str(router.state_dir / "lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        waiting = subprocess.Popen(["ip", "netns", "exec", router.ns.name, sys.executable, "-m", "vpn_director",
                                    "-c", cfg, "apply"], env=router.env(), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, universal_newlines=True)
        time.sleep(1.0)  # it has read the config and waits for the lock
        raw = json.loads(open(cfg).read())
        raw["xray"]["clients"].append("192.168.50.11")  # the edit that held the lock meanwhile
        open(cfg, "w").write(json.dumps(raw))
    finally:
        os.close(fd)
    assert waiting.wait(timeout=60) == 0, waiting.stderr.read()
    router.vpd("status", config=cfg, check=0)
    assert "add XRAY_CLIENTS 192.168.50.11" in router.ipset_save()
