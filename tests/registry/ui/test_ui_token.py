"""The web interface in token mode, in headless Chromium, against real registry and
tokenauth processes: what each user sees is what the token server grants them, a
pull-only user gets no delete button and the server refuses their delete anyway, and
forms without the session's CSRF token are refused."""

from __future__ import annotations

import json
import urllib.parse
from datetime import timedelta
from pathlib import Path

from selenium.webdriver.common.by import By

from shared.scope import Scope
from shared.token import Claims
from tests.registry.ui.conftest import TokenUi, csrf_of, request, session_of
from tests.support.browser import chromium, follow, log_in, screenshot, texts
from tests.support.deployments import ISSUER, PASSWORDS, SERVICE
from tests.support.ui_seed import SBOM_TYPE, SIGNATURE_TYPE


def test_a_pull_only_user_sees_only_what_they_may_pull_and_no_delete(
    token_ui: TokenUi, tmp_path: Path
) -> None:
    with chromium(tmp_path) as browser:
        log_in(browser, token_ui.url, "bob", PASSWORDS["bob"])
        assert texts(browser, "ul.repositories a") == ["alice/app", "public/base"]
        assert "secret/hidden" not in browser.page_source
        screenshot(browser, tmp_path, "ui-repositories")

        # The session cookie: HttpOnly, SameSite=Strict; no token anywhere in the page.
        cookie = browser.get_cookie("portside_ui")
        assert cookie is not None
        assert cookie["httpOnly"] is True
        assert cookie["sameSite"] == "Strict"
        assert "eyJ" not in browser.page_source  # a JWT (the refresh token) starts so

        browser.get(token_ui.url + "/ui/r/alice/app/-/tags")
        assert "1.0" in texts(browser, "table.tags tbody th")
        assert browser.find_elements(By.CSS_SELECTOR, "a.danger") == []
        assert "Delete" not in browser.page_source

        browser.get(token_ui.url + "/ui/r/alice/app/-/manifests/multi")
        assert texts(browser, "#platforms-heading ~ div table tbody th") == [
            "linux/amd64",
            "linux/arm64",
        ]
        screenshot(browser, tmp_path, "ui-index")

        browser.get(token_ui.url + "/ui/r/alice/app/-/manifests/1.0")
        assert "/bin/hello" in browser.page_source
        assert "COPY alice/app-1.0/hello.txt /" in texts(browser, "table td code")
        kinds = texts(browser, "ul.tree > li > .kind")
        assert sorted(set(kinds)) == sorted({SBOM_TYPE, SIGNATURE_TYPE})
        # The SBOM's own signature hangs under the SBOM.
        sbom_signature = token_ui.seeded.referrers["sbom-signature"]
        nested = browser.find_elements(By.CSS_SELECTOR, "ul.tree ul.tree a")
        assert [a.get_attribute("href") for a in nested] == [
            f"{token_ui.url}/ui/r/alice/app/-/manifests/{sbom_signature}"
        ]
        pull = browser.find_element(By.CSS_SELECTOR, ".copy input").get_attribute("value")
        assert pull == f"docker pull {token_ui.deployment.registry.address}/alice/app:1.0"
        assert browser.find_elements(By.CSS_SELECTOR, "a.danger") == []
        screenshot(browser, tmp_path, "ui-image")
        heading = browser.find_element(By.ID, "config-heading")
        browser.execute_script("arguments[0].scrollIntoView()", heading)
        screenshot(browser, tmp_path, "ui-config-referrers")

        # A repository bob may not pull is answered as one that does not exist.
        browser.get(token_ui.url + "/ui/r/secret/hidden/-/tags")
        assert browser.find_element(By.TAG_NAME, "h1").text == "404"

        # The server refuses bob's delete even with a well-formed form.
        session = browser.get_cookie("portside_ui")
        assert session is not None
        csrf = csrf_of(browser.page_source)
        form = {"csrf": csrf, "reference": "1.0"}
        for method, path in (
            ("POST", "/ui/r/alice/app/-/delete"),
            ("GET", "/ui/r/alice/app/-/delete?reference=1.0"),
        ):
            refused = request(
                token_ui.url,
                method,
                path,
                cookie=session["value"],
                form=form if method == "POST" else None,
            )
            assert refused.status == 403, refused.body
        browser.get(token_ui.url + "/ui/r/alice/app/-/tags")
        assert "1.0" in texts(browser, "table.tags tbody th")


