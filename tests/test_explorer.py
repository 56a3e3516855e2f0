"""The explorer page end to end in a real headless browser (Debian's chromium driven by selenium): pages load
without console errors, the leaderboard sorts, filters and pages, an architecture page draws its curves, an unknown
hash says so, the WS view draws its scatters. NASBENCH_PTB_SCREENSHOTS=DIR also saves screenshots of the shipped
tables there (the README's come from this test), else into the test's folder."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from nasbench_ptb.space import parse, space

from helpers import key_valid, synthetic_table, with_proxies

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
if not (CHROMIUM and DRIVER):
    pytest.skip("Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)",
                allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


def _serve(tables):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "nasbench_ptb.cli", "serve", "--port", str(port), "--tables",
                             *map(str, tables)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(url + "/health", timeout=1).read()
            return proc, url
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode()) from None
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from nasbench_ptb import schema

    d = tmp_path_factory.mktemp("tables")
    base = synthetic_table(d / "2node-x.h5")
    synflow = -key_valid(np.arange(32)).astype(float)  # agrees with training; hidden_cov reverses it
    schema.write(with_proxies(base, [0, 1], {"synflow": synflow[:, None], "hidden_cov": -synflow[:, None]},
                              {"synflow": 6.4}), d / "2node-x.h5")
    proc, url = _serve([d / "2node-x.h5"])
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=DRIVER))
    yield driver
    driver.quit()


def visit(browser, url):
    browser.execute_script("document.body && delete document.body.dataset.ready")
    browser.get(url)
    WebDriverWait(browser, 15).until(lambda d: d.execute_script("return document.body.dataset.ready"))
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    return errors


def click_and_wait(browser, element):
    browser.execute_script("delete document.body.dataset.ready")
    element.click()
    WebDriverWait(browser, 15).until(lambda d: d.execute_script("return document.body.dataset.ready"))


def ids(browser):
    return [int(tr.get_attribute("data-id")) for tr in browser.find_elements(By.CSS_SELECTOR, "#leaderboard tbody tr")]


def test_leaderboard_sorts_filters_and_pages(server, browser):
    assert visit(browser, f"{server}/#/?space=2node&limit=10") == []
    # synthetic table: final valid ppl = 100 + key_valid(id) (+ seed): best 27, then 18 (key 1), 9 (key 2)
    assert ids(browser)[:3] == [27, 18, 9] and len(ids(browser)) == 10
    assert browser.find_element(By.ID, "page-info").text == "1–10 of 32"
    click_and_wait(browser, browser.find_element(By.ID, "next"))
    assert browser.find_element(By.ID, "page-info").text == "11–20 of 32" and len(ids(browser)) == 10
    click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "th[data-sort='valid_ppl']"))  # same key: desc
    assert ids(browser)[0] == 4  # key_valid 31: the worst with a value; missing/diverged stay last
    click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "th[data-sort='ws:0']"))
    assert ids(browser)[0] == 4  # WS ppl = 1000 − key_valid: the standalone worst is the WS best
    browser.execute_script("delete document.body.dataset.ready")
    Select(browser.find_element(By.ID, "f-op")).select_by_value("identity")
    WebDriverWait(browser, 15).until(lambda d: d.execute_script("return document.body.dataset.ready"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#leaderboard tbody tr td:nth-child(2)")
    assert rows and all("identity" in r.text for r in rows)
    assert visit(browser, f"{server}/#/?space=2node&limit=40") == []
    row = browser.find_element(By.CSS_SELECTOR, "#leaderboard tbody tr[data-id='19'] a.iso")
    click_and_wait(browser, row)  # sigmoid:0|identity:0's iso class: it and identity:0|sigmoid:0
    assert sorted(ids(browser)) == [19, 26]
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


def test_architecture_page_draws_its_curves_and_twins(server, browser):
    g = parse("sigmoid:0|identity:0")  # id 19, ok on both seeds; its twin is id 26
    assert visit(browser, f"{server}/#/arch/{g.hash}") == []
    assert browser.find_element(By.TAG_NAME, "h2").text == "sigmoid:0|identity:0"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#standalone-curves path.curve")) == 2  # two seeds
    assert len(browser.find_elements(By.CSS_SELECTOR, "#ws-curves path.curve")) == 2  # WS seed 2 diverged
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.cell circle")) == 3
    twins = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#twins a")]
    assert twins == ["identity:0|sigmoid:0"]  # swapping the two nodes that both read s0
    assert "rank" in browser.find_element(By.ID, "standalone-summary").text


def test_unknown_hash_says_not_found(server, browser):
    errors = visit(browser, f"{server}/#/arch/0123456789abcdef")
    assert all("404" in e["message"] for e in errors), errors  # the API's 404 is the only thing Chrome logs
    assert "Not found" in browser.find_element(By.ID, "not-found").text


def test_ws_view_draws_a_scatter_per_super_net(server, browser):
    assert visit(browser, f"{server}/#/ws/2node") == []
    figs = browser.find_elements(By.CSS_SELECTOR, "figure.ws-scatter")
    assert len(figs) == 3 and len(figs[0].find_elements(By.TAG_NAME, "circle")) == 30  # the 30 ok architectures
    assert "tau-b -0.9" in figs[0].text or "tau-b -1.0" in figs[0].text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#tau-over-training path.curve")) == 2


def test_proxies_view_draws_a_scatter_per_proxy_and_the_arch_page_lists_them(server, browser):
    assert visit(browser, f"{server}/#/proxies/2node") == []
    figs = {f.get_attribute("data-proxy"): f for f in browser.find_elements(By.CSS_SELECTOR, "figure.proxy-scatter")}
    assert len(figs) == 7 and len(figs["synflow"].find_elements(By.TAG_NAME, "circle")) == 30
    assert "tau-b 0.9" in figs["synflow"].text or "tau-b 1.0" in figs["synflow"].text  # 3 diverged: not exactly 1
    assert "tau-b -0.9" in figs["hidden_cov"].text or "tau-b -1.0" in figs["hidden_cov"].text
    assert figs["grasp"].find_elements(By.TAG_NAME, "circle") == []  # never computed: nothing drawn
    row = browser.find_element(By.CSS_SELECTOR, "#proxy-agreement tr[data-proxy='synflow']").text
    assert row.split()[-2:] == ["31", "6.4"]  # n: the 31 attempted cells; seconds as measured
    assert len(browser.find_elements(By.CSS_SELECTOR, "#proxy-tau-by-epoch path.curve")) >= 2
    assert visit(browser, f"{server}/#/arch/{space('2node').from_id(27).hash}") == []
    cells = [tr.text for tr in browser.find_elements(By.CSS_SELECTOR, "#proxies tbody tr")]
    assert len(cells) == 7 and any(c.startswith("synflow") and c.endswith(" 1") for c in cells)  # 27: the best
    assert visit(browser, f"{server}/#/?space=2node") == []
    assert browser.find_elements(By.CSS_SELECTOR, "a[href='#/proxies/2node']")


def test_screenshots_of_the_shipped_tables(browser, tmp_path):
    """The shipped tables load in the explorer without errors; the screenshots go to $NASBENCH_PTB_SCREENSHOTS
    (the README's come from there) or to the test's own folder."""
    out = os.environ.get("NASBENCH_PTB_SCREENSHOTS") or tmp_path
    from nasbench_ptb import api

    proc, url = _serve(list(api.default_tables().values()))
    try:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        best = api.spaces(["2node"])[0].best(k=1)[0]
        for name, page in (("leaderboard", "#/?space=2node&limit=15"), ("arch", f"#/arch/{best.hash}"),
                           ("ws", "#/ws/2node"), ("proxies", "#/proxies/2node")):
            assert visit(browser, f"{url}/{page}") == []
            browser.save_screenshot(str(out / f"explorer-{name}.png"))
            assert (out / f"explorer-{name}.png").stat().st_size > 10_000
    finally:
        proc.terminate()
        proc.wait(timeout=10)
