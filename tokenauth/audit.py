"""The audit trail: one JSON line per token decision on the ``tokenauth.audit`` logger.

A line names who (account, client address, client id), what for (service, requested and
granted scopes) and the outcome; it never holds a password, an Authorization header or a
token (only the token's ``jti``, to correlate with a registry's logs).

A handler opens the request's record with :func:`begin`; whatever decides something (the
issuer, an authenticator, an authorizer) writes it into :func:`current` where it decides,
rather than having the record handed down through every call. aiohttp serves each request
in a task of its own, and a context variable is per task, so records never mix.

With the service's own log set-up (``shared.log_queue.DirectLines``) a line leaves the
event loop as the record's values (an :class:`AuditLine`): the JSON and the log line are
made on the log writer's thread, with no :class:`logging.LogRecord`, as the access lines
are; with any other set-up (a handler a test or an embedding program added) the line is
logged as a record. Both write the same line
(docs/performance.md#token-issuance-with-workers).
"""

from __future__ import annotations

import json
import logging
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from shared import log_queue
from shared.log_format import LineFormatter
from shared.request_id import current_request_id
from shared.scope import Scope

audit_log = logging.getLogger("tokenauth.audit")
_MAX_FIELD = 128
# json.dumps(line, ensure_ascii=False) would build this encoder again for every token.
_encode = json.JSONEncoder(ensure_ascii=False).encode


def _clip(value: str | None) -> str | None:
    # Client-chosen text is cut short so that an audit line stays readable.
    return value if value is None or len(value) <= _MAX_FIELD else value[:_MAX_FIELD] + "…"


@dataclass
class AuditRecord:
    """What is known about one token request, filled in as the request is understood."""

    grant: str
    ip: str | None
    client_id: str | None = None
    account: str | None = None
    service: str | None = None
    requested: list[Scope] = field(default_factory=list)
    granted: list[Scope] = field(default_factory=list)
    rules: list[int | None] = field(default_factory=list)
    authorizers: list[str | None] = field(default_factory=list)  # which decided each scope
    authenticator: str = ""  # which user store decided the login
    jti: str = ""

    def write(self, outcome: str, reason: str = "") -> None:
        """Write one audit line (JSON, so that user-supplied text cannot forge lines).

        The record is not changed afterwards: the line may be made from it later, on the
        log writer's thread."""
        if not audit_log.isEnabledFor(logging.INFO):
            return  # nothing to build for a line nobody writes
        request_id = current_request_id.get()
        direct = log_queue.direct_lines
        if direct is not None and direct.route(audit_log, stamped=True):
            line = AuditLine(direct.formatter, time.time(), self, outcome, reason, request_id)
            direct.put(line)
            return
        # The message itself, without arguments: logging then never %-formats it.
        audit_log.info(self.message(outcome, reason, request_id))

    def message(self, outcome: str, reason: str, request_id: str | None) -> str:
        """The line's message: the decision as one JSON object."""
        line: dict[str, Any] = {
            "event": "token",
            "outcome": outcome,
            "grant": self.grant,
            "account": _clip(self.account),
            "ip": self.ip,
            "service": _clip(self.service),
            "client_id": _clip(self.client_id),
            "requested": [str(s) for s in self.requested],
            "granted": [str(s) for s in self.granted if s.actions],
            "rules": self.rules,
        }
        if self.authenticator:
            line["authenticator"] = self.authenticator
        if any(name not in (None, "acl") for name in self.authorizers):
            line["authorizers"] = self.authorizers
        if reason:
            line["reason"] = reason
        if self.jti:
            line["jti"] = self.jti
        if request_id:
            line["request_id"] = request_id  # the X-Request-Id the registry's lines carry too
        return _encode(line)


class AuditLine(log_queue.PendingLine):
    """An audit line queued as its record's values: rendered on the log writer's thread
    into what logging the message would have written (the record's request id stamp
    included, as the ``http.request.id`` field)."""

    __slots__ = ("_created", "_formatter", "_outcome", "_reason", "_record", "_request_id")

    def __init__(
        self,
        formatter: LineFormatter,
        created: float,
        record: AuditRecord,
        outcome: str,
        reason: str,
        request_id: str | None,
    ) -> None:
        self._formatter, self._created, self._record = formatter, created, record
        self._outcome, self._reason, self._request_id = outcome, reason, request_id

    def render(self) -> str:
        request_id = self._request_id
        message = self._record.message(self._outcome, self._reason, request_id)
        fields = {"http.request.id": request_id} if request_id else {}
        return self._formatter.info_line(audit_log.name, self._created, message, fields)


_current: ContextVar[AuditRecord | None] = ContextVar("tokenauth_audit", default=None)


def begin(grant: str, ip: str | None, client_id: str | None = None) -> AuditRecord:
    """Open the record of the request being served (the current task's)."""
    record = AuditRecord(grant=grant, ip=ip, client_id=client_id)
    _current.set(record)
    return record


def current() -> AuditRecord:
    """The record of the request being served; outside one, a record nobody writes."""
    record = _current.get()
    return record if record is not None else AuditRecord(grant="none", ip=None)
