"""The async client (aiohttp): event deliveries.

Imported on first use (it imports aiohttp). aiohttp rather than httpx for
the deliverer's throughput: docs/decisions/0005-aiohttp-for-event-delivery.md.
The destination policy is asked by ``AsyncClient.post`` before every
request (one call: this is the deliverer's hot path), by a client middleware
for every redirect hop when redirects are followed, and by the connector's
resolver for every host name resolved; an IP-literal host is never resolved
(``check_url`` judges it).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from ferryman.http.base import USER_AGENT, DestinationPolicy, DestinationRefused, Timeouts

# What a request through this client raises when it fails (not a bug of ours).
ERRORS: tuple[type[Exception], ...] = (aiohttp.ClientError, TimeoutError, DestinationRefused)


class AsyncClient:
    """An aiohttp session with ferryman's defaults (see ``async_client``).

    Requests go through its methods, which ask the destination policy; the
    session itself is not handed out.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        resolver: AbstractResolver,
        policy: DestinationPolicy,
        follow_redirects: bool,
    ) -> None:
        self._session = session
        self._resolver = resolver
        self._check = policy.check_url
        self._follow = follow_redirects

    def post(
        self, url: str, *, data: bytes, headers: dict[str, str]
    ) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        """POST ``data``; use as ``async with client.post(...) as response``.

        ``DestinationRefused`` when the policy refuses ``url`` (nothing is sent).
        """
        self._check(url)
        return self._session.post(url, data=data, headers=headers, allow_redirects=self._follow)

    def request(
        self,
        method: str,
        url: str,
        *,
        data: bytes | None = None,
        headers: dict[str, str],
        params: Mapping[str, str | int | float] | None = None,
    ) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        """Any method (``ferryman.http.api_call_async``); the policy is asked first."""
        self._check(url)
        return self._session.request(
            method, url, data=data, headers=headers, params=params, allow_redirects=self._follow
        )

    @property
    def closed(self) -> bool:
        return self._session.closed

    async def close(self) -> None:
        await self._session.close()
        await self._resolver.close()  # given to the connector, so not closed by it


class PeerResponse(aiohttp.ClientResponse):
    """A response that remembers the address it came from: aiohttp hands a
    connection back to its pool (and forgets it) as soon as a short body has
    arrived, so the address is read when the response starts."""

    peer: str | None = None

    async def start(self, connection: aiohttp.connector.Connection) -> aiohttp.ClientResponse:
        transport = connection.transport
        try:
            peer = transport.get_extra_info("peername") if transport is not None else None
        except Exception:  # a transport without the information
            peer = None
        self.peer = str(peer[0]) if isinstance(peer, tuple) and peer else None
        return await super().start(connection)


def peer_address(response: aiohttp.ClientResponse) -> str | None:
    """The address the answer came from (None when unknown)."""
    return response.peer if isinstance(response, PeerResponse) else None


def async_client(
    timeouts: Timeouts,
    *,
    policy: DestinationPolicy,
    connections: int,
    follow_redirects: bool = False,
) -> AsyncClient:
    """An aiohttp session with ferryman's defaults; call inside the event loop.

    At most ``connections`` connections; no proxies or other settings from
    the environment; no redirects followed unless asked; answers are not
    decompressed (only their start is kept); ferryman's user agent;
    ``policy`` asked before every request and for every resolved host name.
    """
    resolver = PolicyResolver(policy)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections, ttl_dns_cache=60, resolver=resolver),
        timeout=_client_timeout(timeouts),
        trust_env=False,
        auto_decompress=False,
        headers={"user-agent": USER_AGENT},
        response_class=PeerResponse,
        # Every hop of a followed redirect (the first one is checked twice).
        middlewares=(_policy_middleware(policy),) if follow_redirects else (),
    )
    return AsyncClient(session, resolver, policy, follow_redirects)


def _client_timeout(t: Timeouts) -> aiohttp.ClientTimeout:
    # A phase bound no shorter than the total adds nothing but a timer per read.
    def phase(seconds: float) -> float | None:
        return None if t.total is not None and seconds >= t.total else seconds

    return aiohttp.ClientTimeout(
        total=t.total, sock_connect=phase(t.connect), sock_read=phase(t.read)
    )


def _policy_middleware(policy: DestinationPolicy) -> aiohttp.ClientMiddlewareType:
    check = policy.check_url

    async def middleware(
        request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        check(str(request.url))
        return await handler(request)

    return middleware


class PolicyResolver(AbstractResolver):
    """aiohttp's default resolver, with the policy judging every answer."""

    def __init__(self, policy: DestinationPolicy) -> None:
        self._policy = policy
        self._inner = aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        self._policy.check_addresses(host, [r["host"] for r in results])
        return results

    async def close(self) -> None:
        await self._inner.close()
