"""The watchdog's command lines are parsed without argparse, exactly as argparse parses them."""

import pytest

from vpn_director import cli

SAME = [
    ["apply", "--if-changed"],
    ["apply", "xray", "--if-changed"],
    ["apply", "--if-changed", "tunnel"],
    ["-c", "/opt/vpn-director/vpn-director.json", "apply", "--if-changed"],
    ["apply", "-c", "/x.json", "--if-changed", "-q"],
    ["--config=/x.json", "-v", "apply", "all", "--if-changed"],
    ["--quiet", "apply", "--if-changed", "--verbose"],
]
OTHERS = [
    ["apply"], ["apply", "--dry-run", "--if-changed"], ["-qv", "apply", "--if-changed"], ["--help"],
    ["apply", "--if-changed", "extra"], ["-c", "", "apply", "--if-changed"], ["apply", "xray", "tunnel", "--if-changed"],
    ["status", "--if-changed"], ["-c", "a.json", "-c", "b.json", "apply", "--if-changed"], ["apply", "-c"],
    ["xray", "apply", "--if-changed"], ["-cfile.json", "apply", "--if-changed"],
]


@pytest.mark.parametrize("argv", SAME, ids=" ".join)
def test_the_watchdog_lines_parse_as_argparse_parses_them(argv):
    assert vars(cli.watchdog_args(argv)) == vars(cli.build_parser("apply").parse_args(argv))


@pytest.mark.parametrize("argv", OTHERS, ids=" ".join)
def test_everything_else_is_left_to_argparse(argv):
    assert cli.watchdog_args(argv) is None
