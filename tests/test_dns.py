"""DNS follows the route, without a kernel: config keys, the firmware's tunnel DNS, the desired
nat/filter objects, the mangle changes, the plan's order, render, trace and check."""

import pytest

from vpn_director import config, desired, engine, reconcile, trace
from vpn_director.dns import pipeline, report, rules, servers
from vpn_director.errors import ConfigError
from vpn_director.live import LiveState

WG, OV, X = "192.168.50.20", "192.168.50.40", "192.168.50.10"


def raw(wgc1_dns=None, xray_dns=None, **adv):
    tun = {"clients": [WG, "192.168.50.16/29"], "exclude": ["ru"]}
    if wgc1_dns is not None:
        tun["dns"] = wgc1_dns
    out = {"xray": {"clients": [X], "exclude_sets": []},
           "tunnel_director": {"tunnels": {"wgc1": tun, "main": {"clients": ["192.168.50.30"]},
                                           "ovpnc3": {"clients": [OV]}}},
           "paused_clients": ["192.168.50.21"]}
    if xray_dns:
        out["xray"]["dns"] = xray_dns
    if adv:
        out["advanced"] = adv
    return out


# --- config ---------------------------------------------------------------------------------

def test_keys_and_defaults(build_cfg):
    cfg = build_cfg(raw())
    assert [t.dns for t in cfg.tunnels] == ["auto", "auto", "auto"]
    assert (cfg.xray.dns, cfg.xray.dns_servers, cfg.block_dot) == ("router", ["1.1.1.1", "8.8.8.8"], False)
    cfg = build_cfg(dict(raw(["10.64.0.1", "10.64.0.2"], "xray", dns={"block_dot": True}),
                         xray={"clients": [X], "dns": "xray", "dns_servers": ["9.9.9.9"]}))
    assert cfg.tunnels[0].dns == ["10.64.0.1", "10.64.0.2"] and cfg.tunnels[1].dns == "auto"
    assert (cfg.xray.dns, cfg.xray.dns_servers, cfg.block_dot) == ("xray", ["9.9.9.9"], True)
    assert not cfg.warnings


def test_every_bad_value_is_reported_with_its_path(build_cfg):
    bad = raw(["10.64.0.1", "127.0.0.1", "10.64.0.300", "010.1.1.1", "10.0.0.0/8", 5], "proxy",
              dns={"block_dot": "yes", "other": 1})
    bad["xray"]["dns_servers"] = []
    bad["tunnel_director"]["tunnels"]["ovpnc3"]["dns"] = "tunnel"
    with pytest.raises(ConfigError) as e:
        build_cfg(bad)
    text = "\n".join(e.value.problems)
    for path in ("wgc1.dns[1]", "wgc1.dns[2]", "wgc1.dns[3]", "wgc1.dns[4]", "wgc1.dns[5]", "xray.dns:",
                 "xray.dns_servers:", "ovpnc3.dns:", "advanced.dns.block_dot"):
        assert path in text, path
    assert "wgc1.dns[0]" not in text


# --- the firmware's tunnel DNS ----------------------------------------------------------------

def test_auto_reads_merlins_wireguard_nvram_and_openvpn_client_resolv(tmp_path, build_cfg):
    resolv = tmp_path / "client{n}.resolv"
    (tmp_path / "client3.resolv").write_text("server=/corp.example/10.1.1.1\nserver=10.8.0.1\nserver=10.8.0.2\n")
    asked = []

    def nvram(key):
        asked.append(key)
        return "10.64.0.1, 10.64.0.2\n"
    got = servers.resolve(build_cfg(raw()), nvram=nvram, resolv=str(resolv))
    assert got["wgc1"] == servers.TunnelDns("wgc1", ("10.64.0.1", "10.64.0.2"), "nvram wgc1_dns")
    assert got["ovpnc3"].servers == ("10.8.0.1", "10.8.0.2") and got["ovpnc3"].source.endswith("client3.resolv")
    assert got["main"].source == servers.ROUTER and asked == ["wgc1_dns"]
    # nothing there: unknown, with the reason
    got = servers.resolve(build_cfg(raw()), nvram=lambda key: None, resolv=str(tmp_path / "none{n}"))
    assert got["wgc1"].target is None and "not Asuswrt-Merlin" in got["wgc1"].problem
    assert got["ovpnc3"].target is None and "does not exist" in got["ovpnc3"].problem
    # garbage in nvram never reaches a command line
    got = servers.resolve(build_cfg(raw()), nvram=lambda key: "1.2.3.4; reboot", resolv=str(resolv))
    assert got["wgc1"].servers == () and "no IPv4 address" in got["wgc1"].problem
    # the config's list wins, "router" is not looked up
    got = servers.resolve(build_cfg(raw(["10.9.9.9"])), nvram=lambda key: 1 / 0)
    assert got["wgc1"] == servers.TunnelDns("wgc1", ("10.9.9.9",), servers.CONFIG)


