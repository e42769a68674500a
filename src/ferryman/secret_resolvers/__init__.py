"""Secret resolvers: where the values of the secrets a step declares come from.

A step declares names (``@step(secrets=["CAST_API_KEY"])``); the worker,
when it dispatches an attempt, asks its resolver chain for their values and
hands them to the step as environment variables of the same names. The
family (one base, ``SecretResolver``, in ``base``):

- ``env`` (``environment.EnvironmentResolver``): the worker's environment;
- ``file`` (``files.FileResolver``): a directory with one file per secret
  (a mounted Kubernetes Secret or Docker secret);
- ``kubernetes`` (``kubernetes.KubernetesSecretResolver``): the keys of one
  Kubernetes Secret, read through the official client;
- ``store`` (``stored.StoreResolver``): ferryman's own secret store
  (``ferryman secrets set``), values sealed at rest.

``chain.resolver_chain(settings, store)`` builds the chain the settings
name (``FERRYMAN_SECRETS_RESOLVERS``, first match wins). Every resolver
refuses ``FERRYMAN_*`` names, and passes ``tests/contract/test_secret_resolvers.py``.
This package imports nothing heavy: the Kubernetes client and the store are
imported by the resolvers that use them.
"""

from ferryman.secret_resolvers.base import (
    SecretChain,
    SecretNameRefused,
    SecretResolver,
    SecretsError,
    SecretsMissing,
    SecretSourceFailed,
)

__all__ = [
    "SecretChain",
    "SecretNameRefused",
    "SecretResolver",
    "SecretSourceFailed",
    "SecretsError",
    "SecretsMissing",
]
