"""``api_call``: one HTTP request to an API, as a step (an API bot) should send it.

::

    from ferryman import secret
    from ferryman.http import api_call

    answer = api_call("POST", "https://api.example.com/v1/casts",
                      json={"id": 42}, secret=secret("CAST_API_KEY"),
                      idempotency_key=f"cast-42-{run_id}")
    answer.json()

What it does for you:

- **Timeouts, always**: ``connect``, ``read`` (each wait for the server) and
  ``total`` (the whole call, retries and waits included); ``Timeouts`` or
  seconds (every bound), never unbounded.
- **Retries only when safe**: a connection that could not be opened (nothing
  was sent) is retried for every method; a timeout, a 5xx, 408 or 429 only
  for idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE) or a request that
  carries an ``Idempotency-Key``. Backoff with jitter (``stamina``);
  ``Retry-After`` of a 429 or 503 is honoured (up to ``max_retry_after``, and
  never past ``total``).
- **4xx is permanent**: ``ApiCallFailed`` at once, with the status and an
  excerpt of the answer, masked.
- **The body is always sent**: it is encoded once (``json=`` as JSON,
  ``content=`` as given) and sent again as it is on every attempt.
- **Logged safely**: method, origin and path (no query), status, latency and
  attempt at INFO on ``ferryman.http.api``; never a body nor a header, and
  the secret (and token shapes) masked wherever a text could show them.

``secret`` (a ``ferryman.Secret`` or a text) goes into ``Authorization:
Bearer …`` (``auth_scheme``; ``secret_header="X-Api-Key"`` sends it bare in
that header instead). Destinations: cloud metadata services are refused
(``policy`` to change it). httpx and stamina are imported on first call.
"""

from __future__ import annotations

import json as jsonlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ferryman.http.base import DestinationPolicy, Timeouts
from ferryman.http.errors import describe, response_excerpt, retry_after
from ferryman.redaction import Redactor
from ferryman.runtime.secret import Secret

log = logging.getLogger("ferryman.http.api")

#: Methods whose repetition has the effect of one request (RFC 9110, 9.2.2).
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
#: Statuses worth another attempt of an idempotent request.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: The default bounds: 5 s to connect, 30 s per read, 60 s for the whole call.
DEFAULT_TIMEOUTS = Timeouts(connect=5.0, read=30.0, total=60.0)
_UNSET: Any = object()


class ApiCallFailed(Exception):
    """The call failed: ``status`` (None when no answer came), ``excerpt`` (the
    start of the answer, masked), ``attempts`` made and whether it was
    ``permanent`` (a 4xx, a refused destination: retrying cannot help)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        excerpt: str | None = None,
        attempts: int = 1,
        permanent: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.excerpt = excerpt
        self.attempts = attempts
        self.permanent = permanent


@dataclass
class ApiResponse:
    """A 2xx or 3xx answer: status, headers, body, latency (s) and attempts made."""

    status: int
    headers: Mapping[str, str]
    content: bytes
    elapsed: float
    attempts: int
    url: str = field(repr=False, default="")

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON (``ValueError`` when it is not)."""
        return jsonlib.loads(self.content)


class RetryableFailure(Exception):
    """One attempt failed in a way another may fix (``wait``: Retry-After);
    the last one's ``failure`` is what the caller gets."""

    def __init__(self, failure: ApiCallFailed, wait: float | None = None) -> None:
        super().__init__(str(failure))
        self.failure = failure
        self.wait = wait


