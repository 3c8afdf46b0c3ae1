"""The pages that show what is stored: repositories, a repository's tags, one manifest.

A repository the user may not pull is answered exactly like one that does not exist, so
its name never shows. The repository list asks the token server about each name of a
page at once; a user without the catalog right is shown only the names granted, found in
at most MAX_SCANNED catalog names a page (the next page goes on from there).
"""

from __future__ import annotations

import bisect
import re

from aiohttp import web

from registry.auth.access import CATALOG_SCOPE
from registry.auth.base import Grant
from registry.handlers.base import reference_param
from registry.keys import CONFIG, STORAGE
from registry.storage.errors import NameUnknown
from registry.storage.registry import Repository
from registry.ui import views
from registry.ui.frame import LoginRequired, grant, render
from registry.ui.state import SESSION, UI
from registry.urls import base_url
from shared import errors
from shared.errors import RegistryError
from shared.reference import is_valid_name
from shared.scope import MAX_SCOPES, Scope

PAGE_SIZES = (25, 50, 100)
DEFAULT_PAGE = 50
MAX_SCANNED = 576  # catalog names a page may look at for a user without the catalog right
PARALLEL_TOKEN_REQUESTS = 4
_FILTER = re.compile(r"[a-z0-9._/-]{1,255}")
_LAST = 255  # a name or tag is never longer


def page_size(request: web.Request) -> int:
    raw = request.query.get("n", "")
    return int(raw) if raw in {str(n) for n in PAGE_SIZES} else DEFAULT_PAGE


def cursor(request: web.Request) -> str:
    return request.query.get("last", "")[:_LAST]


async def repositories(request: web.Request) -> web.StreamResponse:
    rights = request.app[UI].rights
    if rights.needs_login and not request[SESSION].logged_in:
        raise LoginRequired
    prefix = request.query.get("q", "").strip()
    if prefix and not _FILTER.fullmatch(prefix):
        raise RegistryError(errors.NAME_INVALID, "a filter is the start of a repository name")
    limit = page_size(request)
    last = cursor(request)
    if prefix and last < prefix:
        # Names sort lexically: those starting with the prefix follow this, together.
        last = prefix[:-1] + chr(ord(prefix[-1]) - 1) + "~"
    if (await grant(request, [CATALOG_SCOPE])).allows(CATALOG_SCOPE):
        names, more = await request.app[STORAGE].catalog(limit, last or None)
        next_last = names[-1] if more and names else ""
    else:
        names, next_last = await _pullable_page(request, limit, last)
    matching = [n for n in names if n.startswith(prefix)]
    if len(matching) < len(names) or not next_last.startswith(prefix):
        next_last = ""  # past the names the filter selects: nothing more to show
    return render(
        request,
        "repositories.html",
        names=matching,
        next_last=next_last,
        query=prefix,
        limit=limit,
        title="Repositories",
    )


async def _pullable_page(request: web.Request, limit: int, last: str) -> tuple[list[str], str]:
    """Up to ``limit`` names after ``last`` the user may pull, and where the next page
    starts ("" when none does). The first round asks about one batch of names (usually
    enough); later rounds about several at once, which the token server answers in
    parallel."""
    storage = request.app[STORAGE]
    shown: list[str] = []
    scanned = 0
    wave = MAX_SCOPES
    while scanned < MAX_SCANNED:
        names, more = await storage.catalog(min(wave, MAX_SCANNED - scanned), last or None)
        if not names:
            return shown, ""
        scanned += len(names)
        pull = [Scope.of("repository", name, ["pull"]) for name in names]
        allowed = await grant(request, pull)
        for name, scope in zip(names, pull, strict=True):
            if allowed.allows(scope):
                shown.append(name)
                if len(shown) == limit:
                    return shown, name
        if not more:
            return shown, ""
        last = names[-1]
        wave = MAX_SCOPES * PARALLEL_TOKEN_REQUESTS
    # The scan budget is spent: the next page goes on after the last name looked at.
    return shown, last


async def tags(request: web.Request) -> web.StreamResponse:
    repo, allowed = await _repository(request)
    descending = request.query.get("sort") == "name-desc"
    limit = page_size(request)
    last = cursor(request)
    if descending:
        every = await repo.tags.all()
        end = bisect.bisect_left(every, last) if last else len(every)
        page = every[max(0, end - limit) : end][::-1]
        more = end - limit > 0
    else:
        page, more = await repo.tags.page(limit, last or None)
    if not page and not await _exists(repo):
        raise NameUnknown(repo.name)
    rows = await views.tag_rows(repo, page)
    return render(
        request,
        "tags.html",
        repo=repo.name,
        rows=rows,
        next_last=page[-1] if more and page else "",
        sort="name-desc" if descending else "name",
        limit=limit,
        can_delete=allowed.allows(Scope.of("repository", repo.name, ["delete"])),
        pull=_pull_host(request),
        title=f"{repo.name}: tags",
    )


async def manifest(request: web.Request) -> web.StreamResponse:
    repo, allowed = await _repository(request)
    reference = request.match_info["reference"]
    # The API's grammar and answers: a malformed digest is DIGEST_INVALID, a malformed tag
    # names nothing (MANIFEST_UNKNOWN). Resolving is not a pull: no tag's pull time moves.
    digest = await repo.manifests.resolve(reference_param(reference))
    shown = await views.read_manifest(repo, digest, with_children=True)
    referrers = await views.referrer_tree(repo, digest)
    return render(
        request,
        "manifest.html",
        repo=repo.name,
        reference=reference,
        tag="" if ":" in reference else reference,
        manifest=shown,
        referrers=referrers,
        can_delete=allowed.allows(Scope.of("repository", repo.name, ["delete"])),
        pull=_pull_host(request),
        title=f"{repo.name}@{digest}",
    )


async def _repository(request: web.Request) -> tuple[Repository, Grant]:
    """The page's repository, if the user may pull it (NAME_UNKNOWN otherwise, as for a
    name that does not exist), and the user's grant on it (pull and delete asked at once)."""
    name = request.match_info["name"]
    if not is_valid_name(name):
        raise RegistryError(errors.NAME_INVALID, "invalid repository name")
    allowed = await grant(request, [Scope.of("repository", name, ["pull", "delete"])])
    if not allowed.allows(Scope.of("repository", name, ["pull"])):
        rights = request.app[UI].rights
        if rights.needs_login and not request[SESSION].logged_in:
            raise LoginRequired
        raise NameUnknown(name)
    return request.app[STORAGE].repository(name), allowed


async def _exists(repo: Repository) -> bool:
    try:
        await repo.tags.all()
    except NameUnknown:
        return False
    return True


def _pull_host(request: web.Request) -> str:
    """The registry as ``docker pull`` names it: the external host, as in the API's URLs."""
    base = base_url(request, request.app[CONFIG])
    return base.split("://", 1)[-1] if base else request.host
