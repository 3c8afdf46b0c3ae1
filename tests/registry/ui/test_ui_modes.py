"""The web interface in htpasswd mode (the users file, its rate limits) and in open mode
(no login), in headless Chromium; and off unless ``ui.enabled``."""

from __future__ import annotations

from pathlib import Path

from selenium.webdriver.common.by import By

from tests.registry.ui.conftest import REPOSITORIES, UI_ENV, csrf_of, request, session_of
from tests.support.browser import chromium, follow, log_in, screenshot, texts
from tests.support.deployments import (
    PASSWORDS,
    HtpasswdDeployment,
    start_htpasswd_deployment,
    start_token_deployment,
)
from tests.support.logins import basic
from tests.support.portside_servers import ServerProcess, filesystem_registry
from tests.support.ui_seed import seed_storage


def test_htpasswd_mode_logs_in_against_the_users_file(
    htpasswd_ui: HtpasswdDeployment, tmp_path: Path
) -> None:
    url = htpasswd_ui.registry.url
    with chromium(tmp_path) as browser:
        browser.get(url + "/ui/")
        assert browser.current_url == url + "/ui/login"  # nothing is visible before a login
        screenshot(browser, tmp_path, "ui-login")
        log_in(browser, url, "alice", "not her password", succeeds=False)
        assert browser.find_element(By.CSS_SELECTOR, "p.error").text == (
            "wrong user name or password"
        )
        assert browser.get_cookie("portside_ui") is not None
        log_in(browser, url, "alice", PASSWORDS["alice"])
        # As the API: anyone in the users file may do everything.
        assert texts(browser, "ul.repositories a") == REPOSITORIES
        browser.get(url + "/ui/r/secret/hidden/-/tags")
        assert browser.find_elements(By.CSS_SELECTOR, "a.danger")
        follow(browser, browser.find_element(By.CSS_SELECTOR, "header form button"))
        assert browser.current_url == url + "/ui/login"
        browser.get(url + "/ui/r/secret/hidden/-/tags")
        assert browser.current_url == url + "/ui/login"


def test_htpasswd_logins_are_rate_limited_like_the_api(tmp_path: Path) -> None:
    # A deployment of its own: the budgets it spends would refuse other tests' logins.
    deployment = start_htpasswd_deployment(
        tmp_path, {**UI_ENV, "REGISTRY_AUTH_HTPASSWD_RATELIMIT_ACCOUNTFAILURES": "2"}
    )
    try:
        _spend_bobs_budget(deployment.registry.url)
    finally:
        deployment.stop()


def _spend_bobs_budget(url: str) -> None:
    first = request(url, "GET", "/ui/login")
    cookie, csrf = session_of(first), csrf_of(first.body)
    statuses = []
    for _ in range(4):
        answer = request(
            url,
            "POST",
            "/ui/login",
            cookie=cookie,
            form={"csrf": csrf, "username": "bob", "password": "guess"},
        )
        statuses.append(answer.status)
        if answer.status == 429:
            assert answer.headers["Retry-After"].isdigit()
            break
    assert statuses[0] == 401
    assert statuses[-1] == 429, statuses
    # The API shares the budget: bob's right password is refused there too for now.
    api = request(url, "GET", "/v2/", headers=basic("bob", PASSWORDS["bob"]))
    assert api.status == 429


def test_open_mode_needs_no_login_and_reads_on_a_phone_in_the_dark(
    open_ui: ServerProcess, tmp_path: Path
) -> None:
    with chromium(tmp_path, width=390, height=844, dark=True) as browser:
        browser.get(open_ui.url + "/ui/")
        assert texts(browser, "ul.repositories a") == REPOSITORIES
        assert browser.find_elements(By.LINK_TEXT, "Log in") == []
        # Light and dark themes follow the system.
        background = browser.execute_script(
            "return getComputedStyle(document.body).backgroundColor"
        )
        assert background == "rgb(13, 17, 23)"
        browser.get(open_ui.url + "/ui/r/alice/app/-/manifests/1.0")
        assert browser.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1"
        )
        screenshot(browser, tmp_path, "ui-phone-dark")
        # Keyboard: the first Tab reaches the skip link, which leads to the content.
        body = browser.find_element(By.TAG_NAME, "body")
        body.send_keys("\ue004")  # Tab
        assert browser.switch_to.active_element.text == "Skip to content"
        browser.get(open_ui.url + "/ui/r/alice/app/-/tags")
        assert browser.find_elements(By.CSS_SELECTOR, "a.danger")


