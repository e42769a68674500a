"""Web-API plugins: steps of kind ``task`` done on somebody else's service.

A plugin (``base.py``: ``AsyncPlugin`` with create/get/status/delete, or
``SyncPlugin`` with ``do``) handles one or more task types. Plugins are found
through the ``ferryman.plugins`` entry-point group (``registry.py``), limited
by a read and a write rate limiter and by quotas shared by all workers
(``limits.py``, state in the database through ``state.py``'s ``TaskState``),
and driven by the ``task`` infrastructure (``ferryman.infra.task``). The
built-ins are ``http_call`` and ``http_job`` (``http.py``).
See docs/plugins.md.
"""
