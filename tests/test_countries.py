"""Country-list download, validation and cache against a local HTTP server serving fixtures and faults."""

import hashlib
import json
import os
import socket
import threading

import pytest

from vpn_director import config, countries, listcache, sets
from zoneserver import ZoneServer

RU = "# fixture: Российская Федерация\n77.88.0.0/17\n77.88.128.0/17\n5.255.255.0/24\n5.255.254.0/24\n" + "".join(
    "95.%d.%d.0/24\n" % (i // 256, i % 256) for i in range(0, 400, 2))  # 200 lines that do not merge
UA = "91.198.0.0/16\n91.199.0.0/16\n"
RU_MEMBERS = 2 + 200  # 77.88.0.0/16, 5.255.254.0/23 and the 200 /24s


@pytest.fixture
def server(tmp_path):
    d = tmp_path / "www"
    d.mkdir()
    (d / "ru.zone").write_bytes(RU.encode())
    (d / "ua.zone").write_text(UA)
    srv = ZoneServer(d)
    yield srv
    srv.close()


@pytest.fixture
def make_cfg(tmp_path):
    rt = tmp_path / "rt_tables"
    rt.write_text("111 wgc1\n")

    def make(sources, exclude=("ru",), **ipsets):
        raw = {"data_dir": str(tmp_path / "data"),
               "xray": {"clients": ["192.168.50.10"], "exclude_sets": list(exclude)},
               "advanced": {"rt_tables": str(rt)},
               "ipsets": dict({"sources": sources, "timeout": 1}, **ipsets)}
        return config.validate(raw)
    return make


def cache(cfg, cc="ru"):
    """The cached list and its metadata, as bytes (to prove they are untouched)."""
    out = []
    for path in (sets.zone_path(cfg.data_dir, cc), listcache.meta_path(cfg.data_dir, cc)):
        out.append(open(path, "rb").read() if os.path.exists(path) else None)
    return tuple(out)


def test_first_good_source_wins_and_is_cached(server, make_cfg):
    cfg = make_cfg([server.url(f) for f in ("404", "html", "empty", "ok", "half")])
    done, failed = countries.refresh(cfg)
    assert failed == []
    assert [(r.cc, r.url, r.entries, r.aggregated) for r in done] == [("ru", server.url("ok", "ru.zone"), 204,
                                                                        RU_MEMBERS)]
    assert [h.split("/")[1] for h in server.hits] == ["404", "html", "empty", "ok"]  # stops at the winner
    zone, meta = cache(cfg)
    assert zone == RU.encode()
    meta = json.loads(meta)
    assert meta["source"] == server.url("ok", "ru.zone")
    assert (meta["entries"], meta["aggregated"], meta["bytes"]) == (204, RU_MEMBERS, len(RU.encode()))
    assert meta["sha256"] == hashlib.sha256(RU.encode()).hexdigest()
    assert meta["fetched"].endswith("Z") and meta["fetched_epoch"] > 0
    assert listcache.describe(cfg.data_dir, "ru") == {"source": meta["source"], "fetched": meta["fetched"]}


FAULT_MESSAGES = {
    "404": "HTTP 404",
    "slow": "timed out after 1s",
    "html": "an HTML page, not a list",
    "empty": "empty answer",
    "truncated": "truncated",
    "half": "shrank from %d to" % RU_MEMBERS,
    "garbage": "not a list of IPv4 CIDRs",
}


@pytest.mark.parametrize("fault", sorted(FAULT_MESSAGES))
def test_a_fault_keeps_the_cache_and_is_named(server, make_cfg, fault):
    good = make_cfg([server.url("ok")])
    assert countries.refresh(good)[1] == []
    before = cache(good)
    cfg = make_cfg([server.url(fault), server.url("404", "gone-{cc}.zone")])
    done, failed = countries.refresh(cfg)
    assert done == [] and len(failed) == 1
    cc, message = failed[0]
    assert cc == "ru" and "\n" not in message
    assert message.startswith("ru: no usable list, cached and live set kept; tried ")
    assert "%s: %s" % (server.url(fault, "ru.zone"), FAULT_MESSAGES[fault]) in message
    assert "%s: HTTP 404" % server.url("404", "gone-ru.zone") in message  # every source tried is named
    assert cache(cfg) == before


@pytest.mark.parametrize("fault", sorted(FAULT_MESSAGES))
def test_after_a_fault_the_next_source_is_tried(server, make_cfg, fault):
    good = make_cfg([server.url("ok")])
    countries.refresh(good)  # a cache, so that a half list is refused
    cfg = make_cfg([server.url(fault), server.url("redirect")])
    done, failed = countries.refresh(cfg)
    assert failed == []
    assert done[0].url == server.url("redirect", "ru.zone") and not done[0].changed
    assert cache(cfg)[0] == RU.encode()


def test_a_list_half_the_size_is_accepted_with_force(server, make_cfg):
    countries.refresh(make_cfg([server.url("ok")]))
    cfg = make_cfg([server.url("half")])
    assert countries.refresh(cfg)[1]
    done, failed = countries.refresh(cfg, force=True)
    assert failed == [] and done[0].aggregated < RU_MEMBERS / 2 + 1 and done[0].previous == RU_MEMBERS
    assert cache(cfg)[0] == b"".join(RU.encode().splitlines(True)[:102])


def test_a_smaller_list_above_half_is_accepted(server, make_cfg, tmp_path):
    countries.refresh(make_cfg([server.url("ok")]))
    smaller = "".join(RU.splitlines(True)[:-60])  # 140 of 200 /24s left
    (tmp_path / "www" / "ru.zone").write_bytes(smaller.encode())
    done, failed = countries.refresh(make_cfg([server.url("ok")]))
    assert failed == [] and done[0].changed and done[0].summary().startswith("ru: 144 entries (142 after")


def test_without_a_cache_the_size_check_does_not_apply(server, make_cfg):
    done, failed = countries.refresh(make_cfg([server.url("half")]))
    assert failed == [] and done[0].previous is None and "new" in done[0].summary()


def test_file_sources_and_the_size_cap(server, make_cfg, tmp_path):
    www = tmp_path / "www"
    cfg = make_cfg(["file://%s/missing-{cc}.zone" % www, "file://%s/{cc}.zone" % www])
    done, failed = countries.refresh(cfg)
    assert failed == [] and done[0].url == "file://%s/ru.zone" % www
    capped = make_cfg([server.url("ok"), "file://%s/{cc}.zone" % www], max_bytes=1024)
    done, failed = countries.refresh(capped)
    assert "too large" in failed[0][1] and "No such file" not in failed[0][1]
    assert "file://%s/ru.zone: too large" % www in failed[0][1]


def test_every_used_set_is_refreshed_and_failures_are_per_set(server, make_cfg, tmp_path):
    (tmp_path / "www" / "ua.zone").unlink()
    cfg = make_cfg([server.url("ok")], exclude=("ru", "ua", "MY_SET"))
    assert listcache.used(cfg) == ["ru", "ua"]  # external sets are not downloaded
    done, failed = countries.refresh(cfg)
    assert [r.cc for r in done] == ["ru"] and [cc for cc, _ in failed] == ["ua"]
    assert listcache.missing_cache(cfg, ["ru", "ua"]) == ["ua"]


def test_no_sources_is_a_clear_failure(make_cfg):
    done, failed = countries.refresh(make_cfg([]))
    assert failed == [("ru", "ru: no usable list, nothing cached yet; tried no sources "
                              "(ipsets.sources is empty)")]


def test_metadata_that_does_not_match_the_list_is_ignored(server, make_cfg):
    cfg = make_cfg([server.url("ok")])
    countries.refresh(cfg)
    with open(sets.zone_path(cfg.data_dir, "ru"), "a") as fh:
        fh.write("198.51.100.0/24\n")  # edited by hand
    assert listcache.read_meta(cfg.data_dir, "ru") == {}
    assert listcache.cached_members(cfg.data_dir, "ru") == RU_MEMBERS + 1


def test_config_keys_for_sources(make_cfg, tmp_path):
    cfg = make_cfg(["https://a.example/{cc}.zone"])
    assert (cfg.ipset_timeout, cfg.ipset_max_bytes) == (1, 8 << 20)
    default = config.validate({"advanced": {"rt_tables": str(tmp_path / "rt_tables")}})
    assert default.ipset_sources[0].startswith("https://www.ipdeny.com/") and len(default.ipset_sources) == 2
    assert default.ipset_timeout == 30
    with pytest.raises(config.ConfigError) as e:
        config.validate({"ipsets": {"timeout": 0, "max_bytes": "lots"},
                         "advanced": {"rt_tables": str(tmp_path / "rt_tables")}})
    assert sorted(p.split(":")[0] for p in e.value.problems) == ["ipsets.max_bytes", "ipsets.timeout"]


def test_aggregate_cache_is_used_and_invalidated(tmp_path):
    from vpn_director import sets
    zone = tmp_path / "ru.zone"
    zone.write_text("77.88.0.0/17\n77.88.128.0/17\n5.255.255.0/24\n")
    first = sets.load_country(str(zone))
    assert sorted(first[0]) == ["5.255.255.0/24", "77.88.0.0/16"] and first[1] == 3
    cache = tmp_path / "ru.agg"
    assert cache.exists()
    real = sets.read_prefixes
    sets.read_prefixes = None  # the list is not parsed again: the cache answers
    try:
        assert sets.load_country(str(zone)) == first
    finally:
        sets.read_prefixes = real
    head, body = cache.read_bytes().split(b"\n", 1)
    cache.write_bytes(head + b"\n" + b"\x01" * len(body))  # damaged: the checksum catches it
    assert sets.load_country(str(zone)) == first
    zone.write_text("10.0.0.0/8\n")  # a new list changes size and mtime: the cache is rebuilt
    assert list(sets.load_country(str(zone))[0]) == ["10.0.0.0/8"]
    cache.write_bytes(b"garbage")
    assert list(sets.load_country(str(zone))[0]) == ["10.0.0.0/8"]


def test_update_leaves_the_aggregate_for_the_apply_that_follows(server, make_cfg, monkeypatch):
    cfg = make_cfg([server.url("ok")])
    assert countries.refresh(cfg)[1] == []
    zone = sets.zone_path(cfg.data_dir, "ru")
    monkeypatch.setattr(sets, "read_prefixes", None)  # the list must not be parsed again
    members, listed = sets.load_country(zone)
    assert len(members) == RU_MEMBERS and listed == 204
    assert "77.88.0.0/16" in members and "5.255.254.0/23" in members


@pytest.mark.parametrize("source", ["file:///etc/shadow?{cc}", "file:///etc/shadow#{cc}",
                                    "https://a.example/x?cc={cc}", "https://{cc}.example/list.zone"])
def test_cc_outside_the_url_path_is_refused(make_cfg, source):
    with pytest.raises(config.ConfigError) as e:
        make_cfg(["https://a.example/{cc}.zone", source])
    assert [p.split(":")[0] for p in e.value.problems] == ["ipsets.sources[1]"]
    assert "{cc} in its path" in e.value.problems[0]
    assert make_cfg(["https://a.example/{cc}.zone?v=2"]).ipset_sources == ["https://a.example/{cc}.zone?v=2"]


def test_a_refused_list_is_never_quoted_in_the_error(make_cfg, tmp_path):
    secret = tmp_path / "shadow-ru"
    secret.write_text("root:$6$s3cr3t:19000:0:99999:7:::\n")
    late = tmp_path / "late-ru"
    late.write_text("77.88.0.0/17\n# fine so far\nadmin:s3cr3t\n")
    cfg = make_cfg(["file://%s/shadow-{cc}" % tmp_path, "file://%s/late-{cc}" % tmp_path])
    done, failed = countries.refresh(cfg)
    message = failed[0][1]
    assert "shadow-ru: not a list of IPv4 CIDRs (line 1)" in message
    assert "late-ru: not a list of IPv4 CIDRs (line 3)" in message
    assert "s3cr3t" not in message and "99999" not in message and "admin" not in message


def test_an_answer_that_is_not_http_is_never_quoted_in_the_error(make_cfg):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def banner():  # a local service that is no web server, like sshd
        conn, _ = listener.accept()
        conn.sendall(b"SSH-2.0-s3cr3t-banner\r\n")
        conn.recv(4096)
        conn.close()
    t = threading.Thread(target=banner, daemon=True)
    t.start()
    try:
        done, failed = countries.refresh(make_cfg(["http://127.0.0.1:%d/{cc}" % listener.getsockname()[1]]))
    finally:
        t.join(5)
        listener.close()
    assert "not a valid HTTP answer (BadStatusLine)" in failed[0][1] and "s3cr3t" not in failed[0][1]


@pytest.mark.parametrize("how", ["http", "file"])
def test_a_list_starting_with_a_utf8_bom_is_accepted(server, make_cfg, tmp_path, how):
    (tmp_path / "www" / "ru.zone").write_bytes(b"\xef\xbb\xbf" + RU.encode())
    source = server.url("ok") if how == "http" else "file://%s/{cc}.zone" % (tmp_path / "www")
    done, failed = countries.refresh(make_cfg([source]))
    assert failed == [] and (done[0].entries, done[0].aggregated) == (204, RU_MEMBERS)
    zone = sets.zone_path(str(tmp_path / "data"), "ru")
    with open(zone, "rb") as fh:
        assert fh.read() == RU.encode()  # cached without the BOM: apply reads it as any other list
    assert len(sets.read_prefixes(zone)) == 204
    assert listcache.read_meta(str(tmp_path / "data"), "ru")["sha256"] == hashlib.sha256(RU.encode()).hexdigest()
