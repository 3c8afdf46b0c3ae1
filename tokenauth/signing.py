"""The token signer of a configuration: its key file and certificate chain."""

from __future__ import annotations

import logging
from pathlib import Path

from shared.config import ConfigError
from shared.keyfiles import KeyFileError, read_certificates
from shared.token import BadAlgorithm, TokenSigner, load_private_key
from tokenauth.config import TokenConfig

log = logging.getLogger(__name__)


def load_signer(config: TokenConfig) -> TokenSigner:
    """Read ``token.key`` and ``token.certificate``; raise :class:`ConfigError` naming the key."""
    try:
        key = load_private_key(Path(config.key).read_bytes())
    except (OSError, ValueError, TypeError, BadAlgorithm) as error:
        raise ConfigError(f"token.key: cannot load the signing key: {error}") from None
    chain = []
    if config.certificate:
        try:
            chain = read_certificates(config.certificate)
        except KeyFileError as error:
            raise ConfigError(f"token.certificate: {error}") from None
    else:
        log.warning("token.certificate is not set: tokens carry no x5c, which registry 2.x needs")
    try:
        return TokenSigner(key, chain)
    except (ValueError, BadAlgorithm) as error:
        raise ConfigError(f"token.certificate: {error}") from None