def test_an_owner_deletes_a_tag_after_confirming(token_ui: TokenUi, tmp_path: Path) -> None:
    with chromium(tmp_path) as browser:
        log_in(browser, token_ui.url, "alice", PASSWORDS["alice"])
        assert texts(browser, "ul.repositories a") == ["alice/app", "public/base"]
        browser.get(token_ui.url + "/ui/r/alice/app/-/tags")
        screenshot(browser, tmp_path, "ui-tags")
        follow(browser, browser.find_element(By.CSS_SELECTOR, "a[href$='reference=latest']"))
        screenshot(browser, tmp_path, "ui-delete")
        follow(browser, browser.find_element(By.ID, "confirm-delete"))
        assert browser.current_url.startswith(token_ui.url + "/ui/r/alice/app/-/tags")
        tags = texts(browser, "table.tags tbody th")
        assert "latest" not in tags
        assert "1.0" in tags
    # Gone from the API too: the same storage, deleted by the API's own code.
    claims = Claims.issue(
        issuer=ISSUER,
        subject="alice",
        audience=SERVICE,
        lifetime=timedelta(minutes=5),
        access=[Scope.of("repository", "alice/app", ["pull"])],
    )
    token = token_ui.deployment.signer().sign(claims)
    listed = request(
        token_ui.url,
        "GET",
        "/v2/alice/app/tags/list",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert listed.status == 200, listed.body
    tags = json.loads(listed.body)["tags"]
    assert "latest" not in tags
    assert "1.0" in tags


def test_forms_without_the_sessions_csrf_token_are_refused(token_ui: TokenUi) -> None:
    url = token_ui.url
    first = request(url, "GET", "/ui/login")
    cookie, csrf = session_of(first), csrf_of(first.body)
    other = request(url, "GET", "/ui/login")
    credentials = {"username": "alice", "password": PASSWORDS["alice"]}
    for form in (
        credentials,  # missing
        {**credentials, "csrf": ""},
        {**credentials, "csrf": csrf[:-2] + ("AA" if not csrf.endswith("AA") else "BB")},
        {**credentials, "csrf": csrf_of(other.body)},  # another session's token
    ):
        refused = request(url, "POST", "/ui/login", cookie=cookie, form=form)
        assert refused.status == 403, refused.body
        assert "Set-Cookie" not in refused.headers  # no login happened
    # Without any session cookie, no token can match.
    assert request(url, "POST", "/ui/login", form={**credentials, "csrf": csrf}).status == 403

    accepted = request(url, "POST", "/ui/login", cookie=cookie, form={**credentials, "csrf": csrf})
    assert accepted.status == 303
    alice = session_of(accepted)
    page = request(url, "GET", "/ui/r/alice/app/-/tags", cookie=alice)
    assert page.status == 200
    new_csrf = csrf_of(page.body)
    assert new_csrf != csrf  # a login starts a new session, with a new token

    # alice may delete, but not with a forged token or the pre-login one.
    for token in ("", csrf, new_csrf[::-1]):
        refused = request(
            url,
            "POST",
            "/ui/r/alice/app/-/delete",
            cookie=alice,
            form={"csrf": token, "reference": "1.0"},
        )
        assert refused.status == 403
    assert ">1.0</a>" in request(url, "GET", "/ui/r/alice/app/-/tags", cookie=alice).body
    # A malformed reference is refused by the API's grammar before any confirmation.
    for reference, status in (("sha256:00", 400), ("bad%tag", 404)):
        query = urllib.parse.urlencode({"reference": reference})
        answer = request(url, "GET", f"/ui/r/alice/app/-/delete?{query}", cookie=alice)
        assert answer.status == status, answer.body


def test_anonymous_visitors_see_what_anonymous_tokens_grant(token_ui: TokenUi) -> None:
    page = request(token_ui.url, "GET", "/ui/")
    assert page.status == 200
    assert "public/base" in page.body
    assert "alice/app" not in page.body
    assert "secret/hidden" not in page.body
    assert request(token_ui.url, "GET", "/ui/r/alice/app/-/tags").status == 404


def test_pages_carry_strict_security_headers_and_a_forged_cookie_is_a_new_visitor(
    token_ui: TokenUi,
) -> None:
    page = request(token_ui.url, "GET", "/ui/", cookie="forged-or-expired")
    assert page.status == 200
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Cache-Control"] == "no-store"
    cookie_header = page.headers["Set-Cookie"]
    assert "HttpOnly" in cookie_header
    assert "SameSite=Strict" in cookie_header
    assert "alice/app" not in page.body  # the forged cookie made nobody logged in
