"""The operations layer without a kernel: the file transformation, history, leases, names, scopes.

Every edit here runs with apply off (`--no-apply`); tests/test_ops_kernel.py applies them."""

import ipaddress
import json
import os

import pytest

from vpn_director import cli, config
from vpn_director.errors import ConfigError
from vpn_director.ops import OpsError, clients, excludes, history, leases, names, rawfile, tunnels, txn

RT = "111 wgc1\n112 wgc2\n113 ovpnc1\n"
BASE = {
    "comment": "kept by every edit",
    "xray": {"clients": ["192.168.50.10"], "servers": ["203.0.113.10"], "exclude_sets": ["ru"], "x_extra": [1, 2]},
    "tunnel_director": {"tunnels": {
        "wgc2": {"clients": ["192.168.50.20"], "exclude": ["ru"], "owner_note": "second slot"},
        "wgc1": {"clients": ["192.168.50.0/24"], "exclude": []},
    }},
    "paused_clients": [],
    "future_area": {"enabled": True, "list": [{"a": 1}]},
}
LEASES = ("0 aa:bb:cc:dd:ee:01 192.168.50.23 annas-phone 01:aa:bb:cc:dd:ee:01\n"
          "%d aa:bb:cc:dd:ee:02 192.168.50.24 * *\n"
          "100 aa:bb:cc:dd:ee:03 192.168.50.25 old-laptop *\n"
          "duid 00:01:00:01:2c:1f:aa:bb:cc:dd:ee:ff\n"
          "0 123456 fd00::23 annas-phone 00:01:00:01\n")


@pytest.fixture
def conf(tmp_path):
    """Write BASE (or a given dict) as the config; returns its path. Leases in tmp_path/leases."""
    (tmp_path / "rt_tables").write_text(RT)
    (tmp_path / "leases").write_text(LEASES % 2000000000)

    def write(raw=BASE, mode=0o640):
        raw = json.loads(json.dumps(raw))
        raw["data_dir"] = str(tmp_path / "data")
        raw["advanced"] = {"state_dir": str(tmp_path / "state"), "rt_tables": str(tmp_path / "rt_tables"),
                           "leases_file": str(tmp_path / "leases"), "lock_timeout": 5}
        path = tmp_path / "vpn-director.json"
        path.write_text(json.dumps(raw, indent=2) + "\n")
        os.chmod(str(path), mode)
        return str(path)
    return write


def edit(path, change):
    return txn.run(path, change, apply=False)


def load(path):
    return json.loads(open(path).read())


# --- the file transformation -----------------------------------------------------------------

def test_edit_keeps_unknown_keys_order_and_mode(conf):
    path = conf()
    before = load(path)
    res = edit(path, clients.move("192.168.50.10", "wgc1"))
    assert res.summary == "client 192.168.50.10: xray → wgc1"
    after = load(path)
    assert list(after) == list(before)
    assert list(after["tunnel_director"]["tunnels"]) == ["wgc2", "wgc1"]
    assert after["tunnel_director"]["tunnels"]["wgc2"]["owner_note"] == "second slot"
    assert after["future_area"] == before["future_area"] and after["xray"]["x_extra"] == [1, 2]
    assert after["xray"]["clients"] == [] and after["tunnel_director"]["tunnels"]["wgc1"]["clients"] == [
        "192.168.50.0/24", "192.168.50.10"]
    assert oct(os.stat(path).st_mode & 0o777) == "0o640"
    assert [f for f in os.listdir(os.path.dirname(path)) if f.startswith(".vpd-edit-")] == []


def test_owner_is_kept_and_a_symlinked_config_is_written_through(conf, tmp_path):
    path = conf()
    os.chown(path, 1234, 1235)
    link = tmp_path / "link.json"
    link.symlink_to(path)
    edit(str(link), clients.add("192.168.50.30", "xray"))
    st = os.stat(path)
    assert (st.st_uid, st.st_gid) == (1234, 1235) and link.is_symlink()
    assert "192.168.50.30" in load(path)["xray"]["clients"]


def test_new_files_are_owner_only(tmp_path):
    rawfile.write(str(tmp_path / "new.json"), b"{}\n")
    assert os.stat(str(tmp_path / "new.json")).st_mode & 0o777 == 0o600


def test_dumps_round_trips_and_keeps_short_lists_on_one_line():
    raw = config.parse_text(json.dumps(BASE))
    text = rawfile.dumps(raw, "  ")
    assert json.loads(text) == BASE and list(json.loads(text)) == list(BASE)
    assert '"clients": ["192.168.50.10"]' in text
    assert rawfile.dumps({"names": {"192.168.50.10": "Аня"}}).count("Аня") == 1  # not \u-escaped


