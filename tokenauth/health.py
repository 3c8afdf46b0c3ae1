"""What ``GET /health`` reports: the state of the users files, the ACL and the signing key.

Files are re-read when they change (on use, and on each health request), and a file that
cannot be re-read leaves its previous contents in force: the service is then ``stale``
(still usable, answered 200, with the error). It is ``unavailable`` (503) only while a
part has nothing loaded at all. Never a secret: no hash, no key material, no user name.
"""

from __future__ import annotations

import datetime
from typing import Any

from shared.credentials import HtpasswdAuthenticator
from shared.htpasswd import HtpasswdFile
from shared.token import thumbprint
from tokenauth.acl import AclFile
from tokenauth.signing import SigningKeys


def _when(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _state(loaded: bool, error: str | None) -> str:
    if not loaded:
        return "unavailable"
    return "stale" if error else "ok"


def _users_file(users: HtpasswdFile) -> dict[str, Any]:
    loaded = users.loaded_at is not None
    return {
        "path": str(users.path),
        "state": _state(loaded, users.error),
        "loaded": loaded,
        "entries": users.entries,
        "loaded_at": _when(users.loaded_at),
        "error": users.error,
    }


def _acl_file(acl: AclFile) -> dict[str, Any]:
    return {
        "path": str(acl.path),
        "state": _state(True, acl.error),  # an AclFile always holds a parsed ACL
        "loaded": True,
        "rules": len(acl.acl.rules),
        "loaded_at": _when(acl.loaded_at),
        "error": acl.error,
    }


class ServiceHealth:
    """The parts a token request needs, as one report."""

    def __init__(
        self, keys: SigningKeys, users: HtpasswdAuthenticator, acl: AclFile | None
    ) -> None:
        self.keys, self.users, self.acl = keys, users, acl

    def report(self) -> tuple[int, dict[str, Any]]:
        """The HTTP status (200 usable, 503 not) and the JSON body."""
        self.users.refresh()  # pick up (or fail to pick up) changed files now
        if self.acl is not None:
            self.acl.current()
        parts = [_users_file(users) for users in self.users.files]
        acl = _acl_file(self.acl) if self.acl is not None else None
        states = [part["state"] for part in parts] + ([acl["state"]] if acl else [])
        signer = self.keys.signer
        status = "ok"
        if "unavailable" in states:
            status = "unavailable"
        elif "stale" in states:
            status = "stale"
        body = {
            "status": status,
            "users": parts,
            "acl": acl,
            "signing_key": {
                "loaded": True,  # loaded at start-up, or the service does not start
                "algorithm": signer.algorithm,
                "key_id": signer.kid,
                "certificates": len(signer.chain),
                "published": [thumbprint(p.key) for p in self.keys.keys.published],
                "error": self.keys.error,  # a key directory change not taken (yet)
            },
        }
        return (503 if status == "unavailable" else 200), body
