"""IP addresses and networks of the configuration (``http.trustedproxies``): parsing and
checking them, without the web framework, which one-shot commands such as
``registry garbage-collect`` do not import (aiohttp took about 0.15 s of their start-up)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """``http.trustedproxies``: addresses or CIDRs; ValueError names a bad one."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or CIDR") from None
    return tuple(networks)


def check_networks(values: list[str]) -> list[str]:
    """Config check for ``http.trustedproxies``."""
    parse_networks(values)
    return values
