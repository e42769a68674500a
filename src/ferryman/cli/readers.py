"""Where the CLI reads state from: the local database or a server.

Every command that reads runs or pipelines asks ``reader(server)`` for a
``Reader`` and gets the REST API's own models back from either side, so a
command shows the same thing (and prints the same ``--json``) locally and
against a server. With ``--server`` (or ``FERRYMAN_SERVER``) set, the local
database is never opened.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ferryman.api.schemas import (
        LogList,
        PipelineDetail,
        PipelinePublic,
        RunDetail,
        RunOutputs,
        RunPublic,
        VersionPublic,
    )


@dataclass(frozen=True)
class RunFilter:
    """What ``runs ls`` asks for (every filter given must match)."""

    namespace: str | None = None
    pipeline: str | None = None
    state: str | None = None
    labels: Sequence[tuple[str, str]] = ()
    limit: int = 20


class Reader(Protocol):
    """Runs and pipelines, read from one place."""

    #: Where the answers come from (``local`` or the server's URL).
    where: str

    def list_runs(self, f: RunFilter) -> list[RunPublic]: ...
    def get_run(self, handle: str) -> RunDetail: ...
    def run_id(self, handle: str) -> str: ...
    def logs(
        self,
        run_id: str,
        *,
        step: str | None,
        attempt: int | None,
        after: int = 0,
        limit: int = 5000,
        tail: int | None = None,
    ) -> LogList: ...
    def outputs(self, run_id: str, step: str | None = None) -> RunOutputs: ...
    def list_pipelines(self, namespace: str | None) -> list[PipelinePublic]: ...
    def get_pipeline(self, namespace: str, name: str) -> PipelineDetail: ...
    def list_versions(self, namespace: str, name: str) -> list[VersionPublic]: ...


class LocalReader:
    """The database of ``FERRYMAN_DATABASE_URL``, through the services' queries."""

    where = "local"

    def __init__(self, store: Any, settings: Any) -> None:
        self.store = store
        self.base_url = settings.base_url

    def list_runs(self, f: RunFilter) -> list[RunPublic]:
        from ferryman.api.schemas import RunPublic
        from ferryman.services.queries import list_runs

        with self.store.read() as conn:
            rows = list_runs(
                conn,
                namespace=f.namespace,
                pipeline=f.pipeline,
                state=f.state,
                labels=list(f.labels),
                limit=f.limit,
                with_params=False,  # not shown: never read
            )
        return [RunPublic.from_row(r, self.base_url) for r in rows]

    def get_run(self, handle: str) -> RunDetail:
        from ferryman.api.schemas import RunDetail
        from ferryman.services.queries import get_run, resolve_run_id
        from ferryman.services.triggers import firings_of

        with self.store.read() as conn:
            row = get_run(conn, resolve_run_id(conn, handle))
            row["triggered"] = firings_of(conn, row["id"])
        return RunDetail.from_row(row, self.base_url)

    def run_id(self, handle: str) -> str:
        from ferryman.errors import NotFound
        from ferryman.services.queries import resolve_run_id, run_state

        with self.store.read() as conn:
            rid = resolve_run_id(conn, handle)
            if run_state(conn, rid) is None:
                raise NotFound(f"no run {handle!r}")
        return rid

    def logs(
        self,
        run_id: str,
        *,
        step: str | None,
        attempt: int | None,
        after: int = 0,
        limit: int = 5000,
        tail: int | None = None,
    ) -> LogList:
        from ferryman.api.schemas import LogLinePublic, LogList
        from ferryman.domain.states import RunState
        from ferryman.errors import NotFound
        from ferryman.services.queries import get_logs, run_state

        with self.store.read() as conn:
            # the state first: when it is final, every line was written before it
            state = run_state(conn, run_id)
            if state is None:
                raise NotFound(f"no run {run_id!r}")
            rows = get_logs(
                conn, run_id, node=step, attempt=attempt, after_id=after, limit=limit, tail=tail
            )
        return LogList(
            items=[LogLinePublic.model_validate(r) for r in rows],
            next_after=rows[-1]["id"] if rows else after,
            run_state=RunState(state),
        )

    def outputs(self, run_id: str, step: str | None = None) -> RunOutputs:
        from ferryman.api.schemas import RunOutputs
        from ferryman.services.queries import run_outputs

        with self.store.read() as conn:
            return RunOutputs(run_id=run_id, outputs=run_outputs(conn, run_id, step))

    def list_pipelines(self, namespace: str | None) -> list[PipelinePublic]:
        from ferryman.api.schemas import PipelinePublic
        from ferryman.services.catalog import list_pipelines

        with self.store.read() as conn:
            rows = list_pipelines(conn, namespace)
        return [PipelinePublic.model_validate(r) for r in rows]

    def get_pipeline(self, namespace: str, name: str) -> PipelineDetail:
        from ferryman.api.schemas import PipelineDetail
        from ferryman.domain.params import json_schema
        from ferryman.services.queries import pipeline_version
        from ferryman.services.triggers import triggers_of

        with self.store.read() as conn:
            pv, created_at = pipeline_version(conn, namespace, name)
        return PipelineDetail.of(
            namespace,
            pv.version,
            created_at,
            pv.spec,
            params_schema=json_schema(pv.spec),
            triggers=triggers_of(namespace, pv.spec),
        )

    def list_versions(self, namespace: str, name: str) -> list[VersionPublic]:
        from ferryman.api.schemas import VersionPublic
        from ferryman.services.queries import list_versions

        with self.store.read() as conn:
            rows = list_versions(conn, namespace, name)
        return [VersionPublic.model_validate(r) for r in rows]


