"""The destination policy (issue 11, item 8): production refuses what is not
public, development only metadata services; an allowed network lets an
address through; a host name is judged by what it resolves to when the
request is sent (DNS rebinding), by both clients. Every request goes to a
receiver on loopback: a name that "resolves" elsewhere is a patched
resolver."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.webhook_support import Receiver

from ferryman.http import DestinationRefused, Timeouts, describe, destination_policy
from ferryman.http.aio import async_client
from ferryman.http.base import AddressPolicy, parse_networks
from ferryman.http.sync import sync_client
from ferryman.settings import Settings

PRODUCTION = AddressPolicy(private=True)
DEVELOPMENT = AddressPolicy(private=False)
LOOPBACK_ALLOWED = AddressPolicy(private=True, allow=parse_networks("127.0.0.0/8, ::1"))

REFUSED_IN_PRODUCTION = [
    "http://127.0.0.1/hook",
    "http://127.1.2.3:8080/",
    "http://[::1]/",
    "http://localhost:9000/",
    "http://api.localhost/",
    "http://10.0.0.5/",
    "http://172.16.3.4/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",  # carrier-grade NAT
    "http://169.254.1.1/",  # link-local
    "http://[fe80::1]/",
    "http://[fd12:3456::1]/",  # unique-local
    "http://224.0.0.1/",  # multicast
    "http://0.0.0.0/",
    "http://[::]/",
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped
    "http://[::ffff:10.0.0.1]/",
    "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
    "http://[64:ff9b::a00:1]/",  # NAT64 of 10.0.0.1
    "http://2130706433/",  # 127.0.0.1 as one number
    "http://0x7f.1/",
    "http://0177.0.0.1/",
]
METADATA = [
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.170.2/v2/credentials",
    "http://[fd00:ec2::254]/",
    "http://100.100.100.200/",
    "http://[::ffff:169.254.169.254]/",
    "http://metadata.google.internal/computeMetadata/v1/",
]
PUBLIC = ["https://hooks.example.com/x", "http://93.184.216.34/", "http://[2606:4700::1111]/"]


@pytest.mark.parametrize("url", REFUSED_IN_PRODUCTION + METADATA)
def test_production_refuses_what_is_not_public(url: str) -> None:
    with pytest.raises(DestinationRefused):
        PRODUCTION.check_url(url)


@pytest.mark.parametrize("url", METADATA)
def test_development_refuses_metadata_services_only(url: str) -> None:
    with pytest.raises(DestinationRefused, match="metadata"):
        DEVELOPMENT.check_url(url)


@pytest.mark.parametrize("url", REFUSED_IN_PRODUCTION[:6] + PUBLIC)
def test_development_allows_the_rest(url: str) -> None:
    DEVELOPMENT.check_url(url)


@pytest.mark.parametrize("url", PUBLIC)
def test_production_allows_public_destinations(url: str) -> None:
    PRODUCTION.check_url(url)
    PRODUCTION.check_addresses("hooks.example.com", ["93.184.216.34", "2606:4700::1111"])


def test_an_allowed_network_lets_its_addresses_through() -> None:
    for url in ("http://127.0.0.1:9/x", "http://[::1]/", "http://localhost/"):
        LOOPBACK_ALLOWED.check_url(url)
    LOOPBACK_ALLOWED.check_addresses("rebind.test", ["127.0.0.1", "::1"])
    with pytest.raises(DestinationRefused, match=r"10\.0\.0\.1"):
        LOOPBACK_ALLOWED.check_addresses("mixed.test", ["127.0.0.1", "10.0.0.1"])
    with pytest.raises(DestinationRefused, match="metadata"):
        LOOPBACK_ALLOWED.check_url("http://169.254.169.254/")


def test_policy_from_settings() -> None:
    assert destination_policy(Settings(env="production")).refuse_private  # type: ignore[attr-defined]
    dev = destination_policy(Settings())
    dev.check_url("http://127.0.0.1/")
    with pytest.raises(DestinationRefused):
        dev.check_url("http://169.254.169.254/")
    allowed = destination_policy(
        Settings(env="production", outbound_allow_networks="127.0.0.0/8,10.1.0.0/16")
    )
    allowed.check_url("http://10.1.2.3/")
    with pytest.raises(DestinationRefused, match="FERRYMAN_OUTBOUND_ALLOW_NETWORKS"):
        allowed.check_url("http://10.2.0.1/")
    with pytest.raises(ValueError, match="not a network"):
        Settings(outbound_allow_networks="10.0.0.0/8,intranet")


@pytest.fixture
def rebinding(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``rebind.test`` resolves to 127.0.0.1 (as a rebinding name does when the
    request is sent); every other name as usual."""
    real: Callable[..., Any] = socket.getaddrinfo

    def fake(host: Any, *args: Any, **kw: Any) -> Any:
        return real("127.0.0.1" if host == "rebind.test" else host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    yield


@pytest.mark.usefixtures("rebinding")
def test_sync_client_refuses_a_name_that_resolves_to_loopback(
    receivers: Callable[..., Receiver],
) -> None:
    rcv = receivers()
    url = f"http://rebind.test:{rcv.port}/hook"
    PRODUCTION.check_url(url)  # a name: nothing to judge when it is set
    with (
        sync_client(Timeouts.per_phase(5), policy=PRODUCTION) as client,
        pytest.raises(DestinationRefused, match=r"rebind.test resolves to 127\.0\.0\.1"),
    ):
        client.post(url, content=b"{}")
    assert rcv.requests == []
    with sync_client(Timeouts.per_phase(5), policy=LOOPBACK_ALLOWED) as client:
        assert client.post(url, content=b"{}").status_code == 200
    assert len(rcv.requests) == 1


@pytest.mark.usefixtures("rebinding")
async def test_async_client_refuses_a_name_that_resolves_to_loopback(
    receivers: Callable[..., Receiver],
) -> None:
    rcv = receivers()
    url = f"http://rebind.test:{rcv.port}/hook"
    client = async_client(Timeouts.overall(5), policy=PRODUCTION, connections=2)
    try:
        with pytest.raises(DestinationRefused) as info:
            async with client.post(url, data=b"{}", headers={}):
                pass
    finally:
        await client.close()
    failure = describe(info.value)
    assert "rebind.test resolves to 127.0.0.1" in failure.error and not failure.retryable
    assert rcv.requests == []
    client = async_client(Timeouts.overall(5), policy=LOOPBACK_ALLOWED, connections=2)
    try:
        async with client.post(url, data=b"{}", headers={}) as resp:
            assert resp.status == 200
    finally:
        await client.close()
    assert len(rcv.requests) == 1
