"""What vpn-director owns survives config changes, and nothing else is ever taken for its own.

Ownership is by exact selector, recorded in state_dir before anything is created; the
directory and the record are checked before they are trusted.
"""

import fcntl
import json
import os
import shutil

import pytest

from test_apply_kernel import FULL, rules_n
from test_lab_kernel import TOPOLOGY, paths

pytestmark = pytest.mark.kernel
BASE = ["0:\tfrom all lookup 255", "32766:\tfrom all lookup 254", "32767:\tfrom all lookup 253"]


# --- ip rules and routes across config changes ------------------------------------------------

def test_reorder_with_new_pref_base_leaves_no_old_rule(lab):
    """The issue's repro: reversed tunnels and a new pref_base. The old rules at 16384/16385
    would route ovpnc1's client through wgc1 if they stayed."""
    raw = {"xray": {"clients": []}, "tunnel_director": {"tunnels": {
        "wgc1": {"clients": ["192.168.50.20"]}, "ovpnc1": {"clients": ["192.168.50.42"]}}}}
    lab.up(raw, topology=TOPOLOGY)
    assert lab.apply().returncode == 0
    assert paths(lab, "192.168.50.20")[0] == "wgc1" and paths(lab, "192.168.50.42")[0] == "ovpnc1"
    moved = {"xray": {"clients": []}, "advanced": {"tunnel_director": {"pref_base": 20000}},
             "tunnel_director": {"tunnels": dict(reversed(list(raw["tunnel_director"]["tunnels"].items())))}}
    p = lab.apply(moved)
    assert p.returncode == 0, p.stderr
    assert paths(lab, "192.168.50.20")[0] == "wgc1"
    assert paths(lab, "192.168.50.42")[0] == "ovpnc1"
    rules = lab._run(["ip", "-N", "rule", "show"], ns=lab.router).stdout.splitlines()
    assert [r for r in rules if r.split(":")[0] in ("16384", "16385")] == []
    got = lab._run(["ip", "route", "get", "8.8.8.8", "from", "192.168.50.42", "iif", "br0", "mark", "0x10000"],
                   ns=lab.router).stdout
    assert "dev ovpnc1" in got, got  # slot 1 is ovpnc1's now
    assert lab.vpd("status").returncode == 0
    assert lab.vpd("stop").returncode == 0
    assert lab._run(["ip", "-N", "rule", "show"], ns=lab.router).stdout.splitlines() == BASE


def test_changed_xray_rule_route_and_mask_leave_nothing_behind(lab):
    raw = {"xray": {"clients": ["192.168.50.10"], "servers": ["203.0.113.10"], "exclude_sets": []}}
    lab.up(raw, topology=TOPOLOGY)
    assert lab.apply().returncode == 0
    assert paths(lab, "192.168.50.10")[0] == "xray"
    raw["advanced"] = {"xray": {"rule_pref": 300, "route_table": 101, "fwmark": "0x200", "fwmark_mask": "0x200"}}
    p = lab.apply(raw)
    assert p.returncode == 0, p.stderr
    assert paths(lab, "192.168.50.10")[0] == "xray"
    rules = lab._run(["ip", "-N", "rule", "show"], ns=lab.router).stdout.splitlines()
    assert rules == BASE[:1] + ["300:\tfrom all fwmark 0x200/0x200 lookup 101"] + BASE[1:]
    assert lab._run(["ip", "route", "show", "table", "100"], ns=lab.router, check=False).stdout.strip() == ""
    assert lab.vpd("status").returncode == 0
    assert lab.vpd("stop").returncode == 0
    assert lab._run(["ip", "-N", "rule", "show"], ns=lab.router).stdout.splitlines() == BASE
    assert lab._run(["ip", "route", "show", "table", "101"], ns=lab.router, check=False).stdout.strip() == ""


