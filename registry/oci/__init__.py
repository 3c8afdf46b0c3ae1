"""The content model the registry serves, as the OCI specs define it: digests and media
types. Pure definitions that import nothing of the registry, so storage, handlers and
everything else may use them."""
