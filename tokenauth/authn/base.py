"""The interface every user store implements."""

from __future__ import annotations

from typing import Protocol

from shared.ratelimit import Admission


class Authenticator(Protocol):
    """Checks credentials and says whether an account still exists as it did."""

    async def authenticate(
        self, user: str, password: str, admission: Admission | None = None
    ) -> bool:
        """Whether ``password`` is ``user``'s current password.

        Counts the check in ``admission``'s failure buckets (``Throttled`` when one is
        empty); may raise ``shared.credentials.VerifierBusy`` when it cannot check now. A
        refusal must take as long whether or not the user exists.
        """
        ...

    def credential_id(self, user: str) -> str | None:
        """An opaque id of ``user``'s current credential, None if the user is gone.

        Refresh tokens carry it, so removing a user or changing their password ends
        every refresh token issued before.
        """
        ...
