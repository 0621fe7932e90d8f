"""check's linter finds overlaps through an index (lists run to thousands of clients); on random
configs crowded into one small range it must say exactly what comparing every pair says."""

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from vpn_director import config, lint
from vpn_director.lint import PRIVATE, WARN
from vpn_director.xray import store


def reference(cfg):
    """lint.lint written the straightforward way: every client against every other."""
    out = []
    xclients, tunnels = config.effective(cfg)
    lint._duplicates(cfg, out)
    earlier = []
    for tun, clients in tunnels:
        for net in clients:
            for etun, enet in earlier:
                if etun is tun and enet == net:
                    continue
                if net.subnet_of(enet):
                    if etun is tun:
                        out.append((WARN, "tunnel %s client %s is already covered by %s in the same tunnel"
                                    % (tun.name, net, enet)))
                    else:
                        out.append((WARN, "tunnel %s client %s is shadowed by %s of tunnel %s listed before it: "
                                          "its tunnel and exclusions never apply" % (tun.name, net, enet, etun.name)))
                    break
                if net.overlaps(enet) and etun is not tun:
                    out.append((WARN, "tunnel %s client %s overlaps %s of tunnel %s listed before it: "
                                      "%s goes to %s" % (tun.name, net, enet, etun.name, enet, etun.name)))
            earlier.append((tun, net))
    for tun, clients in tunnels:
        if not clients:
            why = "all its clients are paused" if tun.clients else "it has no clients"
            out.append((WARN, "tunnel %s routes nothing: %s" % (tun.name, why)))
        for net in clients:
            hits = [x for x in xclients if x.overlaps(net)]
            if hits:
                out.append((WARN, "tunnel %s client %s is also an Xray client (%s): Xray wins, the tunnel "
                                  "never sees %s" % (tun.name, net, ", ".join(map(str, hits)),
                                                     "it" if any(net.subnet_of(h) for h in hits) else "that part")))
    listed = list(cfg.xray.clients) + [n for t in cfg.tunnels for n in t.clients]
    for p in cfg.paused_clients:
        if not any(p.overlaps(n) for n in listed):
            out.append((WARN, "paused client %s is in no list: pausing it changes nothing" % p))
    if xclients:
        for what, nets in (("xray.exclude_ips", cfg.xray.exclude_ips),
                           ("xray.servers", [ipaddress.IPv4Network(s) for s in cfg.xray.servers])):
            for n in nets:
                inside = [p for p in PRIVATE if n.subnet_of(p)]
                if inside:
                    out.append((WARN, "%s entry %s can never matter: %s is always bypassed already"
                                % (what, n, inside[0])))
        if not cfg.xray.servers and not store.addresses(cfg.data_dir):
            out.append((WARN, "Xray clients but no xray.servers: if the router itself is an Xray client, "
                              "the proxy's own traffic can loop"))
    return out


def reference_paused_inside(cfg, nets):
    return [p for p in config._dedupe(cfg.paused_clients)
            if p not in nets and any(p != n and p.subnet_of(n) for n in nets)]


# Networks crowded into 10.0.0.0/24 (and a few wider ones around it), so that most pairs overlap.
NETS = st.builds(lambda a, plen: str(ipaddress.IPv4Network((0x0A000000 | a, plen), strict=False)),
                 st.integers(0, 255), st.sampled_from([8, 16, 23, 24, 25, 26, 28, 29, 30, 31, 32, 32, 32]))
LISTS = st.lists(NETS, max_size=10)
CONFIGS = st.fixed_dictionaries({
    "paused_clients": LISTS,
    "xray": st.fixed_dictionaries({"clients": LISTS, "exclude_sets": st.just([]),
                                   "servers": st.sampled_from([[], ["203.0.113.1"]])}),
    "tunnel_director": st.fixed_dictionaries({"tunnels": st.dictionaries(
        st.sampled_from(["wgc1", "wgc2", "ovpnc1"]),
        st.fixed_dictionaries({"clients": LISTS, "exclude": st.sampled_from([[], ["ru"], ["ru", "ua"]])}),
        max_size=3)}),
})


@settings(max_examples=400, deadline=None)
@given(raw=CONFIGS)
def test_lint_matches_the_pairwise_reference(tmp_path_factory, raw):
    rt = tmp_path_factory.getbasetemp() / "rt_tables"
    rt.write_text("111 wgc1\n112 wgc2\n113 ovpnc1\n")
    cfg = config.validate(dict(raw, data_dir="/nonexistent", advanced={"rt_tables": str(rt)}))
    assert lint.lint(cfg) == reference(cfg)
    xclients, tunnels = config.effective(cfg)
    for nets in [xclients] + [clients for _, clients in tunnels]:
        assert config.paused_inside(cfg, nets) == reference_paused_inside(cfg, nets)


def test_many_clients_are_not_compared_pair_by_pair(tmp_path, monkeypatch):
    """lint and the paused holes scale with the clients, not with their pairs (counted, not timed)."""
    rt = tmp_path / "rt_tables"
    rt.write_text("111 wgc1\n112 wgc2\n113 ovpnc1\n")
    hosts = ["10.%d.%d.%d" % (1 + i // 65536, i // 256 % 256, i % 256) for i in range(1200)]
    raw = {"paused_clients": hosts[::12] + ["10.1.9.7", "10.1.9.200", "10.200.0.1"],
           "xray": {"clients": hosts[:600] + ["10.1.9.0/24"], "servers": ["203.0.113.1"], "exclude_sets": []},
           "tunnel_director": {"tunnels": {"wgc1": {"clients": hosts[600:900] + ["10.1.0.5"]},
                                           "wgc2": {"clients": hosts[900:]}}}}
    cfg = config.validate(dict(raw, data_dir=str(tmp_path), advanced={"rt_tables": str(rt)}))
    calls = []
    for name in ("overlaps", "subnet_of", "supernet_of"):
        real = getattr(ipaddress.IPv4Network, name)
        monkeypatch.setattr(ipaddress.IPv4Network, name,
                            lambda a, b, real=real: calls.append(1) or real(a, b))
    findings = lint.lint(cfg)
    xclients, tunnels = config.effective(cfg)
    holes = [config.paused_inside(cfg, nets) for nets in [xclients] + [c for _, c in tunnels]]
    assert len(calls) < 100
    assert (WARN, "tunnel wgc1 client 10.1.0.5/32 is also an Xray client (10.1.0.5/32): Xray wins, the "
                  "tunnel never sees it") in findings
    assert (WARN, "paused client 10.200.0.1/32 is in no list: pausing it changes nothing") in findings
    assert [list(map(str, h)) for h in holes] == [["10.1.9.7/32", "10.1.9.200/32"], [], []]
