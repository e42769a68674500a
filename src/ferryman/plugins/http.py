"""The built-in plugins: ``http_call`` (one templated request; the answer, or
a part of it by JSON pointer, is the step's output) and ``http_job`` (create
a remote job with a templated POST, poll its status URL, map its state with
JSON pointers and value lists, cancel it with a DELETE).

Requests go through ``ferryman.http`` (the async client, with the destination
policy). Answers are judged the same way in both: 2xx is success; 408, 425,
429, 5xx and network errors are system failures (retried, ``Retry-After``
honoured); other statuses are user failures with the remote's message.
Credentials come from the step's declared secrets (``auth_secret``,
``secret_headers``) and are never stored in the resource meta.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field

from ferryman.http.base import AddressPolicy, Timeouts
from ferryman.http.errors import describe, response_excerpt
from ferryman.plugins.base import (
    AsyncPlugin,
    Phase,
    PluginHost,
    SyncPlugin,
    SystemFailure,
    TaskConfig,
    TaskContext,
    UserFailure,
)

_SYSTEM_STATUSES = {408, 425, 429}


def pointer(doc: Any, ptr: str) -> Any:
    """RFC 6901 JSON pointer; ``KeyError`` naming the pointer when it is not there."""
    if ptr == "":
        return doc
    if not ptr.startswith("/"):
        raise KeyError(f"JSON pointer {ptr!r} must start with '/'")
    cur = doc
    for raw in ptr[1:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            raise KeyError(f"the answer has nothing at {ptr!r}")
    return cur


class HttpRequest(TaskConfig):
    """One templated request."""

    method: str = "POST"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    #: Sent as JSON (``None``: no body).
    body: Any = None
    #: A declared secret sent as ``Authorization: <auth_scheme> <value>``.
    auth_secret: str | None = None
    auth_scheme: str = "Bearer"
    #: Header → name of a declared secret whose value is sent in it.
    secret_headers: dict[str, str] = Field(default_factory=dict)


class HttpCallConfig(HttpRequest):
    """``http_call``: the request, and where the output is in the answer."""

    output_pointer: str = ""


class HttpJobConfig(TaskConfig):
    """``http_job``: create, follow, cancel a remote job."""

    create: HttpRequest
    #: Where the remote job's id is in the create answer.
    id_pointer: str = "/id"
    #: The job's status URL; ``{id}`` is replaced by the remote id.
    status_url: str
    #: The cancel URL (DELETE); ``{id}`` as above. None: cannot be cancelled remotely.
    cancel_url: str | None = None
    cancel_method: str = "DELETE"
    #: Header the idempotency key is sent in (with the create request).
    idempotency_header: str = "Idempotency-Key"
    state_pointer: str = "/state"
    succeeded: list[str] = Field(default_factory=lambda: ["succeeded", "success", "done"])
    failed: list[str] = Field(default_factory=lambda: ["failed", "error"])
    retryable: list[str] = Field(default_factory=list)
    queued: list[str] = Field(default_factory=lambda: ["queued", "pending"])
    message_pointer: str = "/message"
    #: The step's output: this part of the final status answer.
    outputs_pointer: str = "/outputs"
    #: A status request answered 404 means the job vanished: fail (not retry).
    missing: Literal["fail", "retry"] = "fail"


class _Http:
    """The requests of both plugins: one aiohttp client per plugin instance."""

    def __init__(self, host: PluginHost) -> None:
        self._policy = host.http_policy or AddressPolicy(private=False)
        self._client: Any = None

    def _get_client(self) -> Any:
        if self._client is None or self._client.closed:
            from ferryman.http.aio import async_client  # imports aiohttp: on first use

            self._client = async_client(
                Timeouts.per_phase(60.0), policy=self._policy, connections=200
            )
        return self._client

    async def send(
        self,
        req: HttpRequest | None,
        ctx: TaskContext,
        *,
        method: str | None = None,
        url: str | None = None,
        extra: dict[str, str] | None = None,
        with_body: bool = True,
    ) -> tuple[int, Any]:
        """``(status, parsed JSON or text)``; raises ``SystemFailure``/``UserFailure``."""
        headers = {"accept": "application/json"}
        data: bytes | None = None
        if req is not None:
            headers.update(req.headers)
            if req.auth_secret:
                headers["authorization"] = f"{req.auth_scheme} {_secret(ctx, req.auth_secret)}"
            for h, name in req.secret_headers.items():
                headers[h] = _secret(ctx, name)
            if req.body is not None and with_body:
                data = json.dumps(req.body).encode()
                headers["content-type"] = "application/json"
        headers.update(extra or {})
        method = method or (req.method if req else "GET")
        url = url or (req.url if req else "")
        secrets = list(ctx.secrets.values())
        try:
            async with self._get_client().request(method, url, data=data, headers=headers) as resp:
                status = resp.status
                body = await resp.read()
                resp_headers = dict(resp.headers)
        except Exception as exc:
            f = describe(exc, secrets=secrets)
            if f.retryable:
                raise SystemFailure(f"{method} {url}: {f.error}") from None
            raise UserFailure(f"{method} {url}: {f.error}") from None
        text = body.decode("utf-8", "replace")
        try:
            parsed: Any = json.loads(text) if text else None
        except ValueError:
            parsed = text
        if 200 <= status < 300:
            return status, parsed
        excerpt = response_excerpt(text) or ""
        if status >= 500 or status in _SYSTEM_STATUSES:
            f = describe(status, headers=resp_headers)
            raise SystemFailure(f"{method} {url}: {f.error} {excerpt}".strip(),
                                retry_after=f.retry_after)  # fmt: skip
        return status, _Refused(status, _remote_message(parsed, excerpt))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


class _Refused:
    """A 4xx answer (not a system failure): the caller decides what it means."""

    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message

    def fail(self, what: str) -> UserFailure:
        return UserFailure(f"{what}: HTTP {self.status}: {self.message}".rstrip(": "))


def _remote_message(parsed: Any, excerpt: str) -> str:
    if isinstance(parsed, dict):
        for k in ("message", "error", "detail"):
            if isinstance(parsed.get(k), str):
                return str(parsed[k])
    return excerpt


def _secret(ctx: TaskContext, name: str) -> str:
    if name not in ctx.secrets:
        raise UserFailure(f"secret {name!r} is not declared by the step (secrets: [...])")
    return ctx.secrets[name]


def _pick(doc: Any, ptr: str, what: str) -> Any:
    try:
        return pointer(doc, ptr)
    except KeyError as exc:
        raise UserFailure(f"{what}: {exc.args[0]}") from None


class HttpCallPlugin(SyncPlugin):
    """One request; its answer (at ``output_pointer``) is the step's output."""

    id = "http_call"
    task_types = frozenset({"http_call"})
    default_for = frozenset({"http_call"})
    config_model = HttpCallConfig
    description = "one templated HTTP request; the answer is the output"

    def __init__(self, host: PluginHost | None = None) -> None:
        super().__init__(host)
        self._http = _Http(self.host)

    async def do(self, ctx: TaskContext) -> Any:
        cfg: HttpCallConfig = ctx.config
        extra = {"idempotency-key": ctx.idempotency_key}
        _, answer = await self._http.send(cfg, ctx, extra=extra)
        if isinstance(answer, _Refused):
            raise answer.fail(f"{cfg.method} {cfg.url}")
        return _pick(answer, cfg.output_pointer, "output")

    async def close(self) -> None:
        await self._http.close()


