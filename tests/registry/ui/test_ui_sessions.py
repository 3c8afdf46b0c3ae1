"""Sessions: in token mode they end when the token server stops honouring them (a user
whose password changed is sent back to the login form); every worker of a registry
reads every session, even without ``http.secret``."""

from __future__ import annotations

from pathlib import Path

from shared.htpasswd import format_htpasswd_line
from tests.registry.ui.conftest import UI_ENV, UI_SETTINGS, csrf_of, request, session_of
from tests.support.deployments import PASSWORDS, start_token_deployment
from tests.support.portside_servers import filesystem_registry
from tests.support.ui_seed import seed_storage


def test_a_session_ends_when_the_token_server_no_longer_honours_it(tmp_path: Path) -> None:
    seed_storage(tmp_path / "data", ["alice/app"])
    deployment = start_token_deployment(tmp_path, UI_SETTINGS)
    try:
        url = deployment.registry.url
        first = request(url, "GET", "/ui/login")
        form = {"csrf": csrf_of(first.body), "username": "bob", "password": PASSWORDS["bob"]}
        login = request(url, "POST", "/ui/login", cookie=session_of(first), form=form)
        assert login.status == 303
        bob = session_of(login)
        assert "alice/app" in request(url, "GET", "/ui/", cookie=bob).body

        # bob's password changes: tokenauth refuses the refresh token made before. (A new
        # file renamed over the old: its inode tells tokenauth it changed, however soon.)
        changed = tmp_path / "users.htpasswd.new"
        changed.write_text(
            "".join(
                format_htpasswd_line(user, "changed" if user == "bob" else password, cost=4) + "\n"
                for user, password in PASSWORDS.items()
            )
        )
        changed.replace(tmp_path / "users.htpasswd")
        ended = request(url, "GET", "/ui/", cookie=bob)
        assert ended.status == 303
        assert ended.headers["Location"] == "/ui/login?ended=1"
        anonymous = session_of(ended)  # the old session is replaced by a nobody's
        page = request(url, "GET", "/ui/", cookie=anonymous)
        assert page.status == 200
        assert "alice/app" not in page.body
        assert "Log in" in page.body

        # With the token server gone, pages say so (502), with no trace of the failure.
        deployment.tokenauth.stop()
        down = request(url, "GET", "/ui/", cookie=anonymous)
        assert down.status == 502
        assert "the token server cannot be asked right now" in down.body
        assert "Traceback" not in deployment.registry.log()
    finally:
        deployment.stop()


def test_every_worker_reads_the_sessions_of_the_others_without_http_secret(
    tmp_path: Path,
) -> None:
    seed_storage(tmp_path / "data", ["alice/app"])
    registry = filesystem_registry(tmp_path, PORTSIDE_WORKERS="2", **UI_ENV)
    registry.start()
    try:
        first = request(registry.url, "GET", "/ui/r/alice/app/-/delete?reference=1.0")
        cookie, csrf = session_of(first), csrf_of(first.body)
        # Each request on a new connection: the kernel spreads them over both workers.
        statuses = [
            request(registry.url, "POST", "/ui/logout", cookie=cookie, form={"csrf": csrf}).status
            for _ in range(24)
        ]
        assert statuses == [303] * 24
    finally:
        registry.stop()
