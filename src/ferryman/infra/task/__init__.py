"""The ``task`` infrastructure: runs ``task`` steps through web-API plugins."""

from ferryman.infra.task.infrastructure import TaskInfraConfig, TaskInfrastructure

__all__ = ["TaskInfraConfig", "TaskInfrastructure"]
