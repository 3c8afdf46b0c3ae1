"""Upload state handed to clients in ``Location`` URLs, signed with ``http.secret``.

Every upload URL carries ``_state``: the repository and upload id (and the digest
algorithm the client announced with ``digest-algorithm``, when not sha256), with an
HMAC-SHA256 over them. Any instance that shares the secret (and the storage) continues the upload;
the data itself is in storage, so the state holds nothing else. A state whose signature
does not verify is refused with ``BLOB_UPLOAD_INVALID`` (instances configured with
different secrets say so clearly instead of losing uploads); a URL without a state, or
whose state names another upload, is ``BLOB_UPLOAD_UNKNOWN``.

With no ``http.secret`` the registry generates one at start-up and warns. It cannot
verify states signed before a restart or by another worker, so then a well-formed state
is taken at its word and storage decides whether the upload exists, as it always does:
an unconfigured registry is one instance, where signatures protect nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets

from aiohttp import web

from registry.config import RegistryConfig
from registry.oci.digest import HEX_LENGTHS
from registry.storage.errors import UploadInvalid, UploadUnknown

log = logging.getLogger("registry")

STATE_PARAMETER = "_state"
DEFAULT_ALGORITHM = "sha256"
MAX_STATE_LENGTH = 2048
_CONTEXT = b"portside upload state v1\x00"


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class UploadStateSigner:
    def __init__(self, secret: bytes, *, configured: bool = True) -> None:
        self._secret = secret
        self.configured = configured

    @classmethod
    def from_config(cls, config: RegistryConfig) -> UploadStateSigner:
        if config.http.secret:
            return cls(config.http.secret.encode(), configured=True)
        log.warning(
            "http.secret is not set: signing upload URLs with a secret generated at start-up. "
            "Several instances behind a load balancer need the same http.secret (set it on "
            "every one), or an upload continued on another instance is refused"
        )
        return cls(secrets.token_bytes(32), configured=False)

    def _mac(self, payload: str) -> bytes:
        return hmac.new(self._secret, _CONTEXT + payload.encode(), hashlib.sha256).digest()

    def sign(self, name: str, upload_id: str, algorithm: str = DEFAULT_ALGORITHM) -> str:
        fields = {"name": name, "uuid": upload_id}
        if algorithm != DEFAULT_ALGORITHM:  # URLs of sha256 uploads stay as they were
            fields["alg"] = algorithm
        claims = json.dumps(fields, separators=(",", ":"))
        payload = _encode(claims.encode())
        return f"{payload}.{_encode(self._mac(payload))}"

    def verify(self, state: str | None, name: str, upload_id: str) -> str:
        """Accept ``state`` for this repository's upload, or raise the client's error;
        the digest algorithm the upload is hashed with."""
        if not state:
            raise UploadUnknown(upload_id)
        if len(state) > MAX_STATE_LENGTH or state.count(".") != 1:
            raise UploadInvalid("malformed upload state")
        payload, mac = state.split(".")
        try:
            claims = json.loads(_decode(payload))
            given = _decode(mac)
        except (ValueError, binascii.Error):
            raise UploadInvalid("malformed upload state") from None
        if not hmac.compare_digest(given, self._mac(payload)) and self.configured:
            raise UploadInvalid(
                "upload state signature mismatch: was the upload started by a registry "
                "with another http.secret?"
            )
        if (
            not isinstance(claims, dict)
            or claims.get("name") != name
            or claims.get("uuid") != upload_id
        ):
            raise UploadUnknown(upload_id)
        algorithm = claims.get("alg", DEFAULT_ALGORITHM)
        if not isinstance(algorithm, str) or algorithm not in HEX_LENGTHS:
            raise UploadInvalid("malformed upload state")
        return algorithm


UPLOAD_STATE = web.AppKey("upload_state", UploadStateSigner)


def signed_upload_path(
    request: web.Request, name: str, upload_id: str, algorithm: str = DEFAULT_ALGORITHM
) -> str:
    """``/v2/<name>/blobs/uploads/<id>?_state=...`` (a path for ``url_for``)."""
    state = request.app[UPLOAD_STATE].sign(name, upload_id, algorithm)
    return f"/v2/{name}/blobs/uploads/{upload_id}?{STATE_PARAMETER}={state}"


def verified_upload(request: web.Request, name: str, upload_id: str) -> tuple[str, str]:
    """The upload id of the URL, once its ``_state`` is accepted, and the digest
    algorithm the upload is hashed with."""
    state = request.query.get(STATE_PARAMETER)
    return upload_id, request.app[UPLOAD_STATE].verify(state, name, upload_id)
