"""The events themselves, field for field as Distribution 2.8 sends them.

An event is a JSON object (``notifications/event.go``): ``id``, ``timestamp``,
``action``, ``target`` (``mediaType``, ``size``, ``digest``, ``length``, ``repository``,
``fromRepository``, ``url``, ``tag``, ``references``), ``request`` (``id``, ``addr``,
``host``, ``method``, ``useragent``), ``actor`` (``name``) and ``source`` (``addr``,
``instanceID``). Empty fields are left out, as Go's ``omitempty`` does; ``actor`` is ``{}``
for an anonymous caller. They are built as plain dicts: they go to disk and the wire as
they are.
"""

from __future__ import annotations

import datetime
import re
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from registry.storage.manifest_formats import Descriptor
from shared.client_address import client_address
from shared.request_id import current_request_id

Event = dict[str, Any]

EVENTS_MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"
BLOB_MEDIA_TYPE = "application/octet-stream"  # what Distribution reports for every blob

REQUEST_ID = web.RequestKey("notifications_request_id", str)
ACTOR = web.RequestKey("notifications_actor", str)
# A request id a client or proxy sent is used only if it is short and plain.
_REQUEST_ID_SYNTAX = re.compile(r"[A-Za-z0-9._:+/=-]{1,128}")


def request_id(request: web.Request) -> str:
    """The id of ``request``: its ``X-Request-Id`` when it has a sane one, else a new UUID,
    the same for every event of the request: the id the request-id middleware gave it
    (``shared.request_context``, also in every log line), when it ran."""
    served = current_request_id.get()
    if served:
        return served
    known = request.get(REQUEST_ID)
    if known is None:
        sent = request.headers.get("X-Request-Id", "")
        known = sent if _REQUEST_ID_SYNTAX.fullmatch(sent) else str(uuid.uuid4())
        request[REQUEST_ID] = known
    return known


def _peer(request: web.Request) -> str:
    """``host:port`` of the client, as Go's ``RemoteAddr``; behind a trusted proxy
    (``http.trustedproxies``), the client's address the proxy forwarded."""
    address = client_address(request)
    if address is not None and address != request.remote:
        return address
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return request.remote or ""


@dataclass(frozen=True)
class Source:
    """``source``: this process, as ``hostname:port`` and a UUID chosen at start-up."""

    addr: str
    instance_id: str

    @classmethod
    def for_port(cls, port: int | None) -> Source:
        host = socket.gethostname()
        return cls(f"{host}:{port}" if port else host, str(uuid.uuid4()))

    def record(self) -> dict[str, str]:
        return {"addr": self.addr, "instanceID": self.instance_id}


def _timestamp() -> str:
    """RFC 3339 in UTC with the fraction Go prints (trailing zeros dropped)."""
    now = datetime.datetime.now(datetime.UTC)
    fraction = f"{now.microsecond:06d}".rstrip("0")
    return now.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + "Z"


def _without_empty(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value not in ("", None, 0, [])}


def new_event(request: web.Request, source: Source, action: str, target: dict[str, Any]) -> Event:
    """An event of ``action`` on ``target`` caused by ``request``."""
    actor = request.get(ACTOR, "")
    return {
        "id": str(uuid.uuid4()),
        "timestamp": _timestamp(),
        "action": action,
        "target": _without_empty(target),
        "request": {
            # id, method and useragent are always present (no omitempty in Go).
            "id": request_id(request),
            **_without_empty({"addr": _peer(request), "host": request.host}),
            "method": request.method,
            "useragent": request.headers.get("User-Agent", ""),
        },
        "actor": {"name": actor} if actor else {},
        "source": source.record(),
    }


def descriptor_record(descriptor: Descriptor) -> dict[str, Any]:
    """A ``references`` entry: a descriptor as Distribution marshals one."""
    return _without_empty(
        {
            "mediaType": descriptor.media_type,
            "size": descriptor.size,
            "digest": str(descriptor.digest),
            "urls": list(descriptor.urls),
        }
    )


def manifest_target(
    repository: str,
    media_type: str,
    digest: str,
    size: int,
    url: str,
    tag: str = "",
    references: Iterable[Descriptor] = (),
) -> dict[str, Any]:
    return {
        "mediaType": media_type,
        "size": size,
        "digest": digest,
        "length": size,
        "repository": repository,
        "url": url,
        "tag": tag,
        "references": [descriptor_record(d) for d in references],
    }


def blob_target(
    repository: str, digest: str, size: int, url: str, from_repository: str = ""
) -> dict[str, Any]:
    return {
        "mediaType": BLOB_MEDIA_TYPE,
        "size": size,
        "digest": digest,
        "length": size,
        "repository": repository,
        "fromRepository": from_repository,
        "url": url,
    }


def deletion_target(repository: str, digest: str = "", tag: str = "") -> dict[str, Any]:
    return {"digest": digest, "repository": repository, "tag": tag}
