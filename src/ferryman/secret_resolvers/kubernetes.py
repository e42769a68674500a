"""The ``kubernetes`` resolver: the keys of one Kubernetes Secret.

The worker reads the Secret ``FERRYMAN_SECRETS_K8S_SECRET`` (default
``ferryman-secrets``) in ``FERRYMAN_SECRETS_K8S_NAMESPACE`` through the
official client, with the credentials of the kubernetes infrastructure's
configuration (``FERRYMAN_INFRA_CONFIG["kubernetes"]``: in-cluster, a
kubeconfig, or an API server and token); each key is a secret's name. Its
service account needs ``get`` on that one Secret, nothing more.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any

from ferryman.infra.kubernetes.api import Cluster, api_error, status_of
from ferryman.infra.kubernetes.config import KubernetesConfig
from ferryman.secret_resolvers.base import SecretResolver, SecretSourceFailed

#: Seconds one read of the Secret may take (connect and read).
READ_TIMEOUT = 10.0


class KubernetesSecretResolver(SecretResolver):
    """Values of the keys of Secret ``secret`` in ``namespace``, read at each lookup."""

    kind = "kubernetes"

    def __init__(self, config: KubernetesConfig, *, namespace: str, secret: str) -> None:
        self.namespace = namespace
        self.secret = secret
        self._cluster = Cluster(config)

    def describe(self) -> str:
        return f"kubernetes (secret {self.namespace}/{self.secret})"

    def lookup(self, names: Sequence[str]) -> dict[str, str]:
        try:
            obj: Any = self._cluster.core().read_namespaced_secret(
                self.secret, self.namespace, _request_timeout=(READ_TIMEOUT, READ_TIMEOUT)
            )
        except Exception as exc:
            if status_of(exc) == 404:
                return {}  # no such Secret: it holds none of the names
            raise SecretSourceFailed(
                f"kubernetes secret {self.namespace}/{self.secret} cannot be read: {_short(exc)}"
            ) from None
        data: dict[str, str] = dict(getattr(obj, "data", None) or {})
        out: dict[str, str] = {}
        for name in names:
            if name not in data:
                continue
            try:
                out[name] = base64.b64decode(data[name], validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise SecretSourceFailed(
                    f"kubernetes secret {self.namespace}/{self.secret}: key {name} is not "
                    "base64-encoded UTF-8 text"
                ) from None
        return out

    def close(self) -> None:
        self._cluster.close()


def _short(exc: Exception) -> str:
    # api_error gives status and the API's message (never the Secret's data).
    try:
        return api_error(exc)
    except Exception:  # the client not importable: its own error says enough
        return type(exc).__name__
