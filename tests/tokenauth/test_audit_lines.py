"""Audit lines queued as values (``tokenauth.audit.AuditLine``): no log record is made
for them with the service's own log set-up, and each is the line the record path writes."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

from shared import log_queue
from shared.log_queue import BatchStreamHandler, queued_logging
from tests.shared.test_direct_lines import output
from tests.support.log_keeper import Keeper
from tests.tokenauth.conftest import ClientFactory, fetch_token
from tokenauth.audit import audit_log

__all__ = ["output"]  # the fixture, shared with the access lines' test

SCOPE = "repository:alice/app:push,pull"


async def test_audit_lines_skip_records_and_say_the_same(
    make_client: ClientFactory, output: io.StringIO
) -> None:
    client = await make_client()
    root = logging.getLogger()
    # As in the service: configure_logging's handler alone (not pytest's capturing ones).
    root.handlers = [h for h in root.handlers if isinstance(h, BatchStreamHandler)]
    made: list[str] = []
    factory = logging.getLogRecordFactory()

    def counting(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        made.append(record.name)
        return record

    logging.setLogRecordFactory(counting)
    try:
        with queued_logging():
            direct = log_queue.direct_lines
            assert direct is not None
            status, _, _ = await fetch_token(client, SCOPE, auth=("alice", "alice-pw"))
            assert status == 200
            assert "tokenauth.audit" not in made  # the line left as values
            keeper = Keeper()
            audit_log.addHandler(keeper)  # a handler of the logger's own: the record path
            try:
                status, _, _ = await fetch_token(client, SCOPE, auth=("alice", "alice-pw"))
                assert status == 200
            finally:
                audit_log.removeHandler(keeper)
    finally:
        logging.setLogRecordFactory(factory)
    assert len(keeper.records) == 1 and made.count("tokenauth.audit") == 1
    lines = [json.loads(line) for line in output.getvalue().splitlines()]
    direct_line, record_line = [line for line in lines if line["logger"] == "tokenauth.audit"]
    messages = []
    for line in (direct_line, record_line):
        assert line.pop("time").endswith("Z")
        message = json.loads(line.pop("msg"))
        # The request id twice: stamped as the field, and in the decision itself.
        assert message.pop("request_id") == line.pop("http.request.id")
        assert message.pop("jti")
        messages.append(message)
    assert direct_line == record_line
    assert list(direct_line) == list(record_line)  # and in the same order
    assert messages[0] == messages[1]
    assert list(messages[0]) == list(messages[1])
    assert messages[0]["outcome"] == "granted" and messages[0]["account"] == "alice"
    assert direct_line["environment"] == "test"