def test_invalid_result_writes_nothing(conf):
    path = conf()
    before = open(path, "rb").read()
    with pytest.raises(ConfigError) as e:  # table 100 is the Xray route table: the whole file is checked
        edit(path, tunnels.add("100"))
    assert any(p.startswith("tunnel_director.tunnels.100: ") for p in e.value.problems)
    assert open(path, "rb").read() == before
    assert history.versions(str(os.path.dirname(path)) + "/data") == []


@pytest.mark.parametrize("change, message", [
    (clients.add("192.168.50.300", "xray"), "not an IPv4 address or CIDR, and no device"),
    (clients.add("192.168.50.40", "wgc9"), "unknown tunnel 'wgc9': the tunnels are wgc2, wgc1"),
    (clients.add("192.168.50.40", "direct"), "direct is not a list"),
    (clients.add("kitchen-tv", "xray"), "no device of that name or MAC"),
    (clients.add("192.168.50.20", "xray"), "already listed in wgc2; to change its route: vpn-director client move"),
    (clients.pause("10.1.2.3"), "is in no client list"),
    (clients.remove("192.168.50.77"), "inside 192.168.50.0/24 of wgc1"),
    (excludes.add("rus"), "'rus' is not a two-letter country code"),
    (excludes.add("1.2.3.4", "wgc1"), "a tunnel excludes country lists only"),
    (tunnels.add("wgc9"), "table 'wgc9' is not in"),
    (tunnels.order(["wgc1", "wgc1"]), "named twice"),
    (tunnels.remove("xray"), "unknown tunnel 'xray'"),
])
def test_bad_input_is_one_clear_error_and_nothing_changes(conf, change, message):
    path = conf()
    before = open(path, "rb").read()
    with pytest.raises(OpsError) as e:
        edit(path, change)
    assert message in str(e.value) and "\n" not in str(e.value) and e.value.exit_code == 2
    assert open(path, "rb").read() == before


def test_already_so_changes_nothing(conf):
    path = conf()
    before = open(path, "rb").read()
    for change in (clients.add("192.168.50.10", "xray"), clients.resume("192.168.50.10"),
                   excludes.add("RU"), tunnels.order(["wgc2"]), clients.move("192.168.50.99", "direct")):
        res = edit(path, change)
        assert res.summary == "" and "nothing changed" in res.notes[-1]
    assert open(path, "rb").read() == before


def test_edits_read_the_file_as_apply_does(conf):
    """A config that apply accepts (a BOM) can be edited; one apply refuses (over 1 MiB) cannot."""
    path = conf()
    data = open(path, "rb").read()
    open(path, "wb").write(b"\xef\xbb\xbf" + data)
    assert edit(path, clients.pause("192.168.50.77")).summary == "client 192.168.50.77: paused"
    open(path, "wb").write(data[:-2] + b" " * config.MAX_CONFIG_BYTES + b"}\n")
    with pytest.raises(ConfigError, match="larger than 1024 KiB"):
        edit(path, clients.pause("192.168.50.78"))


def test_client_edits(conf):
    path = conf()
    assert edit(path, clients.add("192.168.50.30/32", "wgc2")).summary == "client 192.168.50.30: added to wgc2"
    assert edit(path, clients.pause("192.168.50.77")).summary == "client 192.168.50.77: paused"  # hole in wgc1's /24
    assert edit(path, clients.move("192.168.50.30", "direct")).summary == "client 192.168.50.30: wgc2 → direct"
    assert edit(path, clients.resume("192.168.50.77")).summary == "client 192.168.50.77: resumed"
    assert edit(path, clients.remove("192.168.50.20")).summary == "client 192.168.50.20: removed (was wgc2)"
    raw = load(path)
    assert raw["paused_clients"] == [] and raw["tunnel_director"]["tunnels"]["wgc2"]["clients"] == []


def test_exclusions_keep_the_xray_default(conf):
    raw = json.loads(json.dumps(BASE))
    del raw["xray"]["exclude_sets"]  # means ["ru"]
    path = conf(raw)
    edit(path, excludes.add("UA"))
    assert load(path)["xray"]["exclude_sets"] == ["ru", "ua"]
    edit(path, excludes.add("198.51.100.0/24"))
    edit(path, excludes.remove("ru"))
    edit(path, excludes.add("de", "wgc1"))
    raw = load(path)
    assert raw["xray"]["exclude_sets"] == ["ua"] and raw["xray"]["exclude_ips"] == ["198.51.100.0/24"]
    assert raw["tunnel_director"]["tunnels"]["wgc1"]["exclude"] == ["de"]


