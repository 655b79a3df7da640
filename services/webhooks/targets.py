"""Where webhooks may send: public addresses only, unless ``webhooks.private_targets`` allows the others.

Why: whoever registers a webhook chooses where the deliverer, inside the deployment, sends requests. Left
open, a ``segments:admin`` key could make it POST to a cloud metadata service (169.254.169.254), to Redis
or to any internal service (server-side request forgery). So by default the deliverer connects only to
globally routable addresses (``ipaddress``'s ``is_global``): not loopback, private, link-local, shared
(100.64/10) or reserved ones, nor IPv4 addresses written as IPv6 (``::ffff:10.0.0.1``, NAT64's
``64:ff9b::a00:1``, 6to4's ``2002:a00:1::``) unless the IPv4 address is public. A receiver inside
the deployment needs ``RAPPORT_WEBHOOKS__PRIVATE_TARGETS=true``.

Checked where the connection is made: a host name is resolved, and only its public addresses are
connected to (a name that resolves to a public address at registration and a private one later, DNS
rebinding, is still refused); an address written in the URL is checked as it is. Redirects are not
followed (``services.webhooks.sender``). Registration refuses what can be judged without resolving:
address literals and ``localhost``.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from typing import Final

from aiohttp import ThreadedResolver
from aiohttp.abc import ResolveResult

_LOCAL_NAMES: Final = frozenset({"localhost", "localhost.localdomain"})


class TargetRefusedError(OSError):
    """Every address of a webhook's host is not public. aiohttp reports an ``OSError`` from the resolver as
    a connection error that quotes its ``strerror``, so the delivery fails like one, saying why."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EACCES, message)


def refusal(address: str) -> str | None:
    """Why the deliverer must not connect to ``address`` (an IP address), or None if it may.

    >>> [refusal(a) is None for a in ("93.184.216.34", "2606:2800:220:1::1")]
    [True, True]
    >>> refusal("169.254.169.254")
    '169.254.169.254 is not a public address'
    >>> [refusal(a) is None for a in ("127.0.0.1", "10.1.2.3", "100.64.0.1", "::1", "fe80::1", "::ffff:10.0.0.1")]
    [False, False, False, False, False, False]
    >>> [refusal(a) is None for a in ("64:ff9b::a00:1", "2002:a00:1::1", "64:ff9b:1::5db8:d822", "64:ff9b::5db8:d822")]
    [False, False, False, True]
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # a link-local IPv6 may carry its zone
    judged = _embedded(ip) if isinstance(ip, ipaddress.IPv6Address) else ip
    return None if judged is not None and judged.is_global else f"{address} is not a public address"


#: Translate to the IPv4 address in their last 32 bits (RFC 6052), which ``is_global`` does not look at: on
#: an IPv6-only cluster with NAT64, ``64:ff9b::a00:1`` reaches 10.0.0.1.
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
#: Local-use NAT64 (RFC 8215): where the IPv4 address sits is the network's choice, so it is not judged.
_LOCAL_NAT64: Final = ipaddress.IPv6Network("64:ff9b:1::/48")


def _embedded(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address ``ip`` reaches when it carries an IPv4 one (mapped, NAT64, 6to4); None: cannot tell.

    >>> [str(_embedded(ipaddress.IPv6Address(a))) for a in ("::ffff:10.0.0.1", "64:ff9b::a00:1", "2002:a00:1::1")]
    ['10.0.0.1', '10.0.0.1', '10.0.0.1']
    """
    if ip in _LOCAL_NAT64:
        return None
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.ipv4_mapped or ip.sixtofour or ip


def literal_refusal(host: str) -> str | None:
    """Why a URL's host can be refused without resolving it (an address literal, ``localhost``), or None.

    >>> literal_refusal("[::1]"), literal_refusal("crm.example"), literal_refusal("LOCALHOST")
    ('::1 is not a public address', None, 'localhost is not a public address')
    """
    bare = host.strip("[]")
    if bare.lower().rstrip(".") in _LOCAL_NAMES:
        return f"{bare.lower().rstrip('.')} is not a public address"
    try:
        return refusal(bare)
    except ValueError:  # a name: judged on its addresses when the deliverer connects
        return None


class PublicResolver(ThreadedResolver):
    """Resolves as the operating system does, then keeps only the public addresses."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await super().resolve(host, port, family)
        allowed = [r for r in found if refusal(r["host"]) is None]
        if not allowed:
            addresses = ", ".join(sorted({r["host"] for r in found}))
            raise TargetRefusedError(f"{host} resolves to no public address ({addresses})")
        return allowed
