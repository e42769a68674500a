"""The contract every secret resolver passes (``ferryman.secret_resolvers``).

Each backend is real: the environment resolver reads a mapping as it reads
``os.environ``, the file resolver a directory, the kubernetes resolver a
Secret on the kmock emulator through the official client, the store
resolver ferryman's database on SQLite and PostgreSQL (values sealed by
its secret box), plus ``ferryman.testing.FakeSecretResolver`` and a chain.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from tests.k8s_fake import FakeCluster

from ferryman.infra.kubernetes.config import KubernetesConfig
from ferryman.secret_box import SecretBox
from ferryman.secret_resolvers import (
    SecretChain,
    SecretNameRefused,
    SecretResolver,
    SecretsMissing,
    SecretSourceFailed,
)
from ferryman.secret_resolvers.environment import EnvironmentResolver
from ferryman.secret_resolvers.files import FileResolver
from ferryman.secret_resolvers.kubernetes import KubernetesSecretResolver
from ferryman.secret_resolvers.stored import StoreResolver
from ferryman.services.secret_store import set_secret
from ferryman.store.engine import Store
from ferryman.store.tables import stored_secrets
from ferryman.testing import FakeSecretResolver

VALUES = {
    "CAST_API_KEY": "cast-0123456789abcdef",
    "UNICODE": "pässwörd ✓ with spaces",
    "PEM": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n"
    "-----END PRIVATE KEY-----",
    "EQUALS": "a=b;c==d",
}
SECRETS = "ferryman-secrets"


@dataclass
class Backend:
    """A resolver, how to put a value in its source, and how to break the source."""

    resolver: SecretResolver
    put: Callable[[str, str], None]
    # None: this source cannot fail (the environment)
    breaks: Callable[[], None] | None = None
    cleanup: Callable[[], None] | None = None


@pytest.fixture(scope="module")
def cluster() -> Iterator[FakeCluster]:
    with FakeCluster() as c:
        yield c


def _env() -> Backend:
    environ: dict[str, str] = {}
    return Backend(EnvironmentResolver(environ), environ.__setitem__)


def _file(tmp: Path) -> Backend:
    d = tmp / "secrets"
    d.mkdir()

    def put(name: str, value: str) -> None:
        (d / name).write_text(value + "\n", encoding="utf-8")  # as `echo` writes it

    def breaks() -> None:
        for f in d.iterdir():
            f.unlink()
        d.rmdir()

    return Backend(FileResolver(d), put, breaks)


def _kubernetes(cluster: FakeCluster, namespace: str) -> Backend:
    config = KubernetesConfig(api_server=cluster.url, token="contract-token-0123")
    resolver = KubernetesSecretResolver(config, namespace=namespace, secret=SECRETS)
    core = resolver._cluster.core()  # the test seeds the Secret with the same client
    data: dict[str, str] = {}
    seeded: set[str] = set()

    def put(name: str, value: str) -> None:
        data[name] = base64.b64encode(value.encode()).decode()
        meta = {"name": SECRETS, "namespace": namespace}
        body = {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "data": dict(data)}
        if len(data) > 1 or name in seeded:  # the emulator has no PUT: delete, create
            core.delete_namespaced_secret(SECRETS, namespace)
        seeded.add(name)
        core.create_namespaced_secret(namespace, body)

    def breaks() -> None:
        resolver._cluster = KubernetesSecretResolver(
            KubernetesConfig(api_server="http://127.0.0.1:9", token="x" * 12),
            namespace=namespace,
            secret=SECRETS,
        )._cluster

    return Backend(resolver, put, breaks)


def _store(url: str) -> Backend:
    store = Store(url, secret_box=SecretBox.of("contract-key-" + "k" * 32))
    store.prepare_schema()
    with store.write() as conn:
        conn.execute(sa.delete(stored_secrets))

    def put(name: str, value: str) -> None:
        with store.write() as conn:
            if name.startswith("FERRYMAN_"):  # set_secret refuses it: a row put by hand
                now = dt.datetime.now(dt.UTC)
                conn.execute(sa.insert(stored_secrets).values(
                    name=name, value=value, created_at=now, updated_at=now))  # fmt: skip
            else:
                set_secret(conn, name, value, by="contract")

    def breaks() -> None:
        store.dispose()
        store.engine = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:9/none")

    return Backend(StoreResolver(store), put, breaks, store.dispose)


def _fake() -> Backend:
    fake = FakeSecretResolver()

    def breaks() -> None:
        fake.fail = True

    return Backend(fake, fake.values.__setitem__, breaks)


def _chain() -> Backend:
    first, second = FakeSecretResolver(), FakeSecretResolver()

    def put(name: str, value: str) -> None:
        # names spread over both sources: the chain must merge them
        (first if sum(map(ord, name)) % 2 == 0 else second).values[name] = value

    def breaks() -> None:
        first.fail = second.fail = True

    return Backend(SecretChain([EnvironmentResolver({}), first, second]), put, breaks)


KINDS = ["env", "file", "kubernetes", "store-sqlite", "store-postgres", "fake", "chain"]


@pytest.fixture(params=KINDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    kind = request.param
    if kind == "env":
        b = _env()
    elif kind == "file":
        b = _file(tmp_path)
    elif kind == "kubernetes":
        b = _kubernetes(request.getfixturevalue("cluster"), f"ns-{tmp_path.name[-20:].lower()}")
    elif kind == "store-sqlite":
        b = _store(f"sqlite:///{tmp_path}/ferryman.db")
    elif kind == "store-postgres":
        b = _store(request.getfixturevalue("pg_database"))
    elif kind == "fake":
        b = _fake()
    else:
        b = _chain()
    yield b
    b.resolver.close()
    if b.cleanup is not None:
        b.cleanup()


def test_resolves_exactly_the_names_asked_for(backend: Backend) -> None:
    for name, value in VALUES.items():
        backend.put(name, value)
    backend.put("OTHER", "not-asked-for")
    got = backend.resolver.resolve(["CAST_API_KEY", "PEM", "UNICODE", "EQUALS", "CAST_API_KEY"])
    assert got == {n: VALUES[n] for n in ("CAST_API_KEY", "PEM", "UNICODE", "EQUALS")}
    assert list(got) == ["CAST_API_KEY", "PEM", "UNICODE", "EQUALS"]  # asked order, once
    assert backend.resolver.resolve([]) == {}


def test_missing_names_are_named_and_values_never_shown(backend: Backend) -> None:
    backend.put("CAST_API_KEY", VALUES["CAST_API_KEY"])
    with pytest.raises(SecretsMissing) as info:
        backend.resolver.resolve(["CAST_API_KEY", "NOT_THERE", "ALSO_MISSING"])
    assert info.value.names == ("NOT_THERE", "ALSO_MISSING")
    text = str(info.value)
    assert "NOT_THERE" in text and "ALSO_MISSING" in text and "looked in" in text
    assert VALUES["CAST_API_KEY"] not in text
    assert backend.resolver.lookup(["NOT_THERE"]) == {}


def test_ferryman_names_are_refused_even_when_the_source_holds_them(backend: Backend) -> None:
    backend.put("FERRYMAN_SECRET_KEY", "the-server-key-0123456789")
    backend.put("CAST_API_KEY", VALUES["CAST_API_KEY"])
    for names in (["FERRYMAN_SECRET_KEY"], ["CAST_API_KEY", "ferryman_jwt_secret"]):
        with pytest.raises(SecretNameRefused, match=r"FERRYMAN_\* names are ferryman's own"):
            backend.resolver.resolve(names)


@pytest.mark.parametrize("bad", ["../etc/passwd", "a-b", "", "1ABC", "A B", "x" * 129])
def test_invalid_names_are_refused_before_any_lookup(backend: Backend, bad: str) -> None:
    with pytest.raises(SecretNameRefused, match="invalid secret name"):
        backend.resolver.resolve([bad])


def test_a_changed_value_is_seen_at_the_next_resolution(backend: Backend) -> None:
    backend.put("CAST_API_KEY", "first-value-0001")
    assert backend.resolver.resolve(["CAST_API_KEY"]) == {"CAST_API_KEY": "first-value-0001"}
    backend.put("CAST_API_KEY", "second-value-0002")
    assert backend.resolver.resolve(["CAST_API_KEY"]) == {"CAST_API_KEY": "second-value-0002"}


def test_an_unreadable_source_fails_clearly(backend: Backend) -> None:
    if backend.breaks is None:
        pytest.skip("the environment cannot fail")
    backend.put("CAST_API_KEY", VALUES["CAST_API_KEY"])
    backend.breaks()
    with pytest.raises(SecretSourceFailed) as info:
        backend.resolver.resolve(["CAST_API_KEY"])
    assert VALUES["CAST_API_KEY"] not in str(info.value)
    assert str(info.value)


def test_sources_describe_where_they_look(backend: Backend) -> None:
    sources = backend.resolver.sources()
    assert sources and all(isinstance(s, str) and s for s in sources)