def test_tunnel_edits_keep_bodies_and_order(conf):
    path = conf()
    assert edit(path, tunnels.add("ovpnc1", ["RU", "ua"])).summary == "tunnel ovpnc1: added (slot 3, excludes ru,ua)"
    assert edit(path, tunnels.order(["ovpnc1", "wgc1"])).summary == "tunnel order: ovpnc1 → wgc1 → wgc2"
    tuns = load(path)["tunnel_director"]["tunnels"]
    assert list(tuns) == ["ovpnc1", "wgc1", "wgc2"] and tuns["wgc2"]["owner_note"] == "second slot"
    res = edit(path, tunnels.remove("wgc1"))
    assert res.notes == ["its client(s) 192.168.50.0/24 no longer go through wgc1"]
    assert list(load(path)["tunnel_director"]["tunnels"]) == ["ovpnc1", "wgc2"]


# --- what an edit applies ---------------------------------------------------------------------

def test_scope_of_an_edit():
    base = json.loads(json.dumps(BASE))
    moved = json.loads(json.dumps(BASE))
    moved["xray"]["clients"] = []
    moved["tunnel_director"]["tunnels"]["wgc1"]["clients"].append("192.168.50.10")
    assert txn.scope_of(base, moved) == "all"
    reordered = dict(base, tunnel_director={"tunnels": dict(reversed(list(base["tunnel_director"]["tunnels"].items())))})
    assert txn.scope_of(base, reordered) == "tunnel"  # key order alone is a change
    assert txn.scope_of(base, dict(base, xray=dict(base["xray"], exclude_sets=["ua"]))) == "xray"
    assert txn.scope_of(base, dict(base, names={"192.168.50.10": "tv"})) is None
    assert txn.scope_of(dict(base, advanced={"leases_file": "/a"}), dict(base, advanced={"leases_file": "/b"})) is None
    assert txn.scope_of(base, dict(base, paused_clients=["192.168.50.10"])) == "all"


def test_a_client_leaving_xray_for_a_tunnel_is_bridged(conf):
    path = conf()
    old = config.load(path)
    edit(path, clients.move("192.168.50.10", "wgc2"))
    new = config.load(path)
    first = txn.bridge(old, new)
    assert ipaddress.IPv4Network("192.168.50.10/32") in first.xray.clients  # Xray wins: still the old path
    assert [t.clients for t in first.tunnels] == [t.clients for t in new.tunnels]
    assert txn.bridge(new, old) is None  # tunnel -> Xray: the set is loaded first anyway


# --- history ----------------------------------------------------------------------------------

def test_history_keeps_twenty_versions_and_hand_edits(conf, tmp_path):
    path = conf()
    data = str(tmp_path / "data")
    found = open(path, "rb").read()
    for i in range(3):
        edit(path, clients.add("192.168.50.%d" % (100 + i), "xray"))
    kept = history.versions(data)
    assert [v.summary for v in kept][:2] == [history.FOUND, "client 192.168.50.100: added to xray"]
    assert kept[0].text.encode() == found and kept[-1].text.encode() == open(path, "rb").read()
    with open(path, "a") as fh:
        fh.write("\n")  # a hand edit
    edit(path, clients.add("192.168.50.120", "xray"))
    assert [v.summary for v in history.versions(data)][-2] == history.BY_HAND
    for i in range(20):
        edit(path, clients.add("192.168.50.%d" % (130 + i), "wgc2"))
    kept = history.versions(data)
    assert len(kept) == 20 and kept[-1].number == 26 and kept[0].number == 7
    assert all(oct(os.stat(os.path.join(data, "history", f)).st_mode & 0o777) == "0o600"
               for f in os.listdir(os.path.join(data, "history")))


def test_rollback_restores_the_exact_bytes_as_a_new_version(conf, tmp_path):
    path = conf()
    data = str(tmp_path / "data")
    found = open(path, "rb").read()
    edit(path, clients.add("192.168.50.30", "xray"))
    edit(path, tunnels.order(["wgc1"]))
    res = txn.run(path, history.rollback(data, 1), apply=False, allow_invalid=True)
    assert res.summary == "rollback to version 1 (%s)" % history.FOUND
    assert open(path, "rb").read() == found
    assert history.versions(data)[-1].number == 4
    d = history.diff(history.get(data, 2).text, history.get(data, 3).text, "a", "b")
    assert '+      "wgc1": {' in d and '-      "wgc1": {' in d
    with pytest.raises(OpsError, match="no version 9 in the history"):
        history.get(data, 9)