@dataclass
class Call:
    """A request prepared once for all its attempts (``prepare``)."""

    method: str
    url: str
    body: bytes | None
    headers: dict[str, str]
    params: Mapping[str, str | int | float] | None
    limits: Timeouts
    attempts: int
    max_retry_after: float
    mask: Redactor
    shown: str
    retry_all: bool
    deadline: float = 0.0

    def start(self) -> None:
        """The total timeout starts now."""
        assert self.limits.total is not None
        self.deadline = time.monotonic() + self.limits.total

    def on(self, exc: Exception) -> bool | float:
        """stamina's hook: whether to retry after ``exc``, or how long to wait."""
        if not isinstance(exc, RetryableFailure):
            return False
        if exc.wait is None:
            return True
        if exc.wait > self.max_retry_after or time.monotonic() + exc.wait > self.deadline:
            return False  # the server asks for longer than we may wait
        return exc.wait

    def retry_context(self) -> Any:
        import stamina

        assert self.limits.total is not None
        return stamina.retry_context(
            on=self.on, attempts=self.attempts, timeout=self.limits.total,
            wait_initial=0.2, wait_max=10.0,
        )  # fmt: skip


def prepare(
    method: str,
    url: str,
    *,
    json: Any = _UNSET,
    content: bytes | str | None = None,
    params: Mapping[str, str | int | float] | None = None,
    headers: Mapping[str, str] | None = None,
    secret: Secret | str | None = None,
    auth_scheme: str = "Bearer",
    secret_header: str = "Authorization",
    idempotency_key: str | None = None,
    timeout: Timeouts | float = DEFAULT_TIMEOUTS,
    attempts: int = 4,
    max_retry_after: float = 60.0,
) -> Call:
    """The request ``api_call`` (and ``api_call_async``) sends; ``ValueError``
    for a missing timeout or a bad combination of arguments."""
    method = method.upper()
    limits = _timeouts(timeout)
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    value = secret.reveal() if isinstance(secret, Secret) else secret
    mask = Redactor.of([value] if value else [])
    body, sent = _request(json, content, headers, idempotency_key)
    if value:
        sent[secret_header] = f"{auth_scheme} {value}" if auth_scheme else value
    retry_all = method in IDEMPOTENT or any(k.lower() == "idempotency-key" for k in sent)
    return Call(method, url, body, sent, params, limits, attempts, max_retry_after, mask,
                _shown(url, mask), retry_all)  # fmt: skip


def api_call(
    method: str,
    url: str,
    *,
    policy: DestinationPolicy | None = None,
    transport: Any = None,
    **options: Any,
) -> ApiResponse:
    """Send one request (retried when that is safe) and return its 2xx/3xx answer;
    ``ApiCallFailed`` otherwise. ``options``: ``json``, ``content``, ``params``,
    ``headers``, ``secret``, ``auth_scheme``, ``secret_header``,
    ``idempotency_key``, ``timeout``, ``attempts``, ``max_retry_after`` (see
    the module's documentation). ``transport``: an httpx transport (tests)."""
    import httpx

    from ferryman.http.sync import sync_client

    call = prepare(method, url, **options)
    call.start()
    count = 0
    client = sync_client(
        Timeouts(call.limits.connect, call.limits.read), policy=policy or default_policy(),
        transport=transport,
    )  # fmt: skip
    try:
        for attempt in call.retry_context():
            with attempt:
                count += 1
                return _attempt(client, call, count)
    except RetryableFailure as exc:
        exc.failure.attempts = count
        raise exc.failure from None
    except httpx.InvalidURL:
        raise ApiCallFailed(f"{call.method} {call.shown}: invalid URL", permanent=True) from None
    finally:
        client.close()
    raise AssertionError("unreachable")  # pragma: no cover - stamina raises or returns


def _attempt(client: Any, call: Call, count: int) -> ApiResponse:
    import httpx

    started = time.monotonic()
    try:
        with client.stream(
            call.method, call.url, content=call.body, headers=call.headers, params=call.params
        ) as r:
            chunks = []
            for chunk in r.iter_bytes():
                chunks.append(chunk)
                if time.monotonic() > call.deadline:
                    raise httpx.ReadTimeout("the total timeout passed while reading the answer")
            data = b"".join(chunks)
    except Exception as exc:
        not_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
        raise judge_exception(exc, not_sent, call, count, started) from None
    elapsed = time.monotonic() - started
    return judge_answer(call, r.status_code, r.headers, data, elapsed, count, str(r.url))