class RemoteReader:
    """A ferryman server, through ``ferryman.client``."""

    def __init__(self, client: Any, server: str) -> None:
        self.client = client
        self.where = server

    def list_runs(self, f: RunFilter) -> list[RunPublic]:
        page = self.client.list_runs(
            namespace=f.namespace,
            pipeline=f.pipeline,
            state=f.state,
            labels=[f"{k}:{v}" for k, v in f.labels] or None,
            limit=f.limit,
        )
        return list(page.items)

    def get_run(self, handle: str) -> RunDetail:
        run: RunDetail = self.client.get_run(handle)
        return run

    def run_id(self, handle: str) -> str:
        return str(self.client.get_run(handle).id)

    def logs(
        self,
        run_id: str,
        *,
        step: str | None,
        attempt: int | None,
        after: int = 0,
        limit: int = 5000,
        tail: int | None = None,
    ) -> LogList:
        page: LogList = self.client.logs(
            run_id, step=step, attempt=attempt, after=after, limit=limit, tail=tail
        )
        return page

    def outputs(self, run_id: str, step: str | None = None) -> RunOutputs:
        got: RunOutputs = self.client.outputs(run_id, step)
        return got

    def list_pipelines(self, namespace: str | None) -> list[PipelinePublic]:
        return list(self.client.list_pipelines(namespace).items)

    def get_pipeline(self, namespace: str, name: str) -> PipelineDetail:
        detail: PipelineDetail = self.client.get_pipeline(namespace, name)
        return detail

    def list_versions(self, namespace: str, name: str) -> list[VersionPublic]:
        return list(self.client.list_versions(namespace, name).items)


@contextmanager
def reader(server: str | None) -> Iterator[Reader]:
    """The server's reader when ``server`` is set (API errors become one-line
    messages and exit codes), else the local database's."""
    if server:
        from ferryman.cli import remote

        with remote.client(server) as c:
            try:
                yield RemoteReader(c, server)
            except Exception as exc:
                remote.api_errors(exc)
        return
    from ferryman.cli.common import open_store, settings

    s = settings()
    yield LocalReader(open_store(s), s)
