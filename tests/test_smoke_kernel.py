import pytest

pytestmark = pytest.mark.kernel

def test_apply_then_noop(router):
    cfg = router.config({"xray": {"clients": ["192.168.50.10"], "exclude_sets": ["ru"]}})
    router.vpd("apply", config=cfg, check=0)
    before = router.snapshot()
    out = router.vpd("apply", config=cfg, check=0)
    assert "no changes" in out.stdout
    assert router.snapshot() == before
