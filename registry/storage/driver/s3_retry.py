"""Failures of S3 requests: which are worth retrying and the backoff between tries. What
keeps failing becomes the driver's ``StorageUnavailable``."""

from __future__ import annotations

import random
from dataclasses import dataclass

import aiohttp
from botocore.exceptions import (
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    ResponseStreamingError,
)

NOT_FOUND = frozenset({"NoSuchKey", "NotFound", "404"})
TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequests",
        "TooManyRequestsException",
        "BandwidthLimitExceeded",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
    }
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int  # tries in all, at least 1
    delay: float  # the first backoff in seconds, doubled at each try
    cap: float = 5.0

    def backoff(self, attempt: int) -> float:
        """Equal jitter: half the exponential delay plus a random part of the other half."""
        ceiling = min(self.cap, self.delay * 2.0**attempt)
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def error_status(error: ClientError) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def is_transient_answer(status: int, code: str) -> bool:
    """Whether an S3 error answer (HTTP status, S3 error code) is worth retrying."""
    return code in TRANSIENT_CODES or status >= 500 or status == 429


def is_transient(error: Exception) -> bool:
    if isinstance(error, ClientError):
        return is_transient_answer(error_status(error), error_code(error))
    return isinstance(
        error,
        HTTPClientError
        | ResponseStreamingError
        | IncompleteReadError
        | aiohttp.ClientError
        | TimeoutError
        | ConnectionError,
    )


def describe(error: BaseException) -> str:
    """An error without request details (URLs may carry credentials when presigned)."""
    if isinstance(error, ClientError):
        return f"{error_code(error) or 'error'} (HTTP {error_status(error)})"
    return type(error).__name__
