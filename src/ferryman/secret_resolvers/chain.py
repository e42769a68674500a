"""The resolver chain a worker uses, built from its settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ferryman.secret_resolvers.base import SecretChain, SecretResolver

if TYPE_CHECKING:
    from ferryman.settings import Settings
    from ferryman.store.engine import Store


def build_resolver(kind: str, settings: Settings, store: Store | None) -> SecretResolver:
    """The resolver ``kind`` names (one of ``SECRET_RESOLVER_KINDS``), configured
    by ``settings``; ``ValueError`` when it cannot be built."""
    group = settings.secrets
    if kind == "env":
        from ferryman.secret_resolvers.environment import EnvironmentResolver

        return EnvironmentResolver()
    if kind == "file":
        from ferryman.secret_resolvers.files import FileResolver

        if group.dir is None:
            raise ValueError("the file secret resolver needs FERRYMAN_SECRETS_DIR")
        return FileResolver(group.dir)
    if kind == "kubernetes":
        from ferryman.infra.kubernetes.config import KubernetesConfig
        from ferryman.secret_resolvers.kubernetes import KubernetesSecretResolver

        # The cluster's credentials are the kubernetes infrastructure's.
        config = KubernetesConfig.model_validate(
            settings.worker.infra_config.get("kubernetes") or {}
        )
        return KubernetesSecretResolver(
            config, namespace=group.k8s_namespace, secret=group.k8s_secret
        )
    if kind == "store":
        from ferryman.secret_resolvers.stored import StoreResolver

        if store is None:
            raise ValueError("the store secret resolver needs the database")
        return StoreResolver(store)
    raise ValueError(f"unknown secret resolver {kind!r}")


def resolver_chain(settings: Settings, store: Store | None = None) -> SecretChain:
    """The resolvers ``FERRYMAN_SECRETS_RESOLVERS`` names, in its order."""
    return SecretChain([build_resolver(k, settings, store) for k in settings.secrets.order])
