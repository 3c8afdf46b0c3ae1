"""Fresh request ids (``shared.request_context.new_request_id``): version-4 UUIDs of the
RFC 4122 variant, in the canonical text, random in every other digit."""

from __future__ import annotations

import uuid

from shared.request_context import new_request_id


def test_fresh_ids_are_random_version_4_uuids() -> None:
    ids = [new_request_id() for _ in range(4000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text  # canonical: lower case, dashes in place
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
    digits = [text.replace("-", "") for text in ids]
    for position in range(32):
        seen = {d[position] for d in digits}
        if position == 12:
            assert seen == {"4"}
        elif position == 16:
            assert seen == set("89ab")
        else:  # 4,000 draws miss one of 16 digits with odds of about 1e-111
            assert seen == set("0123456789abcdef"), position
