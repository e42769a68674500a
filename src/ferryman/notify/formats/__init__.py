"""Payload formats of event deliveries, pluggable.

A format turns one event (the ferryman envelope, as a JSON-ready dict) into
the JSON body a kind of receiver expects, or ``None`` when the event has no
equivalent in that format (it is then never queued for such subscribers).

Built in: ``ferryman`` (the envelope itself), ``kfp`` (the Kubeflow Pipelines
event-handler format), ``slack`` (a Slack incoming-webhook message) and
``teams`` (a Microsoft Teams MessageCard). Third parties add their own through
the ``ferryman.formats`` entry-point group: the entry point names an object
with a ``name`` and the methods of ``Format``.
"""

from __future__ import annotations

import logging
import threading
from importlib.metadata import entry_points

# The built-in formats import these from ``base`` (not from this package, which
# imports them): everyone else may take them from here.
from ferryman.notify.formats.base import Format as Format
from ferryman.notify.formats.base import FormatContext as FormatContext
from ferryman.notify.formats.base import content_type as content_type

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "ferryman.formats"


_lock = threading.Lock()
_formats: dict[str, Format] | None = None


def _load() -> dict[str, Format]:
    from ferryman.notify.formats.ferryman import FerrymanFormat
    from ferryman.notify.formats.kfp import KfpFormat
    from ferryman.notify.formats.slack import SlackFormat
    from ferryman.notify.formats.teams import TeamsFormat

    found: dict[str, Format] = {
        f.name: f for f in (FerrymanFormat(), KfpFormat(), SlackFormat(), TeamsFormat())
    }
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in found:
            continue  # the built-ins are registered by this package's own entry points too
        try:
            obj = ep.load()
            fmt = obj() if isinstance(obj, type) else obj
        except Exception as exc:  # a broken plug-in must not take the server down
            log.error("cannot load payload format %r: %s: %s", ep.name, type(exc).__name__, exc)
            continue
        if not isinstance(fmt, Format):
            log.error("payload format %r does not implement accepts() and render()", ep.name)
            continue
        found[ep.name] = fmt
    return found


def formats() -> dict[str, Format]:
    """Every known format by name (built in, then entry points; loaded once)."""
    global _formats
    with _lock:
        if _formats is None:
            _formats = _load()
        return _formats


def get_format(name: str) -> Format:
    """The format called ``name``; ``KeyError`` listing the known ones otherwise."""
    known = formats()
    if name not in known:
        raise KeyError(f"unknown format {name!r} (one of: {', '.join(sorted(known))})")
    return known[name]
