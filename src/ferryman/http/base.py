"""What every outbound client shares: timeouts, the user agent, the destination policy.

Imports nothing heavy: the clients themselves are built in ``sync`` (httpx),
``aio`` (aiohttp) and ``slack`` (slack_sdk), imported on first use.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

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


def destination_policy(settings: Settings) -> DestinationPolicy:
    """The destination policy for these settings: every client gets it from here.

    Allows everything for now; refusing private, loopback, link-local and
    metadata addresses in production is a change of this function.
    """
    return PERMISSIVE


def ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address when ``host`` is an IP literal (``[::1]`` too), else None."""
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