def judge_exception(
    exc: BaseException, not_sent: bool, call: Call, count: int, started: float
) -> ApiCallFailed | RetryableFailure:
    """What a failed attempt means: the error, wrapped in ``RetryableFailure`` when
    another attempt is safe and may help (``not_sent``: no connection opened)."""
    ms = (time.monotonic() - started) * 1000
    failure = describe(exc, secrets=call.mask.secrets)
    text = call.mask(failure.error)
    log.info("%s %s failed in %.0f ms (attempt %d): %s", call.method, call.shown, ms, count, text)
    error = ApiCallFailed(
        f"{call.method} {call.shown}: {text}", attempts=count, permanent=not failure.retryable
    )
    # Nothing was sent when no connection opened: any method may try again.
    if failure.retryable and (call.retry_all or not_sent):
        return RetryableFailure(error)
    return error


def judge_answer(
    call: Call,
    status: int,
    headers: Mapping[str, str],
    data: bytes,
    elapsed: float,
    count: int,
    url: str,
) -> ApiResponse:
    """The answer of an attempt, logged; ``ApiCallFailed`` (``RetryableFailure``) on 4xx/5xx."""
    log.info("%s %s -> %d in %.0f ms (attempt %d)", call.method, call.shown, status,
             elapsed * 1000, count)  # fmt: skip
    if status < 400:
        return ApiResponse(status, dict(headers), data, elapsed, count, url)
    excerpt = response_excerpt(call.mask(data.decode("utf-8", "replace")), 300)
    permanent = status < 500 and status not in RETRY_STATUSES
    message = f"{call.method} {call.shown}: HTTP {status}" + (f": {excerpt}" if excerpt else "")
    error = ApiCallFailed(
        message, status=status, excerpt=excerpt, attempts=count, permanent=permanent
    )
    if not permanent and call.retry_all:
        wait = retry_after(headers.get("retry-after")) if status in (429, 503) else None
        raise RetryableFailure(error, wait)
    raise error


def _timeouts(timeout: Timeouts | float) -> Timeouts:
    if isinstance(timeout, Timeouts):
        if timeout.total is None:
            raise ValueError("api_call needs a total timeout (Timeouts(connect, read, total))")
        return timeout
    if isinstance(timeout, int | float) and not isinstance(timeout, bool) and timeout > 0:
        return Timeouts.overall(float(timeout))
    raise ValueError("api_call needs a timeout: seconds (> 0) or Timeouts(connect, read, total)")


def _request(
    json: Any, content: bytes | str | None, headers: Mapping[str, str] | None, key: str | None
) -> tuple[bytes | None, dict[str, str]]:
    """The body, encoded once (every attempt sends these bytes), and the headers."""
    out = dict(headers or {})
    if json is not _UNSET and content is not None:
        raise ValueError("give json= or content=, not both")
    body: bytes | None = None
    if json is not _UNSET:
        body = jsonlib.dumps(json, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if not any(k.lower() == "content-type" for k in out):
            out["Content-Type"] = "application/json"
    elif content is not None:
        body = content.encode("utf-8") if isinstance(content, str) else content
    if key is not None:
        out["Idempotency-Key"] = key
    return body, out


def _shown(url: str, mask: Redactor) -> str:
    """``scheme://host[:port]/path``: no credentials, no query, secrets masked."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(invalid URL)"
    host = f"[{host}]" if ":" in host else host
    return mask(f"{parts.scheme}://{host}{port}{parts.path}")


def default_policy() -> DestinationPolicy:
    # A step is user code: private networks are its business; cloud metadata
    # services (the machine's credentials) are refused all the same.
    from ferryman.http.base import AddressPolicy

    return AddressPolicy(private=False)