def test_rollback_repairs_a_broken_file(conf, tmp_path):
    path = conf()
    edit(path, clients.add("192.168.50.30", "xray"))
    good = open(path, "rb").read()
    open(path, "w").write('{"xray": {"clients": ["192.168.50.300"]}}')
    with pytest.raises(ConfigError):
        edit(path, clients.add("192.168.50.31", "xray"))
    txn.run(path, history.rollback(str(tmp_path / "data"), 2), apply=False, allow_invalid=True)
    assert open(path, "rb").read() == good


# --- leases and names -------------------------------------------------------------------------

def test_leases_parsing():
    got = leases.parse(LEASES % 2000000000, now=1000)
    assert [(l.ip, l.mac, l.name) for l in got] == [
        ("192.168.50.23", "aa:bb:cc:dd:ee:01", "annas-phone"), ("192.168.50.24", "aa:bb:cc:dd:ee:02", "")]
    assert leases.find(got, "ANNAS-PHONE").ip == "192.168.50.23"
    assert leases.find(got, "AA-BB-CC-DD-EE-02").ip == "192.168.50.24"
    assert leases.find(got, "old-laptop") is None  # expired
    assert leases.read("/nonexistent/leases") == []
    twice = leases.parse("0 aa:aa:aa:aa:aa:01 10.0.0.1 tv *\n0 aa:aa:aa:aa:aa:02 10.0.0.2 tv *\n")
    with pytest.raises(OpsError, match="several DHCP leases"):
        leases.find(twice, "tv")


def test_names_config_validation(tmp_path):
    raw = {"names": {"192.168.50.10": "Anna's phone", "192.168.50.64/27": "kids"}, "advanced": {}}
    cfg = config.validate(raw)
    assert cfg.names[ipaddress.IPv4Network("192.168.50.64/27")] == "kids"
    assert cfg.leases_file == "/var/lib/misc/dnsmasq.leases"
    bad = {"names": {"192.168.50.300": "x", "192.168.50.11": "", "192.168.50.12": "a\nb",
                     "192.168.50.13": "x" * 65, "192.168.50.10": "a", "192.168.50.10/32": "b"},
           "advanced": {"leases_file": "leases"}}
    with pytest.raises(ConfigError) as e:
        config.validate(bad)
    paths = sorted(p.split(": ")[0] for p in e.value.problems)
    assert paths == ["advanced.leases_file", "names.192.168.50.10/32", "names.192.168.50.11", "names.192.168.50.12",
                     "names.192.168.50.13", "names.192.168.50.300"]


def test_names_precedence_and_display(conf, tmp_path):
    raw = json.loads(json.dumps(BASE))
    raw["names"] = {"192.168.50.23": "Anna's phone", "192.168.50.0/24": "home LAN"}
    cfg = config.load(conf(raw))
    shown = names.load(cfg)
    assert shown.get("192.168.50.23") == "Anna's phone"  # the config wins over the lease's name
    assert shown.get("192.168.50.24") is None  # a lease without a name
    assert shown.annotate("client 192.168.50.23/32 is shadowed by 192.168.50.0/24 of wgc1") == \
        "client 192.168.50.23/32 (Anna's phone) is shadowed by 192.168.50.0/24 (home LAN) of wgc1"
    assert shown.annotate_rules("    OK   3 pkts  -s 192.168.50.23/32 -m mark --mark 0x0/0xff0000 -j MARK").endswith(
        "-j MARK  (Anna's phone)")


def test_client_add_by_name_or_mac_resolves_the_lease(conf):
    path = conf()
    res = edit(path, clients.add("annas-phone", "wgc2"))
    assert res.summary == "client 192.168.50.23 (annas-phone): added to wgc2"
    assert "annas-phone is 192.168.50.23 by its DHCP lease (MAC aa:bb:cc:dd:ee:01)" in res.notes[0]
    assert "DHCP reservation" in res.notes[0]
    res = edit(path, clients.add("aa:bb:cc:dd:ee:02", "xray", name="tv"))
    assert res.summary == "client 192.168.50.24 (tv): added to xray"
    assert load(path)["names"] == {"192.168.50.24": "tv"}
    assert edit(path, clients.move("tv", "direct")).summary == "client 192.168.50.24 (tv): xray → direct"


# --- the client list --------------------------------------------------------------------------

