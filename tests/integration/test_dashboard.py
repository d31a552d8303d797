"""The dashboard (``GET /ui``) in a real browser: Debian's headless Chromium driven by
Selenium (``/usr/bin/chromium``, ``/usr/bin/chromedriver``; ``scripts/test.sh`` installs them),
against a real worker with traffic. The page loads without console errors, asks for the token
and keeps it, shows the counts the API returns, and its search opens a message's history."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from deliverytrack.models.enums import MessageType, TrackingStatus
from tests.factories import send_recorded_factory, update_status_factory

pytestmark = pytest.mark.integration

S = TrackingStatus
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(
            "the dashboard test needs Debian's chromium and chromedriver: "
            "apt-get install -y chromium chromium-driver (scripts/test.sh does)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: WebDriver, what: str, check: Callable[[WebDriver], Any], timeout=20.0) -> Any:
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(check)
    except Exception:
        found = driver.find_elements(By.ID, "error")
        if found:
            pytest.fail(f"dashboard: {what} within {timeout}s (page error: {found[0].text!r})")
        # Not the dashboard at all (once, under load in CI): say what the browser shows instead.
        page = driver.page_source[:500]
        pytest.fail(f"dashboard: {what} within {timeout}s; at {driver.current_url}: {page!r}")


def text(driver: WebDriver, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def table_rows(driver: WebDriver, table_id: str) -> list[list[str]]:
    rows = driver.find_elements(By.CSS_SELECTOR, f"#{table_id} tbody tr")
    return [[td.text for td in row.find_elements(By.TAG_NAME, "td")] for row in rows]


def plain_get(url: str) -> tuple[int, bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


async def test_dashboard_in_a_browser(
    settings_factory: Any, worker_factory: Any, kafka_io_factory: Any, browser: WebDriver
) -> None:
    settings = settings_factory()
    worker = worker_factory(settings).start()
    io = await kafka_io_factory(settings)
    topics = io.topics

    # Traffic: records of two providers and two types, some moved on, one dead letter.
    sends = [
        send_recorded_factory("dash-1"),
        send_recorded_factory("dash-2"),
        send_recorded_factory("dash-3", provider_id="other", type=MessageType.ALIMTALK),
        send_recorded_factory("dash-4", provider_id="other"),
    ]
    for event in sends:
        await io.send(topics.send_results, event.message_id, event)
    await io.send(topics.commands, "dash-1", update_status_factory(S.DELIVERED, "dash-1"))
    await io.send(topics.commands, "dash-3", update_status_factory(S.FAILED, "dash-3"))
    await io.send(topics.send_results, "dash-bad", b"{this is not json")
    await io.send(topics.commands, "dash-4", update_status_factory(S.DELIVERED, "dash-4"))
    await io.read_json(
        topics.status_changes,
        lambda es: any(e["messageId"] == "dash-4" and e["status"] == "DELIVERED" for e in es),
    )
    await io.read_json(topics.dead_letters, lambda es: len(es) >= 1)

    # The page is served without a token; its data is not.
    status, body, headers = plain_get(worker.base_url + "/ui")
    assert status == 200 and b"deliverytrack" in body
    assert headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert plain_get(worker.base_url + "/ui/dashboard.js")[0] == 200
    assert plain_get(worker.base_url + "/recent")[0] == 401
    status, recent = worker.http_get("/recent")
    assert status == 200
    changed = {c["messageId"] for c in recent["statusChanges"]}
    assert {"dash-1", "dash-2", "dash-3", "dash-4"} <= changed
    assert recent["deadLetters"][0]["reason"]

    # In the browser: the token prompt, then the data.
    browser.get(worker.base_url + "/ui")
    wait_for(browser, "asks for the token", lambda d: d.find_element(By.ID, "token-input"))
    form = browser.find_element(By.ID, "token-form")
    wait_for(browser, "shows the token form", lambda d: form.is_displayed())
    browser.find_element(By.ID, "token-input").send_keys(worker.token)
    form.find_element(By.TAG_NAME, "button").click()
    wait_for(
        browser,
        "refreshes twice",
        lambda d: (
            int(d.find_element(By.TAG_NAME, "body").get_attribute("data-refreshes") or 0) >= 2
        ),
    )
    assert (
        browser.execute_script("return sessionStorage.getItem('deliverytrack.apiToken')")
        == worker.token
    )
    assert not form.is_displayed()  # the token is taken: the prompt is gone
    assert browser.find_element(By.ID, "forget-token").is_displayed()

    status, stats = worker.http_get("/stats")
    assert status == 200 and stats["totalMessages"] == 4
    assert text(browser, "total-messages") == str(stats["totalMessages"])
    assert text(browser, "delivery-rate") == f"{stats['deliveryRate']:.1f} %"
    assert text(browser, "failure-rate") == f"{stats['failureRate']:.1f} %"
    shown = {row[0]: int(row[1]) for row in table_rows(browser, "status-table")}
    assert shown == stats["byStatus"]
    providers = {row[0]: row[1:] for row in table_rows(browser, "provider-table")}
    assert providers["solapi"][:3] == ["2", "1", "0"]
    assert providers["other"][:3] == ["2", "1", "1"]
    assert providers["other"][3:] == ["50.0 %", "50.0 %"]
    assert len(browser.find_elements(By.CSS_SELECTOR, "#status-chart svg rect")) == len(shown)
    assert text(browser, "fold-rate") != "–"
    assert text(browser, "lag") == "0"
    changes = table_rows(browser, "changes-table")
    assert any(row[1] == "dash-4" and row[3] == "DELIVERED" for row in changes)
    letters = table_rows(browser, "letters-table")
    assert letters and letters[0][3] == "dash-bad" and letters[0][4]

    # The search opens one message's record and full history.
    browser.find_element(By.ID, "search-input").send_keys("dash-1")
    browser.find_element(By.CSS_SELECTOR, "#search-form button").click()
    wait_for(browser, "finds dash-1", lambda d: d.find_elements(By.ID, "history-table"))
    field = browser.find_element(By.CSS_SELECTOR, "#record dd[data-field='messageId']")
    assert field.text == "dash-1"
    status, history = worker.http_get("/records/dash-1/history")
    assert status == 200
    rows = table_rows(browser, "history-table")
    assert [row[2] for row in rows] == [entry["status"] for entry in history["history"]]
    assert rows[-1][2] == "DELIVERED"

    time.sleep(0.5)  # anything the last refresh logged
    problems = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert problems == [], problems
