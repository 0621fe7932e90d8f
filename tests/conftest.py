import itertools
import os

import pytest

from netns import Router, can_use_netns

# Test runs stay out of the machine's syslog; tests of logging point VPD_SYSLOG at their own socket.
os.environ.setdefault("VPD_SYSLOG", "off")

BACKENDS = ["legacy", "nft"]
_NETNS = None


def netns_available():
    global _NETNS
    if _NETNS is None:
        _NETNS = can_use_netns()
    return _NETNS


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs root and network namespaces")
    for item in items:
        if "kernel" in item.keywords and not netns_available():
            item.add_marker(skip)


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def router(request, backend, tmp_path):
    """A router namespace with br0; the tool runs inside it with the chosen iptables backend."""
    return Router(request.addfinalizer, backend, tmp_path)


_labs = itertools.count()


@pytest.fixture
def make_lab(request, backend, tmp_path):
    """Labs (vpn_director.lab.Lab) of the test's own, each removed afterwards: the cleanup is
    registered before anything exists, and the namespace prefix (pid, counter) is unique."""
    from vpn_director.lab import Lab

    def make(**kw):
        n = next(_labs)
        lab = Lab("vl%d_%d" % (os.getpid() % 100000, n), workdir=str(tmp_path / ("lab%d" % n)), backend=backend,
                  **kw)
        request.addfinalizer(lab.down)
        return lab
    return make


@pytest.fixture
def lab(make_lab):
    return make_lab()


@pytest.fixture
def tracer(build_cfg):
    """(raw config, src, dst[, proto]) -> the offline trace verdict."""
    from vpn_director import desired, trace

    def run(raw, src, dst, proto="tcp"):
        cfg = build_cfg(raw)
        return trace.trace(trace.from_desired(desired.build(cfg), cfg), src, dst, proto)
    return run


@pytest.fixture
def build_cfg(tmp_path):
    """raw config dict -> validated Config, with a small ru list and rt_tables in tmp_path."""
    from vpn_director import config
    (tmp_path / "ipsets").mkdir(exist_ok=True)
    (tmp_path / "ipsets" / "ru.zone").write_text("77.88.0.0/16\n# comment\n5.255.255.0/24\n")
    rt = tmp_path / "rt_tables"
    rt.write_text("111 wgc1\n114 ovpnc3\n")

    def build(raw):
        return config.validate(dict(raw, data_dir=str(tmp_path), advanced=dict(raw.get("advanced", {}),
                                                                               rt_tables=str(rt))))
    return build
