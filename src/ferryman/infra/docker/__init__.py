"""The ``docker`` infrastructure (SPEC §7): a step in a Docker container.

Every attempt gets one container, created and started through the Docker SDK
(blocking calls; the worker calls ``start``/``watch``/``kill`` from threads):

- the image is pulled according to the pull policy (see
  ``names.pull_policy``), with the configured registry credentials;
- the container's command is the step's ``command`` (Docker's entrypoint) and
  ``args`` (Docker's command), rendered with ``container_command``; a python
  step runs ``<python> -m ferryman.runtime`` inside the image;
- the env is the configured env + ferryman's variables + the step's env and
  secrets (``None`` unsets, see ``container_env``); the worker's own env is
  never copied in;
- labels: the configured and run labels with keys converted to Docker's
  reverse-DNS style, plus ``io.ferryman.{run-id,step,attempt,pipeline,namespace}``;
- the name ``pipeline-step-<run8>-<attempt>`` slugified to Docker's rules;
  on a name conflict (HTTP 409) ``-2``, ``-3``, … are tried;
- stdout and stderr are followed by two threads and passed to the sink line by
  line, so the runtime's result line arrives intact;
- ``watch`` waits for the container to stop, takes its exit code and, with
  ``auto_remove`` (default), removes it only *after* the logs are drained and
  the exit code is read. A container that vanished (removed from outside, or
  the daemon lost it) is reported with ``EXIT_LOST`` and a reason saying so.

The identifier is the container id. ``kill`` is ``docker stop`` with the grace
period (SIGTERM, then SIGKILL). ``attach`` resumes the log streams of a
container a lost worker started.

Modules: ``config`` (settings and overrides), ``names`` (pure naming, label,
volume and pull rules), ``plan`` (the settings of one attempt, no daemon
needed), ``containers`` (daemon calls about one container: image, create,
logs, wait, remove), ``infrastructure`` (``DockerInfrastructure``).
"""

from ferryman.infra.docker.config import DockerConfig, DockerConfigError, RegistryAuth, merge_config
from ferryman.infra.docker.infrastructure import DockerInfrastructure
from ferryman.infra.docker.plan import Plan

__all__ = [
    "DockerConfig",
    "DockerConfigError",
    "DockerInfrastructure",
    "Plan",
    "RegistryAuth",
    "merge_config",
]