def test_first_apply_keeps_foreign_rules_in_our_range(router):
    foreign = ["pref 200 from 10.0.0.0/8 fwmark 0x100/0x100 lookup 150",
               "pref 16500 iif wgc1 fwmark 0x770000/0xff0000 lookup 160"]
    for r in foreign:
        router.ns.sh("ip rule add " + r)
    cfg = router.config(FULL)
    router.vpd("apply", config=cfg, check=0)
    router.vpd("stop", config=cfg, check=0)
    assert rules_n(router) == BASE[:1] + ["200:\tfrom 10.0.0.0/8 fwmark 0x100/0x100 lookup 150",
                                          "16500:\tfrom all fwmark 0x770000/0xff0000 iif wgc1 [detached] lookup 160"
                                          ] + BASE[1:]
    out = router.vpd("check", "--live", config=cfg, check=0)
    assert "ip rule 200 (from 10.0.0.0/8" in out.stderr and "ip rule 16500 (from all fwmark 0x770000" in out.stderr


# --- state_dir and the record ------------------------------------------------------------------

def _foreign_objects(router):
    router.ns.sh("ipset create foreignset hash:ip && iptables-%s -t mangle -N FOREIGN && "
                 "iptables-%s -t mangle -A FOREIGN -p tcp -j ACCEPT" % (router.backend, router.backend))
    return {"sets": {"foreignset": "xray"}, "chains": {"FOREIGN": "xray"}}


def _has_foreign(router):
    return "create foreignset hash:ip" in router.ipset_save() and ":FOREIGN" in router.iptables_save()


def test_state_dir_created_by_another_user_is_refused(router):
    """An unprivileged user pre-creates the state directory with a record naming their targets."""
    record = _foreign_objects(router)
    d = router.state_dir
    d.mkdir()
    (d / "state.json").write_text(json.dumps(record))
    os.chown(str(d), 65534, 65534)
    os.chmod(str(d), 0o777)
    cfg = router.config(FULL)
    err = router.vpd("apply", config=cfg, check=1).stderr
    assert "state_dir %s is owned by uid 65534 with mode 777" % d in err and len(err.strip().splitlines()) == 1
    router.vpd("stop", config=cfg, check=1)
    assert _has_foreign(router)
    # root's own directory, but a record naming objects that do not look like ours
    os.chown(str(d), 0, 0)
    os.chmod(str(d), 0o700)
    out = router.vpd("apply", config=cfg, check=0)
    router.vpd("stop", config=cfg, check=0)
    assert _has_foreign(router)
    assert "chain FOREIGN is in the record but holds rules vpn-director does not write" in out.stderr


def test_state_dir_writable_by_others_is_refused(router):
    router.state_dir.mkdir(mode=0o700)
    os.chmod(str(router.state_dir), 0o733)
    err = router.vpd("apply", config=router.config(FULL), check=1).stderr
    assert "not be writable by others" in err


@pytest.mark.parametrize("text", ["{not json", "[]", '{"sets": ["XRAY_CLIENTS"]}', '{"rules": [[1, 2]]}'])
def test_malformed_record_is_named_with_what_to_do(router, text):
    router.state_dir.mkdir(mode=0o700)
    (router.state_dir / "state.json").write_text(text)
    err = router.vpd("apply", config=router.config(FULL), check=1).stderr
    assert str(router.state_dir / "state.json") in err and "remove it" in err
    assert "internal error" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_state_dir_that_cannot_be_a_directory_is_one_line(router, where):
    blocker = router.tmp / "blocker"
    blocker.write_text("x")
    path = blocker if where == "a file" else blocker / "state"
    cfg = router.config({**FULL, "advanced": {"state_dir": str(path)}})
    err = router.vpd("apply", config=cfg, check=1).stderr
    assert "state_dir %s" % path in err and "internal error" not in err and len(err.strip().splitlines()) == 1


