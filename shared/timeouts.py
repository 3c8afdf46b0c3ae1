"""The connection timeouts' defaults and their config check, apart from
``shared.serving``, which imports aiohttp's server: the services' configuration is also
loaded by one-shot commands (``registry garbage-collect``) that serve nothing."""

from __future__ import annotations

from datetime import timedelta

# The connection timeouts of both services (http.readheadertimeout, http.idletimeout). A
# request head is a few hundred bytes: 20 s is ample on any link. Idle
# connections outlive Docker's (Go's) 90 s and the usual proxies' 60-75 s, so the client
# closes first and never sends a request on a connection the server is closing.
DEFAULT_READ_HEADER_TIMEOUT = timedelta(seconds=20)
DEFAULT_IDLE_TIMEOUT = timedelta(seconds=120)
# http.bodytimeout: a client streaming a body it produces as it goes (docker compresses
# layers during a push) pauses for well under a second; a minute is generous.
DEFAULT_BODY_TIMEOUT = timedelta(seconds=60)


def positive_duration(value: timedelta) -> timedelta:
    """Config check for the timeouts: zero would close every connection at once."""
    if value <= timedelta(0):
        raise ValueError("must be a positive duration such as 20s")
    return value
