"""Secrets benchmarks (issue 13, items 7 and 8). Not a test: prints tables.

    .venv/bin/python bench/secrets_bench.py

- redactor: log lines masked per second by a step's ``LineMasker`` (one
  declared secret), with the token shapes of before this issue and of now
  (Bearer/Basic credentials, Slack app, Stripe, Google added), on ordinary
  lines and on lines that hold a token;
- resolvers: one resolution of one secret, median and p99 over 2,000, for
  env, file and the store (SQLite; PostgreSQL when FERRYMAN_TEST_PG_URL is set);
- api_call: one POST to a loopback server, median over 500, against a bare
  httpx client doing the same request.
"""

from __future__ import annotations

import os
import re
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import ferryman.redaction as redaction
from ferryman.redaction import Redactor

SECRET = "cast-Key-4f9a1c7e2b5d"
ORDINARY = [f"2026-05-04 09:12:{i % 60:02d} processed batch {i} rows=1200 in 0.{i % 9}s"
            for i in range(1000)]  # fmt: skip
TOKENS = [f"calling GET /v1/x Authorization: Bearer tok{i:08d}.abc ok" for i in range(1000)]


def _lines_per_second(lines: list[str], rounds: int = 20) -> float:
    """The best of 5 (the machine is shared: the best run is the least disturbed)."""
    masker = Redactor.of([SECRET]).lines()
    best = 0.0
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(rounds):
            for line in lines:
                masker(line)
        best = max(best, rounds * len(lines) / (time.perf_counter() - start))
    return best


def bench_redactor() -> None:
    now = {k: _lines_per_second(v) for k, v in (("ordinary", ORDINARY), ("tokens", TOKENS))}
    # the shapes of before: the quick test without the added prefixes
    saved = redaction._SHAPE_START
    saved_line_re = redaction._SHAPES_LINE
    redaction._SHAPE_START = re.compile(
        r"xox|gh[pousr]_|github_pat_|AKIA|ASIA|whsec_|fm_|eyJ|-----BEGIN"
    )
    redaction._SHAPES_LINE = re.compile("|".join(  # the shapes of before (no new ones)
        [p for k, p in redaction.TOKEN_SHAPES.items()
         if k not in ("slack app", "stripe", "google", "bearer", "basic")]
        + [rf"{redaction._PEM_BEGIN}.*"]))  # fmt: skip
    try:
        before = {"ordinary": _lines_per_second(ORDINARY)}
    finally:
        redaction._SHAPE_START = saved
        redaction._SHAPES_LINE = saved_line_re
    print("| lines | before (lines/s) | now (lines/s) |")
    print("|---|---|---|")
    print(f"| ordinary | {before['ordinary']:,.0f} | {now['ordinary']:,.0f} |")
    print(f"| with a Bearer token | (not masked) | {now['tokens']:,.0f} |")


def _timings(fn: Callable[[], object], n: int) -> tuple[float, float]:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


def bench_resolvers() -> None:
    from ferryman.secret_box import SecretBox
    from ferryman.secret_resolvers.environment import EnvironmentResolver
    from ferryman.secret_resolvers.files import FileResolver
    from ferryman.secret_resolvers.stored import StoreResolver
    from ferryman.services.secret_store import set_secret
    from ferryman.store.engine import Store

    os.environ["CAST_API_KEY"] = SECRET
    rows = [("env", EnvironmentResolver())]
    tmp = Path(tempfile.mkdtemp())
    (tmp / "CAST_API_KEY").write_text(SECRET)
    rows.append(("file", FileResolver(tmp)))
    stores = [("store (SQLite)", f"sqlite:///{tmp}/f.db")]
    if os.environ.get("FERRYMAN_TEST_PG_URL"):
        stores.append(("store (PostgreSQL)", os.environ["FERRYMAN_TEST_PG_URL"]))
    for label, url in stores:
        store = Store(url, secret_box=SecretBox.of("bench-key-" + "b" * 30))
        store.prepare_schema()
        with store.write() as conn:
            set_secret(conn, "CAST_API_KEY", SECRET, by="bench")
        rows.append((label, StoreResolver(store)))  # type: ignore[arg-type]
    print("| resolver | median (ms) | p99 (ms) |")
    print("|---|---|---|")
    for label, r in rows:
        med, p99 = _timings(lambda r=r: r.resolve(["CAST_API_KEY"]), 2000)  # type: ignore[misc]
        print(f"| {label} | {med:.3f} | {p99:.3f} |")


class _Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


def bench_api_call() -> None:
    import httpx

    from ferryman.http import api_call

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"

    def bare() -> None:
        with httpx.Client(timeout=5) as c:
            c.post(url, json={"a": 1}, headers={"Authorization": f"Bearer {SECRET}"})

    ours = _timings(lambda: api_call("POST", url, json={"a": 1}, secret=SECRET), 500)
    base = _timings(bare, 500)
    server.shutdown()
    print("| one POST on loopback (new client each) | median (ms) | p99 (ms) |")
    print("|---|---|---|")
    print(f"| httpx, bare | {base[0]:.2f} | {base[1]:.2f} |")
    print(f"| ferryman.http.api_call | {ours[0]:.2f} | {ours[1]:.2f} |")


if __name__ == "__main__":
    bench_redactor()
    print()
    bench_resolvers()
    print()
    bench_api_call()
