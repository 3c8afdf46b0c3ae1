"""Token signing and verification: key ids, x5c chains, JWKS and every refusal."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from shared.jose_keys import (
    PrivateKey,
    keys_from_jwks,
    libtrust_key_id,
    load_certificates,
    load_private_key,
    thumbprint,
)
from shared.scope import Scope
from shared.token import Claims, TokenSigner, TokenVerifier
from shared.token_errors import (
    BadAlgorithm,
    InvalidSignature,
    MalformedToken,
    TokenExpired,
    TokenNotYetValid,
    UntrustedKey,
    WrongAudience,
    WrongIssuer,
)
from tokenauth.keygen import certificate_pem, generate_key, key_pem, self_signed_certificate

ISSUER, SERVICE = "portside-auth", "registry.test"


def make_cert(
    key: PrivateKey,
    subject: str,
    issuer_key: PrivateKey,
    issuer: str,
    *,
    ca: bool,
    days: int = 1,
    start: datetime | None = None,
    end: datetime | None = None,
    usage_sign: bool = True,
) -> x509.Certificate:
    """A certificate valid from ``start`` (5 minutes ago) to ``end`` (``days`` later)."""
    begin = start or datetime.now(UTC) - timedelta(minutes=5)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(begin)
        .not_valid_after(end or begin + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not usage_sign:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, True, False, False, False, False, False, False),
            critical=True,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def claims(**overrides: Any) -> Claims:
    base = Claims.issue(
        issuer=ISSUER,
        subject="alice",
        audience=SERVICE,
        lifetime=timedelta(minutes=5),
        access=[Scope.of("repository", "alice/app", ["pull", "push"])],
    )
    return dataclasses.replace(base, **overrides)


@pytest.fixture(scope="module")
def es_signer() -> TokenSigner:
    key = generate_key("ES256")
    return TokenSigner(key, [self_signed_certificate(key, "signer")])


def verifier_for(signer: TokenSigner, **kwargs: object) -> TokenVerifier:
    options: dict[str, object] = {"issuer": ISSUER, "audience": SERVICE}
    options.update(kwargs)
    options.setdefault("trusted_certs", signer.chain)
    return TokenVerifier(**options)  # type: ignore[arg-type]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def header_of(token: str) -> dict[str, object]:
    return dict(jwt.get_unverified_header(token))


def test_rfc7638_thumbprint_vector() -> None:
    # RFC 7638 section 3.1.
    jwk = {
        "kty": "RSA",
        "e": "AQAB",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tS"
        "oc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGj"
        "QR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bF"
        "TWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
    }
    key = keys_from_jwks({"keys": [jwk]})["NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"]
    assert thumbprint(key) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_libtrust_key_id_shape() -> None:
    kid = libtrust_key_id(generate_key("ES256").public_key())
    groups = kid.split(":")
    assert len(groups) == 12 and all(len(g) == 4 for g in groups)
    assert set(kid) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567:")


def test_header_carries_kid_x5c_and_round_trips(es_signer: TokenSigner) -> None:
    token = es_signer.sign(claims())
    header = header_of(token)
    assert header["alg"] == "ES256" and header["typ"] == "JWT"
    assert header["kid"] == thumbprint(es_signer.public_key)
    leaf = x509.load_der_x509_certificate(base64.b64decode(str(header["x5c"][0])))  # type: ignore[index]
    assert leaf == es_signer.chain[0]
    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload["aud"] == SERVICE  # a plain string: registry 2.8 rejects a list
    assert isinstance(payload["exp"], int)
    verified = verifier_for(es_signer).verify(token)
    assert verified.subject == "alice"
    assert verified.allows("repository", "alice/app", "push")
    assert not verified.allows("repository", "alice/app", "delete")
    assert not verified.allows("repository", "bob/app", "pull")


@pytest.mark.parametrize("algorithm", ["RS256", "ES384"])
def test_other_key_types(algorithm: str) -> None:
    key = generate_key(algorithm, rsa_bits=2048)
    signer = TokenSigner(key, [self_signed_certificate(key, "signer")])
    assert signer.algorithm == algorithm
    assert verifier_for(signer).verify(signer.sign(claims())).subject == "alice"


@pytest.mark.parametrize(("algorithm", "length"), [("ES256", 64), ("ES384", 96)])
def test_ecdsa_signatures_are_fixed_length_r_and_s(algorithm: str, length: int) -> None:
    """JWS wants r and s each padded to the curve's size (RFC 7518 3.4), not DER: about
    one signature in 128 has an r or s short enough to need the padding, so 300 tokens
    meet it; each must verify with PyJWT too, an independent implementation."""
    key = generate_key(algorithm)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    signer = TokenSigner(key)
    for _ in range(300):
        token = signer.sign(claims())
        signature = base64.urlsafe_b64decode(token.rsplit(".", 1)[1] + "==")
        assert len(signature) == length
        jwt.decode(token, key.public_key(), algorithms=[algorithm], audience=SERVICE)


def test_ed25519_by_kid() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    signer = TokenSigner(key, [self_signed_certificate(key, "ed")])
    assert verifier_for(signer).verify(signer.sign(claims())).audience == SERVICE


def test_kid_only_thumbprint_and_libtrust(es_signer: TokenSigner) -> None:
    bare = TokenSigner(es_signer.key)  # no chain: header has kid only
    verifier = verifier_for(es_signer)
    assert verifier.verify(bare.sign(claims())).subject == "alice"
    payload = claims().to_payload()
    legacy = jwt.encode(
        payload, es_signer.key, "ES256", {"kid": libtrust_key_id(es_signer.public_key)}
    )
    assert verifier.verify(legacy).subject == "alice"


def test_jwks_verification(es_signer: TokenSigner) -> None:
    document = json.loads(json.dumps(es_signer.jwks()))
    assert document["keys"][0]["kid"] == es_signer.kid
    verifier = verifier_for(es_signer, trusted_certs=(), jwks=document)
    assert verifier.verify(es_signer.sign(claims())).subject == "alice"
    other = TokenSigner(generate_key("ES256"))
    with pytest.raises(UntrustedKey):
        verifier.verify(other.sign(claims()))


def test_untrusted_self_signed_chain_is_refused(es_signer: TokenSigner) -> None:
    key = generate_key("ES256")
    stranger = TokenSigner(key, [self_signed_certificate(key, "signer")])
    with pytest.raises(UntrustedKey):
        verifier_for(es_signer).verify(stranger.sign(claims()))


def test_expired_and_not_yet_valid(es_signer: TokenSigner) -> None:
    verifier = verifier_for(es_signer, leeway=timedelta(seconds=5))
    past = claims().issued_at - 3600
    with pytest.raises(TokenExpired):
        verifier.verify(es_signer.sign(claims(expires_at=past, not_before=past - 300)))
    future = claims().issued_at + 3600
    with pytest.raises(TokenNotYetValid):
        verifier.verify(es_signer.sign(claims(not_before=future, expires_at=future + 300)))


def test_leeway_tolerates_small_skew(es_signer: TokenSigner) -> None:
    just_expired = claims().issued_at - 10
    token = es_signer.sign(claims(expires_at=just_expired))
    assert verifier_for(es_signer, leeway=timedelta(seconds=60)).verify(token)
    with pytest.raises(TokenExpired):
        verifier_for(es_signer, leeway=timedelta(0)).verify(token)


def test_wrong_audience_and_issuer(es_signer: TokenSigner) -> None:
    with pytest.raises(WrongAudience):
        verifier_for(es_signer).verify(es_signer.sign(claims(audience="other")))
    with pytest.raises(WrongIssuer):
        verifier_for(es_signer).verify(es_signer.sign(claims(issuer="mallory")))


def test_audience_list_containing_ours_is_accepted(es_signer: TokenSigner) -> None:
    payload = {**claims().to_payload(), "aud": ["other", SERVICE]}
    token = jwt.encode(payload, es_signer.key, "ES256", {"kid": es_signer.kid})
    assert verifier_for(es_signer).verify(token).audience == SERVICE


def test_tampered_payload_fails_signature(es_signer: TokenSigner) -> None:
    head, _, sig = es_signer.sign(claims()).split(".")
    forged = {**claims().to_payload(), "sub": "admin"}
    body = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidSignature):
        verifier_for(es_signer).verify(f"{head}.{body}.{sig}")


def test_alg_none_is_refused(es_signer: TokenSigner) -> None:
    header = json.dumps({"alg": "none", "kid": es_signer.kid}).encode()
    token = b64url(header) + "." + b64url(json.dumps(claims().to_payload()).encode()) + "."
    with pytest.raises(BadAlgorithm):
        verifier_for(es_signer).verify(token)


def test_hmac_with_public_key_as_secret_is_refused() -> None:
    key = generate_key("RS256", rsa_bits=2048)
    signer = TokenSigner(key, [self_signed_certificate(key, "rsa")])
    secret = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64url(json.dumps({"kid": signer.kid, "alg": "HS256", "typ": "JWT"}).encode())
    signing_input = header + "." + b64url(json.dumps(claims().to_payload()).encode())
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    token = signing_input + "." + b64url(mac)
    with pytest.raises(BadAlgorithm):
        verifier_for(signer).verify(token)


def test_allow_list_and_algorithm_key_mismatch(es_signer: TokenSigner) -> None:
    with pytest.raises(BadAlgorithm):
        verifier_for(es_signer, algorithms=["RS256"]).verify(es_signer.sign(claims()))
    with pytest.raises(BadAlgorithm):
        TokenVerifier(issuer=ISSUER, audience=SERVICE, algorithms=["ES256", "HS256"])
    with pytest.raises(BadAlgorithm):
        TokenVerifier(issuer=ISSUER, audience=SERVICE, algorithms=["none"])
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(claims().to_payload(), rsa_key, "RS256", {"kid": es_signer.kid})
    with pytest.raises(BadAlgorithm):  # the kid names an EC key, the token says RS256
        verifier_for(es_signer).verify(token)


def test_intermediate_chain() -> None:
    root_key, mid_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = make_cert(root_key, "root", root_key, "root", ca=True)
    mid = make_cert(mid_key, "mid", root_key, "root", ca=True)
    leaf = make_cert(leaf_key, "leaf", mid_key, "mid", ca=False)
    signer = TokenSigner(leaf_key, [leaf, mid])
    verifier = TokenVerifier(issuer=ISSUER, audience=SERVICE, trusted_certs=[root])
    assert verifier.verify(signer.sign(claims())).subject == "alice"
    with pytest.raises(UntrustedKey):  # the leaf alone does not reach the root
        verifier.verify(TokenSigner(leaf_key, [leaf]).sign(claims()))
    not_ca = make_cert(mid_key, "mid", root_key, "root", ca=False)
    with pytest.raises(UntrustedKey):
        verifier.verify(TokenSigner(leaf_key, [leaf, not_ca]).sign(claims()))


def test_expired_certificate_and_key_usage() -> None:
    root_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), generate_key("ES256")
    root = make_cert(root_key, "root", root_key, "root", ca=True)
    verifier = TokenVerifier(issuer=ISSUER, audience=SERVICE, trusted_certs=[root])
    old = make_cert(
        leaf_key, "leaf", root_key, "root", ca=False, start=datetime.now(UTC) - timedelta(days=9)
    )
    with pytest.raises(UntrustedKey, match="not valid now"):
        verifier.verify(TokenSigner(leaf_key, [old]).sign(claims()))
    no_sign = make_cert(leaf_key, "leaf", root_key, "root", ca=False, usage_sign=False)
    with pytest.raises(UntrustedKey, match="key usage"):
        verifier.verify(TokenSigner(leaf_key, [no_sign]).sign(claims()))


def test_an_expired_trusted_root_vouches_for_nothing_and_the_chain_expiry_is_told() -> None:
    """As Go's x509.Verify: the root that ends the path must be valid too. A verdict's
    ``key_valid_until`` is the earliest ``not_valid_after`` on the path, root included."""
    root_key, leaf_key = generate_key("ES256"), generate_key("ES256")
    ago = datetime.now(UTC) - timedelta(days=9)
    expired_root = make_cert(root_key, "root", root_key, "root", ca=True, start=ago)
    leaf = make_cert(leaf_key, "leaf", root_key, "root", ca=False, days=3)
    signer = TokenSigner(leaf_key, [leaf])
    with pytest.raises(UntrustedKey, match="not trusted"):
        TokenVerifier(issuer=ISSUER, audience=SERVICE, trusted_certs=[expired_root]).verify(
            signer.sign(claims())
        )
    root = make_cert(root_key, "root", root_key, "root", ca=True, days=2)
    checked = TokenVerifier(issuer=ISSUER, audience=SERVICE, trusted_certs=[root]).check(
        signer.sign(claims())
    )
    assert checked.key_valid_until == root.not_valid_after_utc.timestamp()  # sooner than leaf
    by_kid = verifier_for(signer, trusted_certs=[], jwks=signer.jwks()).check(
        TokenSigner(leaf_key).sign(claims())
    )
    assert by_kid.key_valid_until is None  # a key trusted by itself: no chain to expire


def test_token_type_check_and_malformed(es_signer: TokenSigner) -> None:
    refresh = verifier_for(es_signer, token_type="refresh+jwt")
    with pytest.raises(MalformedToken):
        refresh.verify(es_signer.sign(claims()))
    assert refresh.verify(es_signer.sign(claims(), typ="refresh+jwt"))
    for junk in ("abc", "a.b.c", "x" * 70_000):
        with pytest.raises(MalformedToken):
            verifier_for(es_signer).verify(junk)


def test_malformed_access_claim(es_signer: TokenSigner) -> None:
    payload = {**claims().to_payload(), "access": [{"type": 5}]}
    token = jwt.encode(payload, es_signer.key, "ES256", {"kid": es_signer.kid})
    with pytest.raises(MalformedToken):
        verifier_for(es_signer).verify(token)


def test_extra_claims_survive(es_signer: TokenSigner) -> None:
    issued = Claims.issue(
        issuer=ISSUER, subject="a", audience=SERVICE, lifetime=timedelta(60), extra={"svc": "x"}
    )
    assert verifier_for(es_signer).verify(es_signer.sign(issued)).extra == {"svc": "x"}


def test_key_loading_and_signer_checks(es_signer: TokenSigner) -> None:
    key = load_private_key(key_pem(es_signer.key))
    assert thumbprint(key.public_key()) == es_signer.kid
    assert load_certificates(certificate_pem(es_signer.chain[0])) == list(es_signer.chain)
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the point of the test
    with pytest.raises(BadAlgorithm):
        load_private_key(key_pem(weak))
    with pytest.raises(ValueError, match="chain"):
        TokenSigner(generate_key("ES256"), es_signer.chain)


def test_jwks_refuses_secret_and_private_keys(es_signer: TokenSigner) -> None:
    secret = {"kty": "oct", "k": "c2VjcmV0", "kid": "s"}
    private = {**es_signer.jwks()["keys"][0], "d": "AAAA"}
    for document in ({"keys": [secret]}, {"keys": [private]}, {"keys": ["x"]}, {}):
        with pytest.raises(ValueError):
            keys_from_jwks(document)


@pytest.mark.parametrize(
    ("times", "not_before"),
    [
        ({"nbf": 1_000, "iat": 900}, 1_000),
        ({"nbf": 900, "iat": 1_000}, 1_000),  # the verifier refuses a future iat as well
        ({"iat": 1_000}, 1_000),
        ({}, 0),  # neither: no lower bound (it used to be exp, the last second)
    ],
)
def test_not_before_is_the_first_second_the_token_is_accepted(
    times: dict[str, int], not_before: int
) -> None:
    payload = {"iss": ISSUER, "aud": SERVICE, "exp": 5_000, **times}
    assert Claims.from_payload(payload, SERVICE).not_before == not_before
