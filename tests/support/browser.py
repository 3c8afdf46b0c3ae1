"""Debian's headless Chromium driven by Selenium through Debian's chromedriver.

Selenium is pointed at both binaries, so it never looks for (or downloads) a browser. A
test skips when they are missing, except under ``CI=true`` where that fails it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.wait import WebDriverWait

from tests.support.tools import unavailable

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@contextmanager
def chromium(
    profile: Path, width: int = 1280, height: int = 900, dark: bool = False
) -> Iterator[WebDriver]:
    """A headless Chromium with its own profile directory; closed on exit."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (os.path.exists(path) or shutil.which(path)):
            unavailable(f"{path} is not installed (Debian package {package})")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # running as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    if dark:
        options.add_argument("--force-dark-mode")
        options.add_argument("--blink-settings=preferredColorScheme=0")
    service = Service(executable_path=CHROMEDRIVER, log_output=str(profile / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def wait_until_replaced(driver: WebDriver, element: WebElement) -> None:
    """Wait until ``element``'s page has been replaced by the next one.

    While the old document is being torn down, chromedriver can answer a look at one of its
    nodes with "Node with given id does not belong to the document" (a plain
    WebDriverException) instead of a stale-element error: that is ignored and asked again,
    and the next look reports the node stale. Anything that persists still times out.
    """
    WebDriverWait(driver, 30, ignored_exceptions=(WebDriverException,)).until(staleness_of(element))


def texts(driver: WebDriver, selector: str) -> list[str]:
    return [element.text for element in driver.find_elements(By.CSS_SELECTOR, selector)]


def log_in(driver: WebDriver, base: str, user: str, password: str, succeeds: bool = True) -> None:
    """Fill in and send the login form; wait for the page it leads to."""
    driver.get(base + "/ui/login")
    driver.find_element(By.ID, "username").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(password)
    form = driver.find_element(By.CSS_SELECTOR, "form.login")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    # The answer replaces the page: wait for that, then for what it should show.
    wait_until_replaced(driver, form)
    expected = "ul.repositories, main > p" if succeeds else "p.error"
    WebDriverWait(driver, 30).until(
        lambda d: (
            d.find_elements(By.CSS_SELECTOR, expected)
            and d.execute_script("return document.readyState") == "complete"
        )
    )


def follow(driver: WebDriver, element: WebElement) -> None:
    """Click a link or button that loads another page, and wait until it has."""
    page = driver.find_element(By.TAG_NAME, "html")
    element.click()
    wait_until_replaced(driver, page)
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
    )


def screenshot(driver: WebDriver, directory: Path, name: str) -> Path:
    """Save a PNG of the page into ``directory``, and into $PORTSIDE_UI_SCREENSHOTS
    when set (how docs/ui's pictures are made)."""
    path = directory / f"{name}.png"
    driver.save_screenshot(str(path))
    published = os.environ.get("PORTSIDE_UI_SCREENSHOTS")
    if published:
        shutil.copyfile(path, Path(published) / path.name)
    return path