def test_nvram_command(tmp_path):
    fake = tmp_path / "nvram"
    fake.write_text("#!/bin/sh\n[ \"$1 $2\" = \"get wgc1_dns\" ] && echo 10.64.0.1\n")
    fake.chmod(0o755)
    assert servers.nvram_get("wgc1_dns", env={"PATH": str(tmp_path)}).strip() == "10.64.0.1"
    assert servers.nvram_get("wgc1_dns", env={"PATH": str(tmp_path / "nowhere")}) is None


# --- desired objects --------------------------------------------------------------------------

def test_nat_chain_in_tun_dirs_first_match_order(build_cfg):
    cfg = build_cfg(raw(["10.64.0.1"]))
    full = desired.build(cfg, lan_nets=[config.parse_net("192.168.50.0/24")])
    nat, filt = full.dns
    assert [(c.name, c.rules) for c in nat.chains] == [("VPD_DNS_TUN", (
        "-m mark --mark 0x100/0x100 -j RETURN",
        "-s 192.168.50.21/32 -j RETURN",
        "-s 192.168.50.20/32 -m mark ! --mark 0x0/0xff0000 -j DNAT --to-destination 10.64.0.1",
        "-s 192.168.50.16/29 -m mark ! --mark 0x0/0xff0000 -j DNAT --to-destination 10.64.0.1"))]
    assert [j.spec for j in nat.jumps["PREROUTING"]] == [
        "-i br0 -p udp -m udp --dport 53 -m addrtype --dst-type LOCAL -j VPD_DNS_TUN",
        "-i br0 -p tcp -m tcp --dport 53 -m addrtype --dst-type LOCAL -j VPD_DNS_TUN"]
    assert filt.chains == []
    # the kill switch's LAN return lets DNS to the router be marked
    assert "-d 192.168.50.0/24 -m addrtype ! --dst-type LOCAL -j RETURN" in full.chains[1].rules
    # a later tunnel's resolver: earlier clients without one RETURN (first match), main included
    r = raw("router")
    r["tunnel_director"]["tunnels"]["ovpnc3"]["dns"] = ["10.8.0.1"]
    nat = desired.build(build_cfg(r)).dns[0]
    assert nat.chains[0].rules[2:] == (
        "-s 192.168.50.20/32 -j RETURN", "-s 192.168.50.16/29 -j RETURN", "-s 192.168.50.30/32 -j RETURN",
        "-s 192.168.50.40/32 -m mark ! --mark 0x0/0xff0000 -j DNAT --to-destination 10.8.0.1")


def test_nothing_changes_without_a_resolver_or_xray_dns(build_cfg):
    lan = [config.parse_net("192.168.50.0/24")]
    base = desired.build(build_cfg(raw()), lan_nets=lan)
    assert [td.chains for td in base.dns] == [[], []]
    assert "-d 192.168.50.0/24 -j RETURN" in base.chains[1].rules
    for variant in (raw("router"), raw(xray_dns="router")):
        full = desired.build(build_cfg(variant), lan_nets=lan)
        assert full.chains == base.chains and full.jumps == base.jumps


