"""Ownership by exact selector (no kernel): what counts as ours, and what never does."""

import json
import os

from vpn_director import cli, desired, owned
from vpn_director.live import LiveState

OURS = (16384, "from all fwmark 0x10000/0xff0000 lookup 111")
OLD_PREF = (16390, "from all fwmark 0x70000/0xff0000 lookup 111")  # an earlier config's slot 7
FOREIGN = [(200, "from 10.0.0.0/8 fwmark 0x100/0x100 lookup 150"),
           (16500, "from all fwmark 0x770000/0xff0000 iif wgc1 lookup 160")]


def full(build_cfg):
    cfg = build_cfg({"xray": {"clients": ["192.168.1.10"], "exclude_sets": []},
                     "tunnel_director": {"tunnels": {"wgc1": {"clients": ["192.168.1.20"]}}}})
    return desired.build(cfg, resolver=lambda name: [])


def live(*rules):
    s = LiveState()
    s.rules = list(rules)
    s.routes = {100: ["2 default dev lo scope 254"]}
    return s


def test_desired_and_recorded_rules_are_ours_others_never(build_cfg):
    f = full(build_cfg)
    rec = {"rules": [[OLD_PREF[0], OLD_PREF[1], "tunnel"]]}
    got = owned.rules(f, live(OURS, OLD_PREF, *FOREIGN), rec)
    assert got == {OURS: "tunnel", OLD_PREF: "tunnel"}
    assert owned.rules(f, live(OURS, OLD_PREF, *FOREIGN), {"rules": []}) == {OURS: "tunnel"}
    assert owned.rules(f, live(OURS, OLD_PREF, *FOREIGN), {}) == {OURS: "tunnel"}  # first apply


def test_a_record_from_before_rules_were_recorded_takes_our_exact_shape(build_cfg):
    f = full(build_cfg)
    got = owned.rules(f, live(OURS, OLD_PREF, *FOREIGN), {"sets": {}, "chains": {"TUN_DIR": "tunnel"}})
    assert got == {OURS: "tunnel", OLD_PREF: "tunnel"}  # the foreign shapes stay foreign


def test_routes_are_ours_only_when_desired_or_recorded(build_cfg):
    f = full(build_cfg)
    s = live()
    s.routes[101] = ["2 default dev lo scope 254"]
    rec = {"rules": [], "routes": [[101, "local default dev lo", "2 default dev lo scope 254", "xray"]]}
    assert [r[0] for r in owned.routes(f, s, rec)] == [100, 101]
    assert [r[0] for r in owned.routes(f, s, {"rules": []})] == [100]
    assert owned.route_tables(rec, f.ownership) == [101]


def test_foreign_rule_ahead_of_ours_catches_our_mark(build_cfg):
    f = full(build_cfg)
    s = live((100, "from all fwmark 0x10000/0xff0000 lookup 5"), (20000, "fwmark 0x10000 lookup 6"), OURS)
    ours = owned.rules(f, s, {})
    assert [(p, m) for p, _, m in owned.foreign_ahead(f, s, ours)] == [(100, 0x10000)]


def test_kernel_commands_need_root(tmp_path, monkeypatch, capsys):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"data_dir": str(tmp_path), "advanced": {"state_dir": str(tmp_path / "s")}}))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    for cmd in (["apply"], ["stop"], ["status"], ["check", "--live"]):
        assert cli.main(["-c", str(path)] + cmd) == 1
        err = capsys.readouterr().err
        assert "needs root" in err and len(err.strip().splitlines()) == 1
    assert cli.main(["-c", str(path), "check"]) == 0
