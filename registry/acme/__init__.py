"""Let's Encrypt (ACME) certificates for ``http.tls.letsencrypt``.

``store`` keeps the account key and the certificate in ``cachefile``; ``tlsalpn`` answers
the TLS-ALPN-01 challenge on the registry's own TLS port (as Distribution's autocert
does); ``issuer`` runs one ACME order with certbot's ``acme`` library; ``manager`` serves
the certificate, orders it when missing and renews it before it expires.
"""
