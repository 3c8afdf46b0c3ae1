"""Code shared by the registry and the token server: errors, digests, config, scopes, tokens."""
