"""The commands the watchdog and the hooks run load only what they need: a real `apply`, a no-op
`apply --if-changed` and `status`, each in a fresh interpreter on a real kernel, with the web UI
and the bot configured, then a look at sys.modules."""

import json
import sys

import pytest

from test_apply_kernel import FULL

pytestmark = pytest.mark.kernel

RUN = """
import json, sys
from vpn_director import cli
code = cli.main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""

# Never for apply and status: other commands' modules and the download code (and the front ends)
OTHER_COMMANDS = ("vpn_director.trace", "vpn_director.lab", "vpn_director.lab_agent", "vpn_director.lab_xray",
                  "vpn_director.install", "vpn_director.countries")
ONLY_CHECK_AND_REPORTS = ("vpn_director.lint", "vpn_director.reports")  # nor these for apply
FRONT_ENDS = ("vpn_director.web", "vpn_director.bot")
SETTINGS = ("vpn_director.web.settings", "vpn_director.bot.settings")  # read with the config, nothing else
# Heavy standard modules the watchdog's path must not pay for.
HEAVY = ("dataclasses", "inspect", "ast", "typing", "logging", "socket", "ssl", "http.client", "urllib.request",
         "shutil", "tempfile", "hashlib", "argparse")


def modules(router, cfg, *args):
    p = router.ns.run([sys.executable, "-c", RUN, "-c", cfg] + list(args), check=False, env=router.env())
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.splitlines()[-1])
    return out["code"], set(out["modules"])


def front_end_modules(mods):
    return sorted(m for m in mods if m.startswith(FRONT_ENDS) and m not in SETTINGS + FRONT_ENDS)


@pytest.fixture
def cfg(router, tmp_path):
    token = tmp_path / "token"
    token.write_text("123:abc\n")
    token.chmod(0o600)
    return router.config(dict(FULL, webui={"port": 8444}, telegram={"token_file": str(token), "admins": [1]}))


def test_the_watchdog_loads_nothing_it_does_not_use(router, cfg):
    code, mods = modules(router, cfg, "apply")
    assert code == 0
    assert not mods & set(OTHER_COMMANDS + ONLY_CHECK_AND_REPORTS) and front_end_modules(mods) == []
    code, mods = modules(router, cfg, "apply", "--if-changed")
    assert code == 0
    assert not mods & set(OTHER_COMMANDS + ONLY_CHECK_AND_REPORTS), sorted(mods & set(OTHER_COMMANDS))
    assert front_end_modules(mods) == []
    assert not mods & set(HEAVY), sorted(mods & set(HEAVY))
    assert "vpn_director.setcheck" in mods  # the check it made was the cheap one


def test_status_loads_no_other_command_and_no_front_end(router, cfg):
    modules(router, cfg, "apply")
    code, mods = modules(router, cfg, "status")
    assert code == 0
    assert not mods & set(OTHER_COMMANDS), sorted(mods & set(OTHER_COMMANDS))
    assert front_end_modules(mods) == []
