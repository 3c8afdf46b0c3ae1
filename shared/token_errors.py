"""Why a registry bearer token is refused: one exception class per reason.

The verifier raises them, the registry maps them to 401 answers and tokenauth to its
refusals; key loading and chain checks raise them too, so they live apart from all three.
"""

from __future__ import annotations


class TokenError(Exception):
    """A token that must not be accepted; subclasses say why."""


class MalformedToken(TokenError):
    """Not a well-formed JWT, or its claims have the wrong shape."""


class BadAlgorithm(TokenError):
    """``none``, HMAC, an algorithm outside the allow-list, or one that does not fit the key."""


class UntrustedKey(TokenError):
    """The signing key is unknown or its certificate chain does not lead to a trusted root."""


class InvalidSignature(TokenError):
    """The signature does not verify with the key the token names."""


class TokenExpired(TokenError):
    """``exp`` is in the past (beyond the leeway)."""


class TokenNotYetValid(TokenError):
    """``nbf`` or ``iat`` is in the future (beyond the leeway)."""


class WrongAudience(TokenError):
    """The token was issued for another service."""


class WrongIssuer(TokenError):
    """The token was issued by someone else."""