def test_client_list_routes_come_from_the_trace_walk(conf):
    raw = json.loads(json.dumps(BASE))
    raw["paused_clients"] = ["192.168.50.77"]
    raw["names"] = {"192.168.50.10": "Anna's phone"}
    rows = {r["address"]: r for r in clients.rows(config.load(conf(raw)))}
    assert rows["192.168.50.10"]["via"] == "xray" and rows["192.168.50.10"]["name"] == "Anna's phone"
    assert rows["192.168.50.20"]["via"] == "wgc2" and rows["192.168.50.20"]["listed_in"] == ["wgc2"]
    assert rows["192.168.50.0/24"]["via"] == "wgc1"  # a host of it that is not paused
    assert rows["192.168.50.77"]["via"] == "direct" and rows["192.168.50.77"]["paused"]
    assert rows["192.168.50.77"]["inside"] == ["192.168.50.0/24 of wgc1"]


# --- the command line -------------------------------------------------------------------------

HELP = [["client"], ["client", "list"], ["client", "add"], ["client", "move"], ["client", "pause"],
        ["client", "resume"], ["client", "remove"], ["exclude"], ["exclude", "add"], ["exclude", "remove"],
        ["tunnel"], ["tunnel", "add"], ["tunnel", "remove"], ["tunnel", "order"], ["config"],
        ["config", "history"], ["config", "diff"], ["config", "rollback"]]


@pytest.mark.parametrize("argv", HELP, ids=" ".join)
def test_every_command_has_help(argv, capsys):
    assert cli.main(argv + ["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: vpn-director " + " ".join(argv))
    if len(argv) == 2 and argv[1] not in ("list", "history", "diff"):
        assert "--no-apply" in out


def test_cli_bad_input_is_one_line_and_exit_2(conf, capsys):
    path = conf()
    before = open(path, "rb").read()
    for argv in (["client", "add", "192.168.50.300", "--via", "xray"], ["client", "move", "192.168.50.10", "--via", "wgc9"],
                 ["exclude", "add", "r1"], ["client", "add", "no-such-device", "--via", "xray"]):
        assert cli.main(["-c", path] + argv + ["--no-apply"]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and err.startswith("vpn-director: error: ")
    assert open(path, "rb").read() == before


def test_cli_edit_list_history_and_diff(conf, capsys):
    path = conf()
    assert cli.main(["-c", path, "client", "add", "192.168.50.30", "--via", "xray", "--name", "Anna's phone",
                     "--no-apply"]) == 0
    out = capsys.readouterr().out
    assert "client 192.168.50.30 (Anna's phone): added to xray" in out and "route now: xray" in out
    assert cli.main(["-c", path, "client", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ADDRESS", "NAME", "ROUTE", "PAUSED", "LISTED", "IN"]
    assert any(l.split()[:4] == ["192.168.50.30", "Anna's", "phone", "xray"] for l in lines)
    assert cli.main(["-c", path, "config", "history", "--json"]) == 0
    hist = json.loads(capsys.readouterr().out)
    assert [v["summary"] for v in hist["versions"]] == [history.FOUND,
                                                          "client 192.168.50.30 (Anna's phone): added to xray"]
    assert hist["current"] == 2
    assert cli.main(["-c", path, "config", "diff", "2"]) == 0
    assert '+    "clients": ["192.168.50.10", "192.168.50.30"],' in capsys.readouterr().out
    assert cli.main(["-c", path, "config", "diff", "2", "current"]) == 0
    assert capsys.readouterr().out.strip() == "no differences"


def test_names_beside_addresses_in_check_and_trace(conf, capsys):
    raw = {"xray": {"clients": ["192.168.50.10"], "exclude_sets": []}, "paused_clients": [],
           "tunnel_director": {"tunnels": {"wgc1": {"clients": ["192.168.50.0/24"]},
                                           "wgc2": {"clients": ["192.168.50.23"]}}},
           "names": {"192.168.50.10": "Anna's phone"}}
    path = conf(raw)
    assert cli.main(["-c", path, "check"]) == 0
    err = capsys.readouterr().err
    assert "tunnel wgc2 client 192.168.50.23/32 (annas-phone) is shadowed by 192.168.50.0/24" in err  # a lease name
    assert cli.main(["-c", path, "trace", "192.168.50.10", "8.8.8.8"]) == 0
    assert capsys.readouterr().out.startswith("192.168.50.10 (Anna's phone) → 8.8.8.8 tcp (desired state)")
    assert cli.main(["-c", path, "trace", "192.168.50.10", "8.8.8.8", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["src_name"] == "Anna's phone"