def test_xray_dns_tproxies_port_53_before_the_private_returns(build_cfg):
    rules_ = desired.build(build_cfg(raw(xray_dns="xray"))).chains[0].rules
    assert rules_[:4] == (
        "-m set ! --match-set XRAY_CLIENTS src -j RETURN",
        "-p udp -m udp --dport 53 -j TPROXY --on-port 12345 --on-ip 0.0.0.0 --tproxy-mark 0x100/0x100",
        "-p tcp -m tcp --dport 53 -j TPROXY --on-port 12345 --on-ip 0.0.0.0 --tproxy-mark 0x100/0x100",
        "-m set --match-set XRAY_SERVERS dst -j RETURN")
    plain = desired.build(build_cfg(raw())).chains[0].rules
    assert rules_[:1] + rules_[3:] == plain


def test_block_dot_rejects_routed_clients_tcp_853(build_cfg):
    filt = desired.build(build_cfg(raw(dns={"block_dot": True}))).dns[1]
    assert [(c.name, c.rules) for c in filt.chains] == [
        ("VPD_DOT_XRAY", ("-p tcp -m set --match-set XRAY_CLIENTS src -j REJECT --reject-with tcp-reset",)),
        ("VPD_DOT_TUN", ("-s 192.168.50.21/32 -j RETURN",
                         "-s 192.168.50.20/32 -p tcp -j REJECT --reject-with tcp-reset",
                         "-s 192.168.50.16/29 -p tcp -j REJECT --reject-with tcp-reset",
                         "-s 192.168.50.30/32 -j RETURN",  # table main: not routed
                         "-s 192.168.50.40/32 -p tcp -j REJECT --reject-with tcp-reset"))]
    assert [j.spec for j in filt.jumps["FORWARD"]] == ["-i br0 -p tcp -m tcp --dport 853 -j VPD_DOT_XRAY",
                                                     "-i br0 -p tcp -m tcp --dport 853 -j VPD_DOT_TUN"]
    assert [j.spec for j in filt.jumps["INPUT"]] == [j.spec for j in filt.jumps["FORWARD"]]


def test_our_rules_look_like_ours(build_cfg):
    full = desired.build(build_cfg(raw(["10.64.0.1"], dns={"block_dot": True})))
    for td in full.dns:
        for c in td.chains:
            assert reconcile.looks_like_ours(c.rules, td.ours), c
    assert not reconcile.looks_like_ours(["-s 1.2.3.4/32 -j ACCEPT"], rules.NAT_RULE_RE)


# --- plan, render ------------------------------------------------------------------------------

def _live_empty():
    return LiveState(dns=pipeline.nothing_live())


def test_apply_puts_nat_after_the_mangle_step_and_stop_first(build_cfg):
    cfg = build_cfg(raw(["10.64.0.1"], dns={"block_dot": True}))
    full = desired.build(cfg)
    p = pipeline.extend(reconcile.plan(full, _live_empty(), "all", {}), full, _live_empty(), "all", {})
    names = [s.name for s in p.steps]
    assert names == ["load sets", "add ip rules and routes", "update mangle chains and jumps",
                     "update nat chains and jumps", "update filter chains and jumps"]
    assert p.record["dns"] == {"nat": {"VPD_DNS_TUN": "tunnel"},
                               "filter": {"VPD_DOT_XRAY": "xray", "VPD_DOT_TUN": "tunnel"}}
    nat_step = p.steps[3]
    assert nat_step.tool == "iptables-nat" and nat_step.batch.startswith("*nat\n:VPD_DNS_TUN - [0:0]\n")
    assert nat_step.undo == ("*nat\n-D PREROUTING -i br0 -p tcp -m tcp --dport 53 -m addrtype --dst-type LOCAL "
                             "-j VPD_DNS_TUN\n-D PREROUTING -i br0 -p udp -m udp --dport 53 -m addrtype --dst-type "
                             "LOCAL -j VPD_DNS_TUN\n:VPD_DNS_TUN - [0:0]\n-X VPD_DNS_TUN\nCOMMIT\n")
    # stop: the nat and filter chains (recorded) go first, before TUN_DIR and the sets
    live = LiveState(dns=pipeline.nothing_live())
    for td in full.dns:
        t = live.dns.tables[td.table]
        for c in td.chains:
            t.chains[c.name] = list(c.rules)
        for parent, jumps in td.jumps.items():
            t.chains[parent] = [j.spec for j in jumps]
    p = pipeline.extend(reconcile.plan(full, live, "all", p.record, stop=True), full, live, "all", p.record, True)
    assert [s.name for s in p.steps][:2] == ["update nat chains and jumps", "update filter chains and jumps"]
    assert "-X VPD_DNS_TUN" in p.steps[0].batch and "dns" not in p.record
    # scope xray: only the Xray DoT chain
    p = pipeline.extend(reconcile.plan(full, live, "xray", p.record, stop=True), full, live, "xray",
                        {"dns": {"nat": {"VPD_DNS_TUN": "tunnel"}, "filter": {"VPD_DOT_XRAY": "xray"}}}, True)
    assert [s.name for s in p.steps] == ["update filter chains and jumps"] and "VPD_DNS_TUN" not in p.steps[0].batch


