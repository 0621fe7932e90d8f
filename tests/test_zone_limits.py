"""Zone files read from data_dir are bounded and never empty: a corrupt or emptied list is an error
naming the file, not a memory blow-up or an emptied live set."""

import pytest

from vpn_director import desired, sets
from vpn_director.errors import DataError


def refused(path):
    with pytest.raises(DataError) as e:
        sets.load_country(str(path))
    assert not path.with_suffix(".agg").exists()  # nothing cached from it
    return str(e.value)


def test_a_zone_file_over_the_size_cap_is_refused_before_reading(tmp_path):
    zone = tmp_path / "ru.zone"
    with open(zone, "wb") as fh:  # sparse: costs no disk, and no memory unless read
        fh.write(b"10.0.0.0/8\n")
        fh.truncate(sets.ZONE_MAX_BYTES + 1)
    msg = refused(zone)
    assert msg.startswith("country list %s: %d bytes, more than the 64 MiB" % (zone, sets.ZONE_MAX_BYTES + 1))
    assert "vpn-director update" in msg


def test_a_line_over_the_length_cap_is_refused_with_its_number(tmp_path):
    zone = tmp_path / "ru.zone"
    zone.write_text("10.0.0.0/8\n" + "1" * (1 << 20))  # a megabyte without a newline
    msg = refused(zone)
    assert msg.startswith("%s:2: line longer than 4096 characters" % zone), msg


def test_a_line_at_the_length_cap_is_read(tmp_path):
    zone = tmp_path / "ru.zone"
    zone.write_text("# %s\n10.0.0.0/8\n# %s" % ("x" * (sets.ZONE_MAX_LINE - 3), "y" * (sets.ZONE_MAX_LINE - 2)))
    assert list(sets.load_country(str(zone))[0]) == ["10.0.0.0/8"]


@pytest.mark.parametrize("text", ["", "\n\n", "# emptied by hand\n"])
def test_an_empty_zone_file_is_refused(tmp_path, text):
    zone = tmp_path / "ru.zone"
    zone.write_text(text)
    assert refused(zone) == ("country list %s has no entries; run `vpn-director update` to download it again"
                             % zone)


def test_an_empty_zone_file_stops_the_build(build_cfg, tmp_path):
    (tmp_path / "ipsets" / "ru.zone").write_text("")
    cfg = build_cfg({"xray": {"clients": ["192.168.50.10"], "exclude_sets": ["ru"]}})
    with pytest.raises(DataError, match="ru.zone has no entries"):
        desired.build(cfg, resolver=lambda name: [])
