"""``Client``: the synchronous client (httpx's sync client underneath)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

import httpx

from ferryman.api.schemas import (
    CompatRunCreated,
    EventList,
    LogLinePublic,
    LogList,
    PipelineDetail,
    PipelineList,
    PipelineRegistered,
    RunCounts,
    RunCreated,
    RunDetail,
    RunList,
    RunOutputs,
    RunPublic,
    VersionList,
)
from ferryman.client.base import DEFAULT_TIMEOUT, ClientBase
from ferryman.client.calls import Call, Calls, parse, run_create
from ferryman.client.errors import error_of, transport_error
from ferryman.client.schedules import SyncSchedules
from ferryman.client.sse import STREAM_READ_TIMEOUT, LogFollow, SseParser
from ferryman.client.sync_admin import SyncAdmin
from ferryman.domain.spec import PipelineSpec
from ferryman.domain.states import RunState

T = TypeVar("T")


class Client(SyncAdmin, SyncSchedules, ClientBase):
    """Synchronous client. Use as a context manager, or call ``close()``.

    ``token`` is a JWT from ``login`` or a long-lived API token (``fm_…``);
    ``transport`` replaces httpx's (tests pass an ``httpx.MockTransport``).
    Every failure is raised as ``ApiError``.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        verify: bool = True,
    ) -> None:
        super().__init__(base_url, token)
        self._http = httpx.Client(
            base_url=self.base_url, timeout=timeout, transport=transport, verify=verify
        )
        self._timeout = timeout

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def send(self, call: Call[T]) -> T:
        """Send one prepared request and parse its answer as ``call.model``;
        an HTTP error or no answer raises ``ApiError``."""
        try:
            resp = self._http.request(
                call.method,
                call.path,
                params=call.params or None,
                json=call.json,
                data=call.data,
                headers=self.auth_headers(call.headers),
            )
        except httpx.TransportError as exc:
            raise transport_error(exc) from None
        if resp.is_error:
            raise error_of(resp)
        return parse(call, resp.content)

    # -- auth and health ------------------------------------------------------

    def login(self, username: str, password: str) -> str:
        """Log in (``POST /token``) and return the JWT; it is used for every
        later request of this client."""
        token = str(self.send(Calls.login(username, password))["access_token"])
        self._token = token
        return token

    def me(self) -> dict[str, Any]:
        """Who the token belongs to (``GET /me``)."""
        return self.send(Calls.get_json("/me"))

    def health(self) -> dict[str, Any]:
        """``GET /health`` (no authentication)."""
        return self.send(Calls.get_json("/health"))

    # -- pipelines --------------------------------------------------------------

    def register_pipeline(
        self, namespace: str, spec: PipelineSpec | Mapping[str, Any] | str
    ) -> PipelineRegistered:
        """Register a pipeline in ``namespace`` (developers and admins: its code
        runs on the workers; 403 for operators and viewers).

        ``spec`` is a compiled ``PipelineSpec``, its JSON (a mapping), the
        text of a YAML/JSON pipeline, or a reference compiled here first, as
        ``ferryman run`` takes it: ``path/to/file.py:name``, a YAML/JSON file
        or ``package.module:name``. Relative function files of a text are
        resolved against the current directory.
        The answer's ``version`` is the definition's content hash; ``created``
        is False when that exact definition was already stored.
        """
        return self.send(Calls.register_pipeline(namespace, spec))

    def list_pipelines(self, namespace: str | None = None) -> PipelineList:
        """The pipelines of a namespace by name, or with no ``namespace`` those
        of every namespace, by namespace and name."""
        return self.send(Calls.list_pipelines(namespace))

    def get_pipeline(self, namespace: str, name: str, version: str | None = None) -> PipelineDetail:
        """A pipeline's newest version (or ``version``): parameters (as JSON
        Schema), steps and triggers."""
        return self.send(Calls.get_pipeline(namespace, name, version))

    def list_versions(self, namespace: str, name: str) -> VersionList:
        """The versions of a pipeline, newest first."""
        return self.send(Calls.list_versions(namespace, name))

    # -- runs ------------------------------------------------------------------------

    def create_run(
        self,
        namespace: str,
        pipeline: str,
        params: Mapping[str, Any] | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        webhook_url: str | None = None,
        slack_channel: str | None = None,
        slack_thread: str | None = None,
        timeout: float | None = None,
        idempotency_key: str | None = None,
    ) -> RunCreated:
        """Start a run of the newest version of ``pipeline`` (operators).

        ``params`` are validated by the server (``ApiError`` 422
        ``invalid_params`` lists every problem in ``details``). ``webhook_url``
        is POSTed a signed summary when the run ends; ``slack_channel`` (and
        ``slack_thread``) are told too; ``timeout`` is the run's deadline in
        seconds. With an ``idempotency_key`` seen before in this namespace, the
        earlier run comes back with ``created=False``.
        """
        body = run_create(params, labels, webhook_url, slack_channel, slack_thread, timeout)
        return self.send(Calls.create_run(namespace, pipeline, body, idempotency_key))

    def create_run_compat(
        self,
        namespace: str,
        pipeline: str,
        params: Mapping[str, Any] | None = None,
        *,
        webhook_uri: str | None = None,
        idempotency_key: str | None = None,
    ) -> CompatRunCreated:
        """Start a run through the compatibility route
        (``POST /{namespace}/pipelines/run/{pipeline}/``): the parameters are
        the body, ``webhook_uri`` among them. The answer is the replaced
        API's shape: the run's id is ``.id`` (``response.run_id``)."""
        call = Calls.create_run_compat(namespace, pipeline, params, webhook_uri, idempotency_key)
        return self.send(call)

    def list_runs(
        self,
        *,
        namespace: str | None = None,
        pipeline: str | None = None,
        state: RunState | str | Iterable[RunState | str] | None = None,
        labels: Mapping[str, str] | Iterable[str] | None = None,
        created_after: dt.datetime | None = None,
        created_before: dt.datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
        include_params: bool = False,
    ) -> RunList:
        """One page of runs, newest first; pass ``next_cursor`` as ``cursor``
        for the next page (``iter_runs`` does it for you).

        ``state`` is one state or several; ``labels`` a mapping or
        ``"key:value"`` strings (all must match); naive datetimes are UTC.
        Each run's ``params`` is None unless ``include_params`` (``get_run``
        always has them).
        """
        return self.send(
            Calls.list_runs(
                namespace,
                pipeline,
                state,
                labels,
                created_after,
                created_before,
                limit,
                cursor,
                include_params,
            )
        )

    def iter_runs(
        self,
        *,
        namespace: str | None = None,
        pipeline: str | None = None,
        state: RunState | str | Iterable[RunState | str] | None = None,
        labels: Mapping[str, str] | Iterable[str] | None = None,
        created_after: dt.datetime | None = None,
        created_before: dt.datetime | None = None,
        page_size: int = 100,
        include_params: bool = False,
    ) -> Iterator[RunPublic]:
        """Every matching run, newest first, fetching pages as needed (filters
        as in ``list_runs``)."""
        cursor: str | None = None
        while True:
            page = self.list_runs(
                namespace=namespace,
                pipeline=pipeline,
                state=state,
                labels=labels,
                created_after=created_after,
                created_before=created_before,
                limit=page_size,
                cursor=cursor,
                include_params=include_params,
            )
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def count_runs(
        self,
        *,
        namespace: str | None = None,
        pipeline: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> RunCounts:
        """How many runs are in each state (and in total)."""
        return self.send(Calls.count_runs(namespace, pipeline, labels))

    def get_run(self, run_id: str) -> RunDetail:
        """A run and its steps (``run_id``: its id, a unique prefix of 6+ or its name)."""
        return self.send(Calls.get_run(run_id))

    def cancel_run(self, run_id: str) -> RunPublic:
        """Ask a run to stop (``ApiError`` 409 if it has already ended)."""
        return self.send(Calls.cancel_run(run_id))

    def rerun(self, run_id: str) -> RunCreated:
        """Re-run a failed or cancelled run from its failed steps (the outputs
        of the steps that succeeded are reused); 409 for other runs."""
        return self.send(Calls.rerun(run_id))

    def outputs(self, run_id: str, step: str | None = None) -> RunOutputs:
        """The outputs of a run's steps: ``outputs`` maps each step that
        returned a value (so far) to that value, as JSON; only ``step``'s
        when given (``ApiError`` 404 when the run has no such step)."""
        return self.send(Calls.outputs(run_id, step))

    def logs(
        self,
        run_id: str,
        *,
        step: str | None = None,
        attempt: int | None = None,
        after: int = 0,
        limit: int = 1000,
        tail: int | None = None,
    ) -> LogList:
        """A page of a run's log lines (secrets masked), in order.

        Lines whose id is greater than ``after``, at most ``limit`` of them, or
        with ``tail`` the last ``tail`` lines; ``step`` keeps one step's lines,
        ``attempt`` one attempt's (of every step, or of ``step``).
        Pass the answer's ``next_after`` as ``after`` for the next page;
        ``run_state`` tells whether more can come (``follow_logs`` streams
        them instead).
        """
        return self.send(Calls.logs(run_id, step, after, limit, tail, attempt))

    def events(self, run_id: str, *, after: int = 0, limit: int = 1000) -> EventList:
        """Lifecycle events of a run after sequence number ``after``; pass the
        answer's ``next_after`` for the next page."""
        return self.send(Calls.events(run_id, after, limit))

    def wait(self, run_id: str, *, timeout: float | None = None, poll: float = 1.0) -> RunDetail:
        """Poll the run every ``poll`` seconds until it has ended and return it
        (whatever its final state: check ``.state``). Raises ``TimeoutError``
        when it is still going after ``timeout`` seconds (default: wait for
        ever); the run itself is left alone."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run = self.get_run(run_id)
            if run.state.terminal:
                return run
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"run {run_id} still {run.state} after {timeout}s")
            time.sleep(poll)

    def follow_logs(
        self, run_id: str, *, step: str | None = None, after: int = 0, reconnect: bool = True
    ) -> Iterator[LogLinePublic]:
        """Yield a run's log lines as they are written, until the run is over
        (``GET /runs/{id}/logs/stream``, server-sent events).

        Starts after line id ``after`` (0: from the first line); ``step`` keeps
        one step's lines. A dropped connection is resumed where it stopped
        (``Last-Event-ID``), with a growing pause, up to
        ``MAX_STREAM_RECONNECTS`` times in a row; then, or at once with
        ``reconnect=False``, ``ApiError`` (status 0). An unknown run raises
        ``ApiError`` 404 on the first iteration.
        """
        follow = LogFollow(run_id, step, after, reconnect)
        stream_timeout = httpx.Timeout(self._timeout, read=STREAM_READ_TIMEOUT)
        while True:
            try:
                with self._http.stream(
                    "GET",
                    follow.path,
                    params=follow.params,
                    headers=self.auth_headers(follow.headers()),
                    timeout=stream_timeout,
                ) as resp:
                    if resp.is_error:
                        resp.read()
                        raise error_of(resp)
                    parser = SseParser()
                    for raw in resp.iter_lines():
                        ev = parser.feed(raw)
                        if ev is None:
                            continue
                        if ev.event == "end":
                            return
                        line = follow.line(ev)
                        if line is not None:
                            yield line
            except httpx.TransportError as exc:
                delay = follow.retry_delay(exc)
            else:
                delay = follow.retry_delay(None)
            time.sleep(delay)
