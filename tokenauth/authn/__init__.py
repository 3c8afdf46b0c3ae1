"""Authentication: who is asking. Kept apart from authorization (``tokenauth.acl``)."""

from shared.credentials import HtpasswdAuthenticator
from tokenauth.authn.base import Authenticator

__all__ = ["Authenticator", "HtpasswdAuthenticator"]
