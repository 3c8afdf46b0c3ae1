"""The portside registry: Docker Registry V2 / OCI Distribution v1.1 on aiohttp."""
