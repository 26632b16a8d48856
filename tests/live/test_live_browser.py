"""The Dagster UI in a real browser: Debian's headless Chromium (the `browser` fixture of conftest.py)."""

from __future__ import annotations

import os
import shutil

import pytest
from livestack import REPO

README_SCREENSHOT = REPO / "docs" / "screenshots" / "demo-location.png"


def wait_for_text(driver, texts: list[str], timeout: float = 60) -> str:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def shown(d):
        body = d.find_element(By.TAG_NAME, "body").text
        return body if all(text in body for text in texts) else False

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.5).until(shown)
    except TimeoutException:
        body = driver.find_element(By.TAG_NAME, "body").text
        pytest.fail(f"the page at {driver.current_url} did not show {texts} within {timeout:g}s:\n{body[:2000]}")


def test_demo_location_page_shows_its_jobs_and_sensor(live, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(f"{live.url}/locations/demo/jobs")
    body = wait_for_text(browser, ["demo", "download_samples", "import_readings"])
    assert "Sensors" in body
    jobs_png = tmp_path / "demo-location-jobs.png"
    assert browser.save_screenshot(str(jobs_png))

    # On to the sensors of the same location, the way a user clicks through the page.
    link = browser.find_element(By.CSS_SELECTOR, "a[href$='/locations/demo/sensors']")
    link.click()
    wait_for_text(browser, ["import_readings_proc_sensor"])
    sensors_png = tmp_path / "demo-location-sensors.png"
    assert browser.save_screenshot(str(sensors_png))

    for png in (jobs_png, sensors_png):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000, png
    print(f"screenshots: {jobs_png} {sensors_png}")
    # The README's picture: written when missing, refreshed with CORE4_UPDATE_SCREENSHOTS=1
    # (so a test run does not change a tracked file on every run).
    if not README_SCREENSHOT.exists() or os.environ.get("CORE4_UPDATE_SCREENSHOTS") == "1":
        README_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(jobs_png, README_SCREENSHOT)