def test_lock_wait_names_the_holder(router):
    cfg = router.config({**FULL, "advanced": {"lock_timeout": 1}})
    router.state_dir.mkdir(mode=0o700)
    fd = os.open(str(router.state_dir / "lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"4242\n")
        p = router.vpd("apply", config=cfg, check=1)
        assert "waiting up to 1s for another vpn-director run (PID 4242)" in p.stdout
        assert "another vpn-director run (PID 4242) held" in p.stderr
    finally:
        os.close(fd)
    router.vpd("apply", config=cfg, check=0)
    assert (router.state_dir / "lock").read_text().strip().isdigit()


def test_stop_dry_run_prints_the_batches_and_touches_nothing(router):
    cfg = router.config(FULL)
    router.vpd("apply", config=cfg, check=0)
    before = router.snapshot()
    out = router.vpd("stop", "--dry-run", config=cfg, check=0).stdout
    assert "== update mangle chains and jumps (iptables)" in out and "-D PREROUTING -i br0 -j XRAY_TPROXY" in out
    assert "rule del pref 16384 from all fwmark 0x10000/0xff0000 lookup 111" in out
    assert router.snapshot() == before


# --- backends ----------------------------------------------------------------------------------

def test_mixed_backends_are_refused(router):
    other = "legacy" if router.backend == "nft" else "nft"
    cfg = router.config(FULL)
    router.vpd("apply", config=cfg, check=0)
    before = router.snapshot()
    for cmd in ("apply", "stop"):
        err = router.vpd(cmd, config=cfg, check=1, env={"VPD_IPTABLES": other}).stderr
        assert "live in the other iptables backend (%s)" % router.backend in err, err
    assert router.snapshot() == before
    out = router.vpd("check", "--live", config=cfg, check=2, env={"VPD_IPTABLES": other})
    assert "are live in the %s iptables backend" % router.backend in out.stderr
    router.vpd("stop", config=cfg, check=0)
    router.vpd("apply", config=cfg, check=0, env={"VPD_IPTABLES": other})
    router.vpd("stop", config=cfg, check=0, env={"VPD_IPTABLES": other})


# --- server names and DNS ----------------------------------------------------------------------

@pytest.fixture
def hosts(router, request):
    """/etc/netns/NS/hosts, which `ip netns exec` mounts over /etc/hosts; DNS goes to a closed port."""
    d = "/etc/netns/%s" % router.ns.name
    request.addfinalizer(lambda: shutil.rmtree(d, ignore_errors=True))
    os.makedirs(d)
    with open(d + "/resolv.conf", "w") as fh:
        fh.write("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")

    def write(text):
        with open(d + "/hosts", "w") as fh:
            fh.write("127.0.0.1 localhost\n" + text)
    write("")
    return write


def test_unresolvable_server_never_stops_the_tunnels(router, hosts):
    raw = {**FULL, "xray": {**FULL["xray"], "servers": ["proxy.example"]}}
    cfg = router.config(raw)
    hosts("203.0.113.77 proxy.example\n")
    router.vpd("apply", config=cfg, check=0)
    assert "add XRAY_SERVERS 203.0.113.77" in router.ipset_save()
    hosts("")  # DNS is gone: the last addresses are used, with a warning
    router.vpd("apply", "tunnel", config=cfg, check=0)
    p = router.vpd("apply", config=cfg, check=0)
    assert "using the addresses it had last time: 203.0.113.77" in p.stderr
    assert "add XRAY_SERVERS 203.0.113.77" in router.ipset_save()
    assert router.vpd("status", config=cfg, check=0)
    router.vpd("render", config=cfg, check=0)
    router.vpd("check", config=cfg, check=0)
    # never resolved at all (state wiped, e.g. a reboot): the tunnels are routed all the same
    router.vpd("stop", config=cfg, check=0)
    shutil.rmtree(str(router.state_dir))
    p = router.vpd("apply", config=cfg, check=0)
    assert "'proxy.example' has no address" in p.stderr
    assert "16384:\tfrom all fwmark 0x10000/0xff0000 lookup 111" in rules_n(router)
    router.vpd("check", config=cfg, check=0)
    router.vpd("render", config=cfg, check=0)
