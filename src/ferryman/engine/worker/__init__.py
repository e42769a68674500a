"""The worker: a loop (``loop.py``) that claims ready steps (``claims.py``),
runs their attempts on their infrastructure (``attempts.py``) and keeps its
leases (``leases.py``). See docs/architecture.md, "The worker"."""

from ferryman.engine.worker.attempts import Attempt, Outcome
from ferryman.engine.worker.loop import Worker

__all__ = ["Attempt", "Outcome", "Worker"]
