"""The address of the client behind a request: the one place both services read it.

Behind a load balancer every connection comes from the balancer, and the client's own
address is in ``Forwarded`` (RFC 7239, ``for=``) or ``X-Forwarded-For``. Those headers are
whatever the sender wrote, so they are read only when the connection comes from a proxy
the configuration trusts (``http.trustedproxies``, a list of CIDRs); from anyone else they
are ignored and the connection's own peer is the client. Through trusted proxies the list
is walked from the right, the hop nearest to us, and the first address that is not a
trusted proxy is the client: whatever a client prepends is never reached. ``Forwarded``
wins over ``X-Forwarded-For`` when both are present, as it is the standard.

Each request's address is worked out once, as it reaches the app (the request-id
middleware, :mod:`shared.request_context`, calls :func:`note_client_address` with the
proxies the service trusts); everything
that needs it (rate limits, the token server's ``ip`` ACL rules, audit and access lines,
log lines naming a client) reads it with :func:`client_address`.

aiohttp-remotes was considered: its strict mode answers 400 to an untrusted peer that sends
the header (here it is ignored, as the issue asks), it wants one trusted set per hop, and
it rewrites the request's host and scheme too; the walk below is a few lines of stdlib.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from aiohttp import web
from aiohttp.web_request import BaseRequest

from shared.networks import IPAddress, IPNetwork

CLIENT_ADDRESS = web.RequestKey("client_address", str)
# Hops read from the forwarding headers: real chains have a handful, and the walk stops at
# the first untrusted address anyway; a longer list costs nothing more than this bound.
MAX_HOPS = 32


def _address(text: str) -> IPAddress | None:
    """An address from a header or a peer: ``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``::1``;
    None for anything else (``unknown``, an obfuscated ``_node``, garbage)."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack socket's view of an IPv4 peer
    return address


def _forwarded_hops(request: BaseRequest) -> list[str]:
    """The ``for=`` values of ``Forwarded`` if present, else ``X-Forwarded-For``; left to right."""
    if "Forwarded" in request.headers:
        # aiohttp parses RFC 7239 (quoted strings, several headers) into one mapping per hop.
        return [hop.get("for", "") for hop in request.forwarded[-MAX_HOPS:]]
    values = request.headers.getall("X-Forwarded-For", [])
    hops = [hop for value in values for hop in value.split(",")]
    return hops[-MAX_HOPS:]


def _trusted(address: IPAddress, trusted: Sequence[IPNetwork]) -> bool:
    return any(address in network for network in trusted)


def resolve(request: BaseRequest, trusted: Sequence[IPNetwork]) -> str | None:
    """The client's address given the ``trusted`` proxies (see the module's docstring)."""
    peer = request.remote
    if not trusted or not peer:
        return peer  # the common case, without parsing anything
    client = _address(peer)
    if client is None or not _trusted(client, trusted):
        return peer
    for hop in reversed(_forwarded_hops(request)):
        address = _address(hop)
        if address is None:
            break  # an unreadable hop: the last trusted proxy is as far as anyone can tell
        client = address
        if not _trusted(address, trusted):
            break
    return str(client)


def client_address(request: BaseRequest) -> str | None:
    """The client's address: what :func:`note_client_address` found for a request the app
    served, else the peer (a request aiohttp's parser refused never reached the app, and
    its headers are not to be believed anyway)."""
    try:
        return request[CLIENT_ADDRESS]  # request.get would be one Python call more
    except KeyError:
        return request.remote


def note_client_address(request: web.Request, trusted: Sequence[IPNetwork]) -> None:
    """Work out ``request``'s client address behind the ``trusted`` proxies, once (without
    any, it is the peer), and note it on the request for :func:`client_address`.

    Noted even when it is only the peer: every request's access line reads it, and a
    missing key costs a ``KeyError`` raised and caught inside ``request.get``, three times
    what noting it does."""
    # Without trusted proxies (the usual set-up) it is the peer: one call fewer per request.
    address = resolve(request, trusted) if trusted else request.remote
    if address is not None:
        request[CLIENT_ADDRESS] = address
