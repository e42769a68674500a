"""What every outbound client shares: timeouts, the user agent, the destination policy.

Imports nothing heavy: the clients themselves are built in ``sync`` (httpx),
``aio`` (aiohttp) and ``slack`` (slack_sdk), imported on first use.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ferryman import __version__

if TYPE_CHECKING:
    from ferryman.settings import Settings

USER_AGENT = f"ferryman/{__version__}"


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long one request may take, in seconds.

    ``connect`` bounds opening a connection (name resolution included) and
    waiting for a pooled one; ``read`` bounds each wait for the receiver
    (each read, and each write of the request); ``total`` bounds the whole
    request, answer included. httpx has no overall timeout: a sync client
    ignores ``total`` and bounds each phase.
    """

    connect: float
    read: float
    total: float | None = None

    @classmethod
    def per_phase(cls, seconds: float) -> Timeouts:
        """Every phase bounded by ``seconds`` (no overall bound)."""
        return cls(seconds, seconds)

    @classmethod
    def overall(cls, seconds: float) -> Timeouts:
        """The whole request bounded by ``seconds``."""
        return cls(seconds, seconds, seconds)


class DestinationRefused(Exception):
    """The destination policy refused a URL, or the addresses its host resolved to.

    Never worth retrying: the same destination is refused again.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DestinationPolicy:
    """Which destinations ferryman may send requests to.

    Every client of this package asks its policy before every request,
    redirect hops included: the sync client (httpx) through a transport
    wrapper, the async one (aiohttp) through a client middleware, the Slack
    client before each API call. A refusal raises ``DestinationRefused``
    and no request is made.

    This base class allows everything. A stricter policy overrides one or
    both hooks:

    - ``check_url(url)``: before every request, and where a URL is set
      (subscriptions, on create and update). It judges what the URL alone
      tells: the scheme, the host name, and an IP-literal host (see
      ``ip_literal``), for which no name is resolved.
    - ``check_addresses(host, addresses)``: after a host name was resolved,
      before connecting. The sync client then connects to exactly the
      addresses checked (a second DNS answer cannot slip in between); the
      async client's resolver checks what it caches (for up to 60 s).
      Not called for the Slack client (urllib resolves by itself; its URL is
      the operator's ``FERRYMAN_SLACK_API_URL``, checked by ``check_url``).
    """

    def check_url(self, url: str) -> None:
        """Raise ``DestinationRefused`` if requests to ``url`` are not allowed."""
        return None

    def check_addresses(self, host: str, addresses: Sequence[str]) -> None:
        """Raise ``DestinationRefused`` if ``host`` may not be reached at ``addresses``."""
        return None


PERMISSIVE = DestinationPolicy()

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Cloud instance-metadata services: credentials of the machine ferryman
#: runs on. Refused in every mode (unless a listed allowed network holds them).
METADATA_NETWORKS: tuple[Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.169.254/32",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
        "169.254.170.2/32",  # AWS ECS task credentials
        "169.254.170.23/32",  # AWS EKS pod identity
        "fd00:ec2::254/128",  # AWS IMDS over IPv6
        "fd00:ec2::23/128",  # AWS EKS pod identity over IPv6
        "100.100.100.200/32",  # Alibaba Cloud
        "192.0.0.192/32",  # Oracle Cloud
    )
)
#: Host names of metadata services, refused like their addresses.
METADATA_NAMES = frozenset(
    {"metadata.google.internal", "metadata.goog", "metadata", "instance-data"}
)
#: Host names that always mean this machine (checked without resolving).
LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


def embedded_ipv4(address: Address) -> Address:
    """The IPv4 address an IPv6 one carries (IPv4-mapped, 6to4, NAT64
    ``64:ff9b::/96``, IPv4-compatible), else ``address`` itself: each is
    judged as the IPv4 address it reaches."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        packed = address.packed
        if packed[:12] == b"\x00\x64\xff\x9b" + b"\x00" * 8 or (
            packed[:12] == b"\x00" * 12 and packed[12:] not in (b"\x00" * 4, b"\x00\x00\x00\x01")
        ):
            return ipaddress.IPv4Address(packed[12:])
    return address


def is_public(address: Address) -> bool:
    """Whether ``address`` is a public unicast address (``is_global`` alone
    lets multicast through on some Python versions)."""
    return address.is_global and not (
        address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or address.is_loopback
        or address.is_link_local
        or address.is_private
        or (isinstance(address, ipaddress.IPv6Address) and address.is_site_local)
    )


def public_peer(address: str | None) -> bool:
    """Whether ``address`` (a peer's address as a socket reports it, a zone
    id allowed) is a public one; an unknown or malformed one is not."""
    if not address:
        return False
    try:
        return is_public(embedded_ipv4(ipaddress.ip_address(address.split("%", 1)[0])))
    except ValueError:
        return False


def host_address(host: str) -> Address | None:
    """The address a URL's host names without resolving: an IP literal
    (``[::1]`` too) or a legacy IPv4 form (``2130706433``, ``0x7f.1``,
    ``0177.0.0.1``) that resolvers accept; None for a host name."""
    literal = ip_literal(host)
    if literal is not None:
        return literal
    if host and all(c in "0123456789abcdefxABCDEFX." for c in host) and host[0].isdigit():
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


class AddressPolicy(DestinationPolicy):
    """Refuses destinations by address: what ``refuse`` says no to, unless
    one of ``allow`` holds it.

    ``check_url`` judges a host that is an address (or a legacy form of one)
    and names that mean this machine or a metadata service; every other
    name is judged by ``check_addresses`` once resolved, before connecting
    (each client then connects to exactly the checked addresses), so a name
    that resolves to a refused address when the request is sent is refused
    then (DNS rebinding), whatever it resolved to when it was set.
    """

    def __init__(self, *, private: bool, allow: Sequence[Network] = ()) -> None:
        #: Whether non-public addresses are refused (production), or only
        #: metadata services (development).
        self.refuse_private = private
        self.allow = tuple(allow)

    def refusal(self, address: Address) -> str | None:
        """Why ``address`` may not be reached, or None."""
        if any(address in n for n in self.allow if n.version == address.version):
            return None
        reached = embedded_ipv4(address)
        if reached is not address and any(
            reached in n for n in self.allow if n.version == reached.version
        ):
            return None
        for a in {address, reached}:
            if any(a in n for n in METADATA_NETWORKS if n.version == a.version):
                return f"{address} is a cloud metadata address"
        if self.refuse_private and not all(is_public(a) for a in {address, reached}):
            return (
                f"{address} is not a public address (private, loopback, link-local, "
                "unique-local, multicast, reserved or unspecified); "
                "allow its network with FERRYMAN_OUTBOUND_ALLOW_NETWORKS"
            )
        return None

    def check_url(self, url: str) -> None:
        try:
            host = (urlsplit(url).hostname or "").rstrip(".").lower()
        except ValueError:
            raise DestinationRefused("not a valid URL") from None
        if host in METADATA_NAMES:
            raise DestinationRefused(f"{host} is a cloud metadata service")
        local = host in LOCAL_NAMES or host.endswith(".localhost")
        if self.refuse_private and local and not self.allow_loopback():
            raise DestinationRefused(
                f"{host} is this machine; allow 127.0.0.0/8 or ::1 with "
                "FERRYMAN_OUTBOUND_ALLOW_NETWORKS"
            )
        address = host_address(host)
        if address is not None:
            why = self.refusal(address)
            if why is not None:
                raise DestinationRefused(why)

    def allow_loopback(self) -> bool:
        """Whether an allowed network holds a loopback address (``localhost``)."""
        return any(n.network_address.is_loopback for n in self.allow)

    def check_addresses(self, host: str, addresses: Sequence[str]) -> None:
        for text in addresses:
            try:
                address = ipaddress.ip_address(text.split("%", 1)[0])
            except ValueError:
                raise DestinationRefused(f"{host} resolved to {text!r}, not an address") from None
            why = self.refusal(address)
            if why is not None:
                # One refused address refuses the host: a client may try any of them.
                raise DestinationRefused(f"{host} resolves to {why}")


def parse_networks(text: str) -> tuple[Network, ...]:
    """Comma-separated CIDRs (a bare address is its /32 or /128); ``ValueError``
    naming a bad one."""
    out = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(
                f"FERRYMAN_OUTBOUND_ALLOW_NETWORKS: {item!r} is not a network (use CIDRs "
                "such as 10.0.0.0/8 or fd00::/8)"
            ) from None
    return tuple(out)


def destination_policy(settings: Settings) -> DestinationPolicy:
    """The destination policy for these settings: every client gets it from here.

    Production (``FERRYMAN_ENV=production``) refuses every address that is
    not public — private, loopback, link-local, unique-local, multicast,
    reserved, unspecified — and cloud metadata services, except in the
    networks of ``FERRYMAN_OUTBOUND_ALLOW_NETWORKS``. Development refuses only
    the metadata services (a local receiver is the usual thing to test
    against).
    """
    allow = parse_networks(settings.security.outbound_allow_networks or "")
    return AddressPolicy(private=settings.env == "production", allow=allow)


def ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address when ``host`` is an IP literal (``[::1]`` too), else None."""
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
