"""What ``GET /health`` reports: the state of each authenticator (users files, directory,
external program), each authorizer (the ACL) and the signing key.

Files are re-read when they change (on use, and on each health request), and a file that
cannot be re-read leaves its previous contents in force: the service is then ``stale``
(still usable, answered 200, with the error). It is ``unavailable`` (503) while a part has
nothing loaded at all, or while the LDAP directory cannot be reached. Never a secret: no
hash, no key material, no user name, no bind password.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from typing import Any

from shared.htpasswd import HtpasswdFile
from shared.jose_keys import thumbprint
from tokenauth.acl import AclFile
from tokenauth.signing import SigningKeys


def when(timestamp: float | None) -> str | None:
    """A time.time() value as RFC 3339 UTC, or None."""
    if timestamp is None:
        return None
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _state(loaded: bool, error: str | None) -> str:
    if not loaded:
        return "unavailable"
    return "stale" if error else "ok"


def users_file_health(users: HtpasswdFile) -> dict[str, Any]:
    loaded = users.loaded_at is not None
    return {
        "path": str(users.path),
        "state": _state(loaded, users.error),
        "loaded": loaded,
        "entries": users.entries,
        "loaded_at": when(users.loaded_at),
        "error": users.error,
    }


def acl_file_health(acl: AclFile) -> dict[str, Any]:
    acl.current()  # pick up (or fail to pick up) a changed file now
    return {
        "path": str(acl.path),
        "state": _state(True, acl.error),  # an AclFile always holds a parsed ACL
        "loaded": True,
        "rules": len(acl.acl.rules),
        "loaded_at": when(acl.loaded_at),
        "error": acl.error,
    }


class ServiceHealth:
    """The parts a token request needs, as one report.

    ``authenticators`` gives each authenticator's entries by its name (``users``: the
    htpasswd files), ``authorizers`` each authorizer's entry by name (``acl``); they are
    called on each report, so what they say is current.
    """

    def __init__(
        self,
        keys: SigningKeys,
        authenticators: Callable[[], Mapping[str, list[dict[str, Any]]]],
        authorizers: Callable[[], Mapping[str, dict[str, Any]]],
    ) -> None:
        self.keys, self.authenticators, self.authorizers = keys, authenticators, authorizers

    def report(self) -> tuple[int, dict[str, Any]]:
        """The HTTP status (200 usable, 503 not) and the JSON body."""
        authn = dict(self.authenticators())
        authz = dict(self.authorizers())
        states = [entry["state"] for entries in authn.values() for entry in entries]
        states += [entry["state"] for entry in authz.values()]
        signer = self.keys.signer
        status = "ok"
        if "unavailable" in states:
            status = "unavailable"
        elif "stale" in states:
            status = "stale"
        body: dict[str, Any] = {"status": status, "users": authn.pop("users", [])}
        body.update(authn)
        body["acl"] = authz.pop("acl", None)
        body.update(authz)
        body["signing_key"] = {
            "loaded": True,  # loaded at start-up, or the service does not start
            "algorithm": signer.algorithm,
            "key_id": signer.kid,
            "certificates": len(signer.chain),
            "published": [thumbprint(p.key) for p in self.keys.keys.published],
            "error": self.keys.error,  # a key directory change not taken (yet)
        }
        return (503 if status == "unavailable" else 200), body
