"""``http.tls.ciphersuites``: Distribution's (Go's) cipher suite names, applied to an
OpenSSL context.

Only TLS 1.0-1.2 suites can be chosen. The TLS 1.3 names are accepted, as Distribution
accepts them, but change nothing: Go's crypto/tls always offers all three TLS 1.3 suites,
and Python's ``ssl`` module has no way to restrict them either.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence

# Go's crypto/tls names (tls.CipherSuites() and tls.InsecureCipherSuites()) → OpenSSL's.
TLS12_SUITES = {
    "TLS_RSA_WITH_RC4_128_SHA": "RC4-SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA": "DES-CBC3-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256": "AES128-SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA": "ECDHE-ECDSA-RC4-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA": "ECDHE-RSA-RC4-SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA": "ECDHE-RSA-DES-CBC3-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256": "ECDHE-ECDSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256": "ECDHE-RSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
# Go's older aliases of the two ChaCha20 suites.
TLS12_SUITES["TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305"] = TLS12_SUITES[
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"
]
TLS12_SUITES["TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305"] = TLS12_SUITES[
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
]
TLS13_SUITES = frozenset(
    {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
)


class CipherSuiteError(ValueError):
    """The list cannot be applied; the message names the suite or says why."""


def check_names(names: Sequence[str]) -> list[str]:
    """Config check: every name is one of Go's (the message never quotes a value)."""
    for index, name in enumerate(names):
        if name not in TLS12_SUITES and name not in TLS13_SUITES:
            raise ValueError(
                f"item {index} is not a cipher suite name of Distribution's, such as "
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
            )
    return list(names)


def apply_cipher_suites(context: ssl.SSLContext, names: Sequence[str]) -> None:
    """Restrict the TLS 1.0-1.2 suites of ``context`` to ``names`` (empty: no change).

    Raises CipherSuiteError when a named suite is not available in this OpenSSL (RC4 and
    3DES are not, at its default security level), or when the list names only TLS 1.3
    suites while the context still allows TLS 1.2: that would leave TLS 1.2 without any.
    """
    if not names:
        return
    wanted = [TLS12_SUITES[name] for name in names if name in TLS12_SUITES]
    if not wanted:
        if context.minimum_version < ssl.TLSVersion.TLSv1_3:
            raise CipherSuiteError(
                "names only TLS 1.3 suites, which are always enabled; name the TLS 1.2 "
                "suites to allow, or set minimumtls: tls1.3"
            )
        return
    try:
        context.set_ciphers(":".join(wanted))
    except ssl.SSLError:
        named = ", ".join(name for name in names if name in TLS12_SUITES)
        raise CipherSuiteError(f"not available in this OpenSSL: {named}") from None
    available = {cipher["name"] for cipher in context.get_ciphers()}
    for name in names:
        if name in TLS12_SUITES and TLS12_SUITES[name] not in available:
            raise CipherSuiteError(f"{name} is not available in this OpenSSL")
