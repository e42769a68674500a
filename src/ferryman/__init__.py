"""ferryman: self-hosted pipeline orchestration.

The public DSL is imported lazily so that ``import ferryman`` stays cheap
inside a step's process.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs step start-up time

__version__ = "0.1.0"

__all__ = [
    "Param",
    "Secret",
    "__version__",
    "container",
    "date_string",
    "language_code",
    "pipeline",
    "required_together",
    "secret",
    "step",
    "task",
    "url",
]

_LAZY = {
    "pipeline": "ferryman.dsl.decorators",
    "step": "ferryman.dsl.decorators",
    "container": "ferryman.dsl.decorators",
    "task": "ferryman.dsl.decorators",
    "Param": "ferryman.dsl.decorators",
    "language_code": "ferryman.domain.markers",
    "date_string": "ferryman.domain.markers",
    "url": "ferryman.domain.markers",
    "required_together": "ferryman.domain.validators",
    "Secret": "ferryman.runtime.secret",
    "secret": "ferryman.runtime.secret",
}

if TYPE_CHECKING:
    from ferryman.domain.markers import date_string, language_code, url
    from ferryman.domain.validators import required_together
    from ferryman.dsl.decorators import Param, pipeline, step, task
    from ferryman.runtime.secret import Secret, secret


def __getattr__(name: str) -> object:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'ferryman' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(mod), name)
