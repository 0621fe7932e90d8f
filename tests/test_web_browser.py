"""The web UI in a real browser (Debian's chromium through chromedriver): log in, move a device
to a tunnel and see the status change, trace it, log out; every page at 360 px without
horizontal scrolling, light and dark; no console or CSP errors. Screenshots of each page go to
tests/artifacts/web/. The daemon runs in a router namespace, so the edits apply to a real kernel."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from netns import Router
from webtest import SECRET_PASSWORD, SECRET_UUID, Forward, ns_connect, store_servers, write_shadow

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ARTIFACTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "artifacts", "web")
PAGES = [("devices", "Devices"), ("status", "Status"), ("exclusions", "Exclusions"), ("servers", "Servers"),
         ("logs", "Logs"), ("history", "History"), ("trace?src=192.168.50.10", "Trace")]

webdriver = pytest.importorskip("selenium.webdriver")
pytestmark = [pytest.mark.kernel, pytest.mark.browser,
              pytest.mark.skipif(not (os.access(CHROMIUM, os.X_OK) and os.access(DRIVER, os.X_OK)),
                                 reason="needs Debian's chromium and chromium-driver")]


class Site:
    pass


def _driver(profile):
    from selenium.webdriver.chrome.service import Service
    os.environ.update(SE_OFFLINE="true", SE_AVOID_STATS="true")  # Selenium Manager stays off the network
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--ignore-certificate-errors", "--window-size=1280,900",
                "--user-data-dir=%s" % profile):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(DRIVER), options=opts)


@pytest.fixture(scope="module")
def site(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    router = Router(request.addfinalizer, "nft", tmp)
    (tmp / "leases").write_text("0 aa:bb:cc:00:00:10 192.168.50.10 laptop *\n"
                                "0 aa:bb:cc:00:00:20 192.168.50.20 phone *\n0 aa:bb:cc:00:00:30 192.168.50.30 tv *\n")
    store_servers(router.data)
    path = router.config({
        "xray": {"clients": ["192.168.50.10"], "servers": ["203.0.113.10"]},
        "tunnel_director": {"tunnels": {"wgc1": {"clients": []}, "ovpnc1": {"clients": ["192.168.50.30"]}}},
        "names": {"192.168.50.30": "Living room TV"},
        "advanced": {"leases_file": str(tmp / "leases"), "log": {"file": str(tmp / "vpd.log")}},
        "webui": {"listen": ["127.0.0.1"], "shadow_file": write_shadow(tmp / "shadow", "browser-pw")}})
    router.vpd("apply", config=path, check=0)
    out = open(str(tmp / "web.out"), "w")
    proc = subprocess.Popen(["ip", "netns", "exec", router.ns.name, sys.executable, "-m", "vpn_director", "-c", path,
                             "web"], stdout=out, stderr=subprocess.STDOUT, env=router.env())
    request.addfinalizer(lambda: (proc.send_signal(signal.SIGTERM), proc.wait(timeout=30)))
    cafile = str(router.data / "web" / "cert.pem")
    for _ in range(300):
        assert proc.poll() is None, (tmp / "web.out").read_text()
        try:
            if os.path.exists(cafile):
                ns_connect(router.ns.name, ("127.0.0.1", 8444), timeout=1).close()
                break
        except OSError:
            pass
        time.sleep(0.1)
    fwd = Forward(router.ns.name, ("127.0.0.1", 8444))
    request.addfinalizer(fwd.close)
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    os.makedirs(ARTIFACTS)
    s = Site()
    s.url = "https://127.0.0.1:%d/" % fwd.port
    s.driver = _driver(tmp / "profile")
    request.addfinalizer(s.driver.quit)
    return s


def wait(driver, check, timeout=30):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: check(d))


def css(driver, selector):
    from selenium.webdriver.common.by import By
    return driver.find_elements(By.CSS_SELECTOR, selector)


def text_of(driver, selector):
    found = css(driver, selector)
    return found[0].text if found else ""


def shot(driver, name):
    driver.save_screenshot(os.path.join(ARTIFACTS, name + ".png"))


def go(driver, page, title):
    driver.execute_script("location.hash = arguments[0]", "#/" + page)
    wait(driver, lambda d: text_of(d, "main h1") == title and not css(d, "main > p.muted:only-child"))


def log_in(driver, url, password="browser-pw"):
    driver.get(url)
    wait(driver, lambda d: css(d, "#login"))
    user = css(driver, "#username")[0]
    user.clear()
    user.send_keys("admin")
    css(driver, "#password")[0].send_keys(password)
    css(driver, "#login button[type=submit]")[0].click()
    wait(driver, lambda d: css(d, "#devices li.device"))


def console_problems(driver):
    entries = driver.get_log("browser")
    return [e for e in entries if e["level"] == "SEVERE" or "Content Security Policy" in e["message"]]


def device(driver, address):
    found = css(driver, 'li.device[data-address="%s"]' % address)
    return found[0] if found else None


def test_move_a_device_see_the_status_trace_and_log_out(site):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    d = site.driver
    d.get(site.url)
    wait(d, lambda d: css(d, "#login"))
    shot(d, "login")
    log_in(d, site.url)
    assert device(d, "192.168.50.20").find_element(By.CSS_SELECTOR, ".badge").text == "direct"
    assert "Living room TV" in device(d, "192.168.50.30").text
    shot(d, "devices")
    go(d, "status", "Status")
    assert "wgc1" not in text_of(d, "#tunnels") and "ovpnc1" in text_of(d, "#tunnels")

    go(d, "devices", "Devices")
    card = device(d, "192.168.50.20")
    Select(card.find_element(By.CSS_SELECTOR, "select.via")).select_by_value("wgc1")
    card.find_element(By.CSS_SELECTOR, "button.move").click()
    wait(d, lambda d: "client 192.168.50.20 (phone): added to wgc1" in text_of(d, "#toast"))
    assert "192.168.50.20 now goes via wgc1" in text_of(d, "#toast")
    wait(d, lambda d: device(d, "192.168.50.20").find_element(By.CSS_SELECTOR, ".badge").text == "wgc1")
    shot(d, "devices-moved")

    go(d, "status", "Status")
    assert "wgc1" in text_of(d, "#tunnels")
    assert "The kernel matches the config." in text_of(d, "#status-summary")
    shot(d, "status")

    go(d, "devices", "Devices")
    device(d, "192.168.50.20").find_element(By.LINK_TEXT, "Trace").click()
    wait(d, lambda d: "wgc1" in text_of(d, "#trace-result .verdict"))
    assert "phone (192.168.50.20) → 8.8.8.8" in text_of(d, "#trace-result .verdict")
    shot(d, "trace")

    css(d, "#logout")[0].click()
    wait(d, lambda d: css(d, "#login") and "Logged out." in text_of(d, "#login-error"))
    session = d.execute_async_script(
        "fetch('/api/v1/session').then(r => r.json()).then(arguments[arguments.length - 1])")
    assert session["user"] is None
    assert console_problems(d) == []


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_page_fits_a_phone(site, scheme):
    d = site.driver
    d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 360, "height": 740, "deviceScaleFactor": 1,
                                                             "mobile": True})
    d.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": scheme}]})
    try:
        log_in(d, site.url)
        background = d.execute_script("return getComputedStyle(document.body).backgroundColor")
        assert background == ("rgb(18, 22, 28)" if scheme == "dark" else "rgb(246, 247, 249)")
        for page, title in PAGES:
            go(d, page, title)
            if page.startswith("trace"):
                wait(d, lambda d: text_of(d, "#trace-result .verdict"))
            width = d.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
            assert width[0] <= width[1], (page, width)
            shot(d, "360-%s-%s" % (scheme, page.split("?")[0]))
            if page == "servers":
                assert "First" in d.page_source and "Second" in d.page_source
                assert SECRET_UUID not in d.page_source and SECRET_PASSWORD not in d.page_source
        css(d, "#logout")[0].click()
        wait(d, lambda d: css(d, "#login"))
    finally:
        d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        d.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    assert console_problems(d) == []
