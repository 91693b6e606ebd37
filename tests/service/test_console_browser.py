"""The compliance console in a real browser: Debian's headless Chromium driven by selenium through the
system chromedriver (never a downloaded one). Signs in, fails a forget (as the API would), files one by
keyboard alone, sees it in the deletion requests with its state, opens its certificate, goes back, and
checks labels, contrast and that no request id or reason reaches a URL or the logs. Screenshots go to
the test's directory, and to docs/img/ (console_*.png, shown in the README) with
PROMPTFORGET_DOCS_SCREENSHOTS=1 (``make screenshots``).

Where Chromium, chromedriver or selenium is missing the tests skip, except under CI (``CI`` set), where
they fail: ``make install`` sets them up (apt-get install chromium chromium-driver)."""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

import pytest

from promptforget.store.ledger import Ledger, keygen

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"  # Debian's chromium-driver, matched to the browser
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
REASON = "Art. 17 GDPR erasure request from a data subject"
REQUEST_ID = "case-2026-0042"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def browser():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("the selenium package")
    if missing:
        why = f"the browser tests need {', '.join(missing)} (make install: apt-get install chromium chromium-driver)"
        if _in_ci():
            pytest.fail(why)
        pytest.skip(why)
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never fetch a driver or a browser
    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--force-device-scale-factor=1", "--lang=en-US"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def screenshot(driver, out: Path, name: str) -> Path:
    """A full-page PNG (the window grown to the page's height) in ``out``, and in docs/img on request."""
    driver.execute_script("window.scrollTo(0, 0)")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(int(height) + 400, 600), 6000))
    driver.execute_script("window.scrollTo(0, 0)")
    path = out / f"console_{name}.png"
    driver.save_screenshot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    if os.environ.get("PROMPTFORGET_DOCS_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_IMG / path.name)
    driver.set_window_size(1280, 1000)
    return path


def tab_to(driver, element_id: str, limit: int = 60) -> int:
    """Press Tab from the top of the page until ``element_id`` has the focus; the number of presses."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    driver.find_element("tag name", "body").click()
    for n in range(1, limit + 1):
        ActionChains(driver).send_keys(Keys.TAB).perform()
        if driver.switch_to.active_element.get_attribute("id") == element_id:
            return n
    raise AssertionError(f"#{element_id} not reached with {limit} Tab presses")


def navigates(driver, action) -> None:
    """Run ``action`` (a click, an Enter) and wait until the page it loads has replaced this one."""
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element("tag name", "html")
    action()
    WebDriverWait(driver, 60).until(EC.staleness_of(old))
    WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.readyState") == "complete")


def typed(driver, *keys) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(*keys).perform()


CONTRAST_JS = """
function bg(el) {
  for (; el; el = el.parentElement) {
    const c = getComputedStyle(el).backgroundColor;
    if (c && c !== 'transparent' && !(c.startsWith('rgba') && c.endsWith(', 0)'))) return c;
  }
  return 'rgb(255, 255, 255)';
}
return Array.from(document.querySelectorAll(arguments[0])).map(el => [el.tagName + '.' + el.className,
  getComputedStyle(el).color, bg(el)]);
"""


def luminance(css: str) -> float:
    r, g, b = (int(x) / 255 for x in re.findall(r"\d+", css)[:3])
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(fg: str, bg: str) -> float:
    hi, lo = sorted((luminance(fg), luminance(bg)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


@pytest.fixture
def console_run(text_run, tmp_path, tiny_audit):
    key_file = tmp_path / "keys" / "ledger.key"
    key_file.parent.mkdir()
    keygen(key_file)
    tiny_audit(text_run)
    from promptforget.pfm.card import write_model_card

    write_model_card(text_run)  # the model card whose key facts the console shows
    return text_run, str(key_file)


def test_console_in_a_real_browser(browser, console_run, serve, admin_token, tmp_path, caplog):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    for name in ("promptforget", "uvicorn", "uvicorn.access", "uvicorn.error"):  # the server's logs, not selenium's
        caplog.set_level(logging.DEBUG, logger=name)
    run, key_file = console_run
    d = browser
    with serve(run, ledger_key_file=key_file) as (url, _):
        # not signed in: the console sends the browser to the sign-in form
        d.get(url + "/console")
        assert d.current_url == url + "/console/login" and d.find_element(By.CSS_SELECTOR, "label[for=token]")
        screenshot(d, tmp_path, "login")
        navigates(d, lambda: d.find_element(By.ID, "token").send_keys("not-the-token-0123456789", Keys.ENTER))
        assert "wrong token" in d.find_element(By.CSS_SELECTOR, "[role=alert]").text
        navigates(d, lambda: d.find_element(By.ID, "token").send_keys(admin_token, Keys.ENTER))
        assert d.current_url == url + "/console"
        assert d.find_element(By.ID, "ledger-status").text.startswith("Verified")
        assert "alpha, beta, gamma, delta" == d.find_element(By.ID, "active-classes").text
        assert "text-classification" in d.find_element(By.ID, "model").text  # a fact from the model card
        assert "leaks more than the retrained reference" in d.find_element(By.ID, "audit-headline").text
        img = d.find_element(By.CSS_SELECTOR, "#audit figure img")
        assert d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 0  # the plot loads

        # a bad request id: the API's own 422 message, nothing forgotten, the form keeps what was typed
        d.find_element(By.ID, "request_id").send_keys("bad id!")
        d.find_element(By.ID, "reason").send_keys(REASON)
        d.find_element(By.CSS_SELECTOR, "label[for=class-1]").click()
        navigates(d, d.find_element(By.CSS_SELECTOR, "#forget-form button[type=submit]").click)
        assert d.current_url == url + "/console/forget#forget"  # the error page opens at the form
        error = d.find_element(By.ID, "forget-error").text
        assert "request_id: String should match pattern" in error
        assert d.find_element(By.ID, "reason").get_attribute("value") == REASON
        assert not Ledger(run).exists()
        # an exact forget of a run without its training data: the API's 409, also in the form
        d.find_element(By.ID, "request_id").clear()
        d.find_element(By.ID, "request_id").send_keys(REQUEST_ID)
        d.find_element(By.CSS_SELECTOR, "label[for=exact]").click()
        navigates(d, d.find_element(By.CSS_SELECTOR, "#forget-form button[type=submit]").click)
        assert "Nothing was forgotten" in d.find_element(By.ID, "forget-error").text and not Ledger(run).exists()
        screenshot(d, tmp_path, "forget_error")

        # file the forget with the keyboard alone: Tab to the form, type, Space on a checkbox, Enter
        d.get(url + "/console")
        presses = tab_to(d, "request_id")
        assert presses <= 25
        typed(d, REQUEST_ID, Keys.TAB, REASON, Keys.TAB, Keys.SPACE)  # request id, reason, first class (alpha)
        assert d.switch_to.active_element.get_attribute("value") == "alpha"
        assert d.switch_to.active_element.is_selected()
        typed(d, *[Keys.TAB] * 5)  # past beta, gamma, delta and "exact" to the Forget button
        assert d.switch_to.active_element.text == "Forget"
        navigates(d, lambda: typed(d, Keys.ENTER))
        assert d.current_url == url + "/console#requests"  # post/redirect/get: nothing about the request in the URL
        assert f"Forgotten: alpha (request {REQUEST_ID}, state instant)" in d.find_element(By.ID, "flash").text
        row = d.find_element(By.CSS_SELECTOR, "#requests-table tbody tr")
        assert REQUEST_ID in row.text and REASON in row.text and "classes: alpha" in row.text
        assert row.find_element(By.CSS_SELECTOR, ".state").text == "instant"
        assert "alpha" not in d.find_element(By.ID, "active-classes").text
        assert d.find_element(By.ID, "forgotten-classes").text == "alpha"
        screenshot(d, tmp_path, "overview")

        # the certificate, and back
        navigates(d, row.find_element(By.PARTIAL_LINK_TEXT, "certificate").click)
        assert d.find_element(By.TAG_NAME, "h1").text == "Deletion certificate"
        assert d.find_element(By.ID, "cert-request-id").text == REQUEST_ID
        assert d.find_element(By.ID, "cert-mode").text == "instant"
        assert d.find_element(By.ID, "cert-classes").text == "alpha"
        assert "not guaranteed" in d.find_element(By.CSS_SELECTOR, "article").text
        assert re.fullmatch(r".*/console/requests/\d+/certificate", d.current_url)
        screenshot(d, tmp_path, "certificate")
        navigates(d, d.back)
        assert d.current_url == url + "/console#requests"
        assert REQUEST_ID in d.find_element(By.CSS_SELECTOR, "#requests-table tbody tr").text
        navigates(d, d.forward)
        assert d.find_element(By.ID, "cert-request-id").text == REQUEST_ID
        navigates(d, d.back)

        # the anchor check, by GET (an anchor is no personal data): holds, then a forged one fails
        h = d.find_element(By.ID, "ledger-head").text
        navigates(d, lambda: d.find_element(By.ID, "expect_head").send_keys(h, Keys.ENTER))
        assert d.find_element(By.ID, "anchor-result").text.startswith("Anchor holds")
        d.find_element(By.ID, "expect_head").clear()
        navigates(d, lambda: d.find_element(By.ID, "expect_head").send_keys(h[:-4] + "0000", Keys.ENTER))
        assert d.find_element(By.ID, "anchor-result").text.startswith("Anchor FAILS")

        # accessibility basics: every visible control has a label; text and controls have enough contrast
        d.get(url + "/console")
        for el in d.find_elements(By.CSS_SELECTOR, "input:not([type=hidden]), textarea"):
            assert d.find_elements(By.CSS_SELECTOR, f"label[for='{el.get_attribute('id')}']"), el.get_attribute("name")
        checked = d.execute_script(CONTRAST_JS, "body, p, td, th, dt, dd, a, button, label, legend, caption, .state, code")
        assert len(checked) > 20
        for what, fg, bg in checked:
            assert contrast(fg, bg) >= 4.5, (what, fg, bg, contrast(fg, bg))
        # no JavaScript, and nothing from another origin
        assert "<script" not in d.page_source
        resources = d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert resources and all(r.startswith(url) for r in resources)
        # no request id or reason in any URL the console produced, nor the reason in any log
        urls = [d.current_url] + resources + [a.get_attribute("href") for a in d.find_elements(By.TAG_NAME, "a")]
        assert not any(REQUEST_ID in u or "GDPR" in u for u in urls)
    assert REASON not in caplog.text
