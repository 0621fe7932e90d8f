import pytest

from netns import Router, can_use_netns

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
