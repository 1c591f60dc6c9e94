"""The client's address, derived in one place: the socket peer's, unless the peer is a proxy the operator
trusts (TRUSTED_PROXIES), in which case the right-most address of X-Forwarded-For (or, without one, of RFC
7239's Forwarded `for=`, read the same way) that is not itself a trusted proxy. A header that does not parse
leaves the peer's address: a client can never choose the address its failures count against."""

import ipaddress
from collections.abc import Iterator
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def networks(raw: str) -> tuple[Network, ...]:
    """TRUSTED_PROXIES: comma-separated addresses and CIDR blocks; ValueError names one that is neither."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in raw.split(",") if part.strip())


def _address(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(address: Address | None, trusted: tuple[Network, ...]) -> bool:
    return address is not None and any(address in network for network in trusted)


def trusted(peer: str, proxies: tuple[Network, ...]) -> bool:
    """Whether the peer address `peer` is one of the proxies TRUSTED_PROXIES names."""
    return _trusted(_address(peer), proxies)


def _forwarded_for(value: str) -> Iterator[str]:
    """The `for=` of each element of a Forwarded header, unquoted, without brackets or port; "" for an
    element without one (which makes the header malformed)."""
    for element in value.split(","):
        node = ""
        for pair in element.split(";"):
            name, _, text = pair.strip().partition("=")
            if name.lower() == "for":
                node = text.strip('"')
        if node.startswith("["):  # [IPv6] or [IPv6]:port
            node = node[1:].partition("]")[0]
        elif node.count(":") == 1:  # IPv4:port
            node = node.partition(":")[0]
        yield node


def client_address(scope: Any, trusted: tuple[Network, ...]) -> str:
    peer = (scope.get("client") or ("unknown", 0))[0]
    if not _trusted(_address(peer), trusted):
        return peer
    headers: dict[bytes, list[str]] = {}
    for name, value in scope["headers"]:
        if name in (b"forwarded", b"x-forwarded-for"):
            headers.setdefault(name, []).append(value.decode("latin-1"))
    if b"x-forwarded-for" in headers or b"forwarded" not in headers:
        hops = [hop.strip() for hop in ",".join(headers.get(b"x-forwarded-for", [])).split(",")]
    else:
        hops = list(_forwarded_for(",".join(headers[b"forwarded"])))
    if hops == [""]:
        return peer  # the trusted proxy forwarded no address: the request is its own
    addresses = [_address(hop) for hop in hops]
    if any(address is None for address in addresses):
        return peer
    for address in reversed(addresses):
        if not _trusted(address, trusted):
            return str(address)
    return str(addresses[0])


def client_of(request: Any) -> str:
    """The request's client address under the serving app's TRUSTED_PROXIES."""
    return client_address(request.scope, request.state.runtime.trusted_proxies)
