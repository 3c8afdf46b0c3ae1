"""tokenauth's Prometheus metrics (``http.debug.prometheus``): token decisions, bcrypt
checks, rate-limit refusals, and reloads of the users files and the ACL.

Every label comes from a bounded set: the grant types tokenauth knows, the error codes of
its table, fixed reasons. A client's text (a made-up ``grant_type``) is never a label.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from shared.errors import TOOMANYREQUESTS, UNAVAILABLE
from shared.metrics import LabelCache

GRANTS = frozenset({"anonymous", "basic", "password", "refresh_token", "none"})
# bcrypt at cost 10 to 14 takes ~50 ms to ~1 s; a queue for the check slots adds to it.
_BCRYPT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8)
# Refusals that are the rate limits' (the error code of each, lower-cased as audited).
_RATE_LIMITED = {
    TOOMANYREQUESTS.code.lower(): "throttled",  # too many failed logins from a user or address
    UNAVAILABLE.code.lower(): "busy",  # every bcrypt check slot taken
}


class TokenAuthMetrics:
    """The metrics of one tokenauth app, in ``registry`` (its own)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.tokens = Counter(
            "tokenauth_token_requests",
            "Token requests by outcome (granted, or the error code refusing it) and grant "
            "type (anonymous, basic, password, refresh_token; other for unknown ones).",
            ["outcome", "grant_type"],
            registry=r,
        )
        self.bcrypt = Histogram(
            "tokenauth_bcrypt_check_seconds",
            "bcrypt checks of a password, by result, and their latency as the server "
            "sees it (queueing for a check thread included).",
            ["result"],
            buckets=_BCRYPT_BUCKETS,
            registry=r,
        )
        self.ratelimited = Counter(
            "tokenauth_ratelimit_refusals",
            "Logins refused by the rate limits: throttled (failed-login budget spent) or "
            "busy (no bcrypt check slot free).",
            ["reason"],
            registry=r,
        )
        self.reloads = Counter(
            "tokenauth_reloads",
            "Re-reads of a changed users file or ACL, by file (users, acl) and result "
            "(success; failure: the previous contents stay in force).",
            ["file", "result"],
            registry=r,
        )
        self.authn_checks = Histogram(
            "tokenauth_authenticator_check_seconds",
            "Password checks by authenticators other than the htpasswd files (ldap, "
            "extauth), by result (match, mismatch, unknown, error) and their latency.",
            ["authenticator", "result"],
            buckets=_BCRYPT_BUCKETS,
            registry=r,
        )
        self._tokens = LabelCache(self.tokens.labels)
        self._authn = LabelCache(self.authn_checks.labels)
        self._bcrypt = LabelCache(self.bcrypt.labels)
        self._ratelimited = LabelCache(self.ratelimited.labels)
        self._reloads = LabelCache(self.reloads.labels)

    def token_decided(self, grant: str, outcome: str) -> None:
        """One token request answered; ``outcome`` is ``granted`` or an error code."""
        self._tokens(outcome, grant if grant in GRANTS else "other").inc()
        reason = _RATE_LIMITED.get(outcome)
        if reason is not None:
            self._ratelimited(reason).inc()

    def bcrypt_checked(self, seconds: float, ok: bool) -> None:
        self._bcrypt("match" if ok else "mismatch").observe(seconds)

    def authenticator_checked(self, authenticator: str, seconds: float, result: str) -> None:
        self._authn(authenticator, result).observe(seconds)

    def users_reloaded(self, ok: bool) -> None:
        self._reloads("users", "success" if ok else "failure").inc()

    def acl_reloaded(self, ok: bool) -> None:
        self._reloads("acl", "success" if ok else "failure").inc()
