"""The event deliverer: a loop (``loop.py``) that claims queued deliveries in
order (``queue.py``), posts them (``posting.py``) and records what they
came to (``results.py``). See docs/events.md."""

from ferryman.engine.event_deliverer.loop import EventDeliverer

__all__ = ["EventDeliverer"]
