"""The contract suites' fixtures: ``backend`` (every infrastructure, see
``backends.py``) and what the docker backend requests by name."""

from tests.contract.backends import backend as backend
from tests.docker_support import busybox_image as busybox_image
from tests.docker_support import docker_client as docker_client