class HttpJobPlugin(AsyncPlugin):
    """A remote job: POST to create, GET its status URL, DELETE to cancel."""

    id = "http_job"
    task_types = frozenset({"http_job"})
    default_for = frozenset({"http_job"})
    config_model = HttpJobConfig
    description = "a remote job: templated POST, polled status URL, DELETE to cancel"

    def __init__(self, host: PluginHost | None = None) -> None:
        super().__init__(host)
        self._http = _Http(self.host)

    async def create(self, ctx: TaskContext) -> tuple[Any, Any | None]:
        cfg: HttpJobConfig = ctx.config
        extra = {cfg.idempotency_header: ctx.idempotency_key}
        _, answer = await self._http.send(cfg.create, ctx, extra=extra)
        if isinstance(answer, _Refused):
            raise answer.fail(f"create ({cfg.create.method} {cfg.create.url})")
        remote_id = str(_pick(answer, cfg.id_pointer, "the create answer's id"))
        meta = {
            "id": remote_id,
            "status_url": cfg.status_url.replace("{id}", remote_id),
            "cancel_url": cfg.cancel_url.replace("{id}", remote_id) if cfg.cancel_url else None,
        }
        # The create answer is a resource only when it already carries a state.
        try:
            pointer(answer, cfg.state_pointer)
        except KeyError:
            return meta, None
        return meta, answer

    async def get(self, meta: Any, ctx: TaskContext) -> Any:
        cfg: HttpJobConfig = ctx.config
        _, answer = await self._http.send(
            cfg.create, ctx, method="GET", url=meta["status_url"], with_body=False
        )
        if isinstance(answer, _Refused):
            if answer.status == 404 and cfg.missing == "retry":
                raise SystemFailure(f"remote job {meta['id']} not found (yet)")
            if answer.status == 404:
                raise UserFailure(f"remote job {meta['id']} vanished (HTTP 404 on its status)")
            raise answer.fail(f"status of remote job {meta['id']}")
        return answer

    def status(self, ctx: TaskContext, resource: Any) -> Phase:
        cfg: HttpJobConfig = ctx.config
        state = str(_pick(resource, cfg.state_pointer, "the status answer's state"))
        try:
            message = str(pointer(resource, cfg.message_pointer))
        except KeyError:
            message = ""
        if state in cfg.succeeded:
            try:
                outputs = pointer(resource, cfg.outputs_pointer)
            except KeyError:
                outputs = None
            return Phase.succeeded(outputs, message)
        if state in cfg.failed:
            return Phase.failed(message or f"remote job ended {state}")
        if state in cfg.retryable:
            return Phase.retryable(message or f"remote job ended {state}")
        if state in cfg.queued:
            return Phase.queued(message)
        return Phase.running(message)

    async def delete(self, meta: Any, reason: str, ctx: TaskContext) -> None:
        cfg: HttpJobConfig = ctx.config
        url = meta.get("cancel_url")
        if not url:
            return
        _, answer = await self._http.send(
            cfg.create, ctx, method=cfg.cancel_method, url=url, with_body=False
        )
        if isinstance(answer, _Refused) and answer.status not in (404, 410):
            raise answer.fail(f"cancel of remote job {meta['id']}")

    async def close(self) -> None:
        await self._http.close()
