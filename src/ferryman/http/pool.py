"""A pool of async clients, one per key, made on first use.

Light to import: aiohttp is imported when the first client is made (a
server with no subscription never loads it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ferryman.http.base import DestinationPolicy, Timeouts

if TYPE_CHECKING:
    from ferryman.http.aio import AsyncClient


class ClientPool:
    """One ``AsyncClient`` per key, each with its own ``connections`` limit.

    The deliverer keys them by subscription: a hanging receiver's
    connections never crowd anybody else's pool.
    """

    def __init__(self, timeouts: Timeouts, *, policy: DestinationPolicy, connections: int) -> None:
        self._timeouts = timeouts
        self._policy = policy
        self._connections = connections
        self._clients: dict[str, AsyncClient] = {}
        self._make: Callable[..., AsyncClient] | None = None

    def get(self, key: str) -> AsyncClient:
        """The client of ``key`` (made on first use, inside the event loop)."""
        client = self._clients.get(key)
        if client is None:
            if self._make is None:
                from ferryman.http.aio import async_client

                self._make = async_client
            client = self._clients[key] = self._make(
                self._timeouts, policy=self._policy, connections=self._connections
            )
        return client

    async def aclose(self) -> None:
        """Close every client."""
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