def test_the_interface_is_off_unless_enabled(tmp_path: Path) -> None:
    registry = filesystem_registry(tmp_path)
    registry.start()
    try:
        answer = request(registry.url, "GET", "/ui/")
        assert answer.status == 404
        assert "portside_ui" not in (answer.headers.get("Set-Cookie") or "")
    finally:
        registry.stop()


def test_pull_lines_and_cookies_follow_what_the_proxy_says(open_ui: ServerProcess) -> None:
    forwarded = {"X-Forwarded-Host": "registry.example.com", "X-Forwarded-Proto": "https"}
    page = request(open_ui.url, "GET", "/ui/r/alice/app/-/manifests/1.0", headers=forwarded)
    assert page.status == 200
    assert 'value="docker pull registry.example.com/alice/app:1.0"' in page.body
    assert "; Secure" in page.headers["Set-Cookie"]  # the browser is on https
    plain = request(open_ui.url, "GET", "/ui/r/alice/app/-/manifests/1.0")
    assert f'value="podman pull {open_ui.address}/alice/app:1.0"' in plain.body
    assert "Secure" not in plain.headers["Set-Cookie"]


def test_the_interface_lives_under_http_prefix(tmp_path: Path) -> None:
    seed_storage(tmp_path / "data", ["alice/app"])
    registry = filesystem_registry(tmp_path, REGISTRY_HTTP_PREFIX="/reg/", **UI_ENV)
    registry.start()
    try:
        page = request(registry.url, "GET", "/reg/ui/")
        assert page.status == 200
        assert 'href="/reg/ui/r/alice/app/-/tags"' in page.body
        assert 'href="/reg/ui/static/ui.css"' in page.body
        assert request(registry.url, "GET", "/reg/ui/static/ui.css").status == 200
        assert request(registry.url, "GET", "/ui/").status == 404
    finally:
        registry.stop()


def test_an_unknown_page_is_an_html_404_with_the_headers(open_ui: ServerProcess) -> None:
    answer = request(open_ui.url, "GET", "/ui/no/such/page")
    assert answer.status == 404
    assert answer.headers["Content-Type"].startswith("text/html")
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert request(open_ui.url, "GET", "/ui/static/app.js").status == 404


def test_token_mode_logins_count_against_the_clients_address(tmp_path: Path) -> None:
    """The registry forwards the client's address to the token server, which believes it
    from a trusted registry: one address's failed logins leave another's budget whole."""
    loopback = {"trustedproxies": ["127.0.0.0/8"]}
    deployment = start_token_deployment(
        tmp_path,
        {"ui": {"enabled": True}, "http": loopback},
        tokenauth_settings={"http": loopback, "ratelimit": {"ipfailures": 2}},
    )
    try:
        url = deployment.registry.url

        def guess(address: str, user: str) -> int:
            first = request(url, "GET", "/ui/login")
            return request(
                url,
                "POST",
                "/ui/login",
                cookie=session_of(first),
                form={"csrf": csrf_of(first.body), "username": user, "password": "guess"},
                headers={"X-Forwarded-For": address},
            ).status

        spent = [guess("198.51.100.1", user) for user in ("u1", "u2", "u3")]
        assert spent == [401, 401, 429]  # that address's budget is spent...
        assert guess("198.51.100.2", "u4") == 401  # ...another's is not (before: 429)
    finally:
        deployment.stop()
