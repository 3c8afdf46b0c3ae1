"""One ACME order for the configured names, with certbot's ``acme`` library.

``acme`` (the client library of certbot, maintained by the EFF) does the protocol — JWS
signing, nonces, account registration, order polling and finalisation. It has no
TLS-ALPN-01 type of its own, so the challenge is read from its JSON and answered with
the empty response RFC 8737 asks for; the proof itself is served by :mod:`tlsalpn`.

Blocking (``requests``): the manager runs it in a thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from acme import challenges, client, crypto_util, errors, messages
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.b64 import b64encode
from josepy.jwa import ES256
from josepy.jwk import JWKEC

from registry.acme.store import CachedState, new_private_key_pem
from registry.acme.tlsalpn import challenge_certificate

log = logging.getLogger("registry.acme")

TLS_ALPN_01 = "tls-alpn-01"
ORDER_TIMEOUT = timedelta(minutes=3)

# (name, certificate PEM, key PEM) while a challenge for name is pending; None to withdraw.
Responder = Callable[[str, tuple[bytes, bytes] | None], None]


class ACMEError(Exception):
    """The order failed; the message says where."""


class _TLSALPN01Response(challenges.ChallengeResponse):
    """The (empty) response that tells the server the challenge can be validated."""

    typ = TLS_ALPN_01

    def __bool__(self) -> bool:
        # Without fields the object has length 0, and the client would then send an empty
        # payload (a POST-as-GET, which only reads the challenge) instead of "{}".
        return True


def _account_jwk(state: CachedState) -> JWKEC:
    key = serialization.load_pem_private_key(state.account_key, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ACMEError("the account key in the cachefile is not an EC key")
    return JWKEC(key=key)


def _register(
    acme: client.ClientV2, net: client.ClientNetwork, state: CachedState, email: str
) -> None:
    if state.account_uri:
        net.account = messages.RegistrationResource(
            uri=state.account_uri, body=messages.Registration()
        )
        return
    registration = messages.NewRegistration.from_data(
        email=email or None, terms_of_service_agreed=True
    )
    try:
        account = acme.new_account(registration)
    except errors.ConflictError as existing:  # the key already has an account
        account = messages.RegistrationResource(uri=existing.location, body=messages.Registration())
        net.account = account
    state.account_uri = account.uri or ""


def _key_authorization(token: str, account: JWKEC) -> str:
    thumbprint = b64encode(account.thumbprint(hash_function=hashes.SHA256)).decode()
    return f"{token}.{thumbprint}"


def _answer(
    acme: client.ClientV2,
    authorization: messages.AuthorizationResource,
    account: JWKEC,
    respond: Responder,
) -> str:
    name = str(authorization.body.identifier.value)
    for body in authorization.body.challenges:
        chall: Any = body.chall
        data = getattr(chall, "jobj", {})
        if data.get("type") == TLS_ALPN_01:
            respond(name, challenge_certificate(name, _key_authorization(data["token"], account)))
            # Posted through the network layer rather than answer_challenge, which insists
            # on the response's "up" Link header that some servers (Debian's pebble 2.3)
            # omit; the authorization is polled by poll_and_finalize either way.
            acme.net.post(
                body.uri,
                _TLSALPN01Response(),
                new_nonce_url=acme.directory["newNonce"],
            )
            return name
    raise ACMEError(f"the ACME server offers no {TLS_ALPN_01} challenge for {name}")


def obtain(
    directory_url: str, email: str, hosts: list[str], state: CachedState, respond: Responder
) -> CachedState:
    """Order a certificate for ``hosts``; the new state (account, key, chain) to cache."""
    account = _account_jwk(state)
    net = client.ClientNetwork(account, alg=ES256, user_agent="portside-registry")
    try:
        acme = client.ClientV2(client.ClientV2.get_directory(directory_url, net), net)
        _register(acme, net, state, email)
        key = new_private_key_pem()
        order = acme.new_order(crypto_util.make_csr(key, hosts))
        answered: list[str] = []
        try:
            for authorization in order.authorizations:
                if authorization.body.status != messages.STATUS_VALID:
                    answered.append(_answer(acme, authorization, account, respond))
            order = acme.poll_and_finalize(
                order, datetime.now() + ORDER_TIMEOUT
            )  # acme compares naive local times
        finally:
            for name in answered:
                respond(name, None)
    except (errors.Error, OSError, ValueError) as error:
        raise ACMEError(f"ACME order at {directory_url} failed: {error}") from error
    log.info("obtained a certificate for %s from %s", ", ".join(hosts), directory_url)
    return CachedState(
        account_key=state.account_key,
        account_uri=state.account_uri,
        key=key,
        chain=order.fullchain_pem.encode(),
    )
