"""The sync client (httpx): run-completion webhooks and subscription test sends.

Imported on first use (it imports httpx). The destination policy sits in
two places of the client's stack: a transport wrapper sees every request
(redirect hops included) before it is sent, and the connection pool's
network backend resolves host names itself, has the policy check the
addresses, and connects to exactly those.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable

import httpcore
import httpx

from ferryman.http.base import (
    USER_AGENT,
    DestinationPolicy,
    DestinationRefused,
    Timeouts,
    ip_literal,
)
from ferryman.http.errors import redact, redact_url

# What a request through this client raises when it fails (not a bug of ours).
ERRORS: tuple[type[Exception], ...] = (httpx.HTTPError, DestinationRefused)


def sync_client(
    timeouts: Timeouts,
    *,
    policy: DestinationPolicy,
    follow_redirects: bool = False,
    transport: httpx.BaseTransport | None = None,
) -> httpx.Client:
    """An httpx client with ferryman's defaults.

    No proxies or other settings from the environment, no redirects followed
    unless asked, ferryman's user agent, and ``policy`` asked before every
    request. ``transport`` replaces the network (tests: ``httpx.MockTransport``);
    the policy still sees every request, but no address is resolved.
    """
    _redact_httpx_logs()
    return httpx.Client(
        timeout=httpx.Timeout(
            connect=timeouts.connect, read=timeouts.read, write=timeouts.read, pool=timeouts.connect
        ),
        follow_redirects=follow_redirects,
        transport=PolicyTransport(transport or _network(policy), policy),
        trust_env=False,
        headers={"user-agent": USER_AGENT},
    )


class PolicyTransport(httpx.BaseTransport):
    """Asks the destination policy before every request goes to ``inner``."""

    def __init__(self, inner: httpx.BaseTransport, policy: DestinationPolicy) -> None:
        self._inner = inner
        self._policy = policy

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self._policy.check_url(str(request.url))
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


def _network(policy: DestinationPolicy) -> httpx.HTTPTransport:
    transport = httpx.HTTPTransport(trust_env=False)
    # httpx takes no network backend of its own; its connection pool does,
    # and reads it whenever it opens a connection.
    pool = transport._pool
    if not isinstance(getattr(pool, "_network_backend", None), httpcore.NetworkBackend):
        raise RuntimeError("httpx's connection pool changed: cannot check resolved addresses")
    pool._network_backend = ResolvingBackend(policy)
    return transport


class ResolvingBackend(httpcore.NetworkBackend):
    """Resolves a host name, has the policy check the addresses, then connects
    to one of exactly those (as ``socket.create_connection`` would: in order,
    each with the connect timeout, raising the last error)."""

    def __init__(self, policy: DestinationPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        if ip_literal(host) is not None:  # judged by check_url, with the URL
            return self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        self._policy.check_addresses(host, addresses)
        last: Exception = httpcore.ConnectError(f"no address for {host}")
        for address in addresses:
            try:
                return self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        raise last

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        return self._inner.connect_unix_socket(path, timeout, socket_options)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def peer_address(response: httpx.Response) -> str | None:
    """The address the answer came from (None when unknown: a mock transport)."""
    stream = response.extensions.get("network_stream")
    try:
        peer = stream.get_extra_info("server_addr") if stream is not None else None
    except Exception:  # a stream without the information
        return None
    return str(peer[0]) if isinstance(peer, tuple) and peer else None


def read_start(response: httpx.Response, limit: int) -> bytes:
    """The first ``limit`` bytes or so of a streamed answer, without reading it all."""
    got = b""
    try:
        for chunk in response.iter_bytes():
            got += chunk
            if len(got) >= limit:
                break
    except Exception:  # the body is only a courtesy
        pass
    return got[:limit]


class RedactURLs(logging.Filter):
    """httpx logs each request's full URL at INFO; a webhook URL's path or
    query may hold a token, so only its origin is kept in the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(_safe(a) for a in record.args)
        elif isinstance(record.msg, str) and "://" in record.msg:
            record.msg = redact(record.msg)
        return True


def _safe(arg: object) -> object:
    if isinstance(arg, httpx.URL):
        return redact_url(str(arg))
    if isinstance(arg, str) and "://" in arg:
        return redact(arg)
    return arg


_REDACTOR = RedactURLs()


def _redact_httpx_logs() -> None:
    logger = logging.getLogger("httpx")  # httpcore's records carry no URL
    if _REDACTOR not in logger.filters:
        logger.addFilter(_REDACTOR)
