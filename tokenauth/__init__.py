"""tokenauth: the Docker token-authentication server (``docker login`` is sent here)."""
