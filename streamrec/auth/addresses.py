"""Which address a request comes from, for per-address rate limits.

The socket peer is the client unless it is one of our own proxies (``auth.trusted_proxies``).
Then ``X-Forwarded-For`` is read from the right, where each proxy appended the address it saw,
and the first address that is not a trusted proxy is the client. Entries left of it were written
by the client itself and prove nothing, so a client behind a trusted proxy cannot pick its own
bucket, and a client that reaches the service directly cannot either (its header is ignored).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_address(text: str) -> Address | None:
    """An address from a peer or a header entry (IPv4-mapped IPv6 as IPv4; ports dropped), or None."""
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class ClientAddresses:
    def __init__(self, trusted_proxies: Iterable[str]) -> None:
        self._trusted: tuple[Network, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in trusted_proxies)

    def trusted(self, address: Address) -> bool:
        return any(address.version == network.version and address in network for network in self._trusted)

    def client(self, peer: str | None, forwarded_for: Iterable[str] = ()) -> str:
        """The client's address as text (``"unknown"`` when the server was not told the peer)."""
        address = parse_address(peer) if peer else None
        if address is None:
            return peer or "unknown"
        if not self.trusted(address):
            return str(address)
        hops = [hop for header in forwarded_for for hop in header.split(",") if hop.strip()]
        for hop in reversed(hops):
            forwarded = parse_address(hop)
            if forwarded is None:
                break  # a proxy wrote something unreadable: the last proxy we trust is all we know
            address = forwarded
            if not self.trusted(address):
                break
        return str(address)
