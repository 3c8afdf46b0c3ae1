"""Authentication: who is asking. Kept apart from authorization (``tokenauth.acl``)."""

from tokenauth.authn.base import Authenticator
from tokenauth.authn.htpasswd import HtpasswdAuthenticator

__all__ = ["Authenticator", "HtpasswdAuthenticator"]