def test_render_prints_the_nat_and_filter_batches_only_when_used(build_cfg, tmp_path):
    plain = engine.render_batches(desired.build(build_cfg(raw())))
    assert "iptables-nat" not in plain and "iptables-filter" not in plain
    batches = engine.render_batches(desired.build(build_cfg(raw(["10.64.0.1"], dns={"block_dot": True}))))
    assert batches["iptables-nat"].startswith("*nat\n") and batches["iptables-filter"].startswith("*filter\n")
    paths = engine.write_out(str(tmp_path / "out"), batches)
    assert [p.rsplit("/", 1)[1] for p in paths][-2:] == ["iptables.nat", "iptables.filter"]
    assert len(engine.write_out(str(tmp_path / "plain"), plain)) == 4


# --- trace, status lines, check -----------------------------------------------------------------

def test_trace_shows_the_dnat_and_the_tproxy_step(build_cfg):
    cfg = build_cfg(raw(["10.64.0.1"], "xray"))
    full = desired.build(cfg, lan_nets=[config.parse_net("192.168.50.0/24")])
    rs = trace.from_desired(full, cfg, local=["192.168.50.1"])
    v = trace.trace(rs, WG, "192.168.50.1", "udp", 53)
    assert (v.route, v.table, v.tunnel, v.mark) == ("tunnel", "wgc1", "wgc1", 0x10000)
    assert ("nat VPD_DNS_TUN: src=192.168.50.20, DNS to the router → DNAT to 10.64.0.1:53 (the tunnel's "
            "resolver; the mark 0x10000 stays)") in v.steps
    v = trace.trace(rs, WG, "192.168.50.1", "tcp", 80)  # not DNS: the router itself
    assert v.route == "router" and not any("DNAT" in s for s in v.steps)
    v = trace.trace(rs, OV, "192.168.50.1", "udp", 53)  # no resolver known for ovpnc3
    assert v.route == "router" and v.steps[-1].endswith("(its resolver)")
    v = trace.trace(rs, X, "192.168.50.1", "udp", 53)
    assert v.route == "xray" and v.steps[1] == "XRAY_TPROXY: DNS (dport 53) → Xray's DNS route (xray.dns: xray)"
    v = trace.trace(rs, X, "192.168.50.1", "udp", 5353)
    assert v.route == "router"  # the document's private RETURN for anything else


def test_paths_and_check_findings(build_cfg):
    cfg = build_cfg(raw(xray_dns="xray"))
    resolved = servers.resolve(cfg, nvram=lambda key: "10.64.0.1", resolv="/nonexistent/{n}")
    lines = report.format_paths(report.paths(cfg, resolved))
    assert any("tunnel wgc1 clients" in l and "10.64.0.1 through wgc1" in l and "nvram wgc1_dns" in l for l in lines)
    assert any("tunnel ovpnc3 clients" in l and "the router's resolver" in l for l in lines)
    assert any("Xray clients" in l and "Xray (xray.dns: xray)" in l for l in lines)
    found = report.findings(cfg, resolved)
    assert len(found) == 1 and found[0][1].startswith("tunnel ovpnc3: no DNS server known for its clients")
    cfg = build_cfg(raw("router"))
    assert [m for _, m in report.findings(cfg, servers.resolve(cfg, look_up=False))] == [
        "tunnel ovpnc3: no DNS server known for its clients (not looked up): they ask the router's resolver, which "
        "sends their lookups out by the WAN; set tunnel_director.tunnels.ovpnc3.dns to the tunnel's resolver, e.g. "
        "[\"10.64.0.1\"] (or \"router\" to keep it)"]
