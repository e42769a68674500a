"""Shared CLI plumbing: settings, the store, params parsing and clean errors."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

import typer

from ferryman.settings import Settings

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


class _LazyConsole:
    """A rich ``Console`` built on first use: importing rich costs tens of
    milliseconds that commands printing nothing rich (``ferryman server``,
    ``ferryman worker``) should not pay at start-up."""

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._real: Console | None = None

    @property
    def real(self) -> Console:
        if self._real is None:
            from rich.console import Console

            kwargs = dict(self._kwargs)
            stream = sys.stderr if kwargs.get("stderr") else sys.stdout
            if not _is_terminal(stream):
                # Piped or redirected: whatever reads it gets every character
                # (no ellipsis, no wrapping at COLUMNS), so ids and names can be cut
                # out with awk or grep.
                kwargs.setdefault("width", UNLIMITED_WIDTH)
                kwargs.setdefault("soft_wrap", True)
            self._real = Console(**kwargs)
        return self._real

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


#: The width of output that is not a terminal: wide enough never to cut.
UNLIMITED_WIDTH = 1_000_000


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # replaced or closed
        return False


_console = _LazyConsole(highlight=False)
_err_console = _LazyConsole(stderr=True, highlight=False)
console: Console = cast("Console", _console)
err_console: Console = cast("Console", _err_console)


def real_console() -> Console:
    """The console itself (for rich objects that need one, like ``Live``)."""
    return _console.real


def table(*columns: str, to: Console | None = None, **kwargs: Any) -> Table:
    """A rich ``Table`` (rich is imported on first use) to print on ``to``
    (default: standard output). On a terminal it has borders; otherwise its
    columns are separated by spaces only, under one header line, and never
    shortened."""
    from rich.table import Table

    if not (to or console).is_terminal:
        kwargs.setdefault("box", None)
        kwargs.setdefault("pad_edge", False)
    t = Table(*columns, **kwargs)
    for column in t.columns:
        column.overflow = "fold"  # a narrow terminal folds a value, never cuts it
    return t


def escape(text: str) -> str:
    """Escape rich markup in ``text``."""
    from rich.markup import escape as _escape

    return _escape(text)


F = TypeVar("F", bound=Callable[..., Any])

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def settings() -> Settings:
    try:
        return Settings()
    except Exception as exc:  # pydantic's ValidationError, rendered cleanly
        fail(f"invalid FERRYMAN_* configuration: {exc}")


def open_store(s: Settings | None = None) -> Any:
    """The local store; runs left ``running`` by a ``ferryman run`` process
    that died (its run lease expired) are ended first, and said so."""
    from ferryman.store.engine import Store

    store = Store.from_settings(s or settings())
    end_orphaned_runs(store)
    return store


def end_orphaned_runs(store: Any) -> None:
    """End the runs whose ``ferryman run`` process died (``services/run_leases.py``)."""
    import sqlalchemy as sa

    from ferryman.services.run_leases import end_orphans
    from ferryman.services.runs import RunService

    try:
        ended = end_orphans(RunService(store))
    except sa.exc.SQLAlchemyError:  # a side duty: the command itself reports an outage
        return
    for run_id in ended:
        err_console.print(
            f"[yellow]run {escape(run_id)} was left running by a ferryman process that died; "
            "it is now failed (continue it with: ferryman runs rerun "
            f"{escape(run_id)})[/]",
            soft_wrap=True,
        )


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``error: message`` (plain text, never markup) and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def print_candidates(message: str, candidates: Any) -> None:
    """``error: message`` and the runs an ambiguous handle could mean (a list
    of ``{id, name, namespace, pipeline, created_at}``)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    if not isinstance(candidates, list):
        return
    t = table("run id", "name", "pipeline", "created", to=err_console)
    for c in candidates:
        if isinstance(c, dict):
            t.add_row(
                escape(str(c.get("id"))),
                escape(str(c.get("name"))),
                escape(f"{c.get('namespace')}/{c.get('pipeline')}"),
                str(c.get("created_at", ""))[:19].replace("T", " "),
            )
    err_console.print(t)


@contextmanager
def clean_errors() -> Iterator[None]:
    """Turn every expected error into a one-line message and an exit code."""
    from pydantic import ValidationError
    from sqlalchemy.exc import OperationalError

    from ferryman.domain.params import ParamsInvalid
    from ferryman.dsl.decorators import DSLError
    from ferryman.errors import Ambiguous, FerrymanError

    try:
        yield
    except typer.Exit:
        raise
    except Ambiguous as exc:
        print_candidates(exc.message, exc.details)
        raise typer.Exit(EXIT_USAGE) from None
    except ParamsInvalid as exc:
        err_console.print("[bold red]error:[/] invalid parameters:")
        for e in exc.errors:
            err_console.print(
                f"  - [bold]{escape(e.path or '(params)')}[/]: {escape(e.reason)}", soft_wrap=True
            )
        raise typer.Exit(EXIT_USAGE) from None
    except (FerrymanError, DSLError, LookupError, ValueError) as exc:
        if isinstance(exc, ValidationError):
            fail(_pydantic_message(exc))
        fail(str(exc))
    except OperationalError as exc:
        fail(f"database error: {exc.orig}", EXIT_FAILED)
    except Exception as exc:
        if os.environ.get("FERRYMAN_DEBUG"):
            raise
        fail(
            f"internal error: {type(exc).__name__}: {exc} (set FERRYMAN_DEBUG=1 for details)",
            EXIT_FAILED,
        )


def _pydantic_message(exc: Any) -> str:
    return "; ".join(
        f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)
    )


def parse_params(pairs: list[str] | None, params_file: Path | None) -> dict[str, Any]:
    """``-p key=value`` pairs (values parsed as JSON when they are JSON) and
    an optional JSON/YAML file; pairs win over the file."""
    params: dict[str, Any] = {}
    if params_file is not None:
        try:
            text = params_file.read_text()
        except OSError as exc:
            fail(f"cannot read params file: {exc}")
        try:
            if params_file.suffix in (".yaml", ".yml"):
                from ferryman.yaml_reader import parse_yaml

                data = parse_yaml(text)  # bounded: no alias bombs, no duplicate keys
            else:
                data = json.loads(text)
        except Exception as exc:
            what = "YAML" if params_file.suffix in (".yaml", ".yml") else "JSON"
            detail = str(exc).removeprefix("invalid YAML").lstrip(": ")
            fail(f"{params_file}: not valid {what}: {detail}")
        if not isinstance(data, dict):
            fail(f"{params_file}: parameters must be a mapping of names to values")
        params.update(data)
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            fail(f"parameter {pair!r} must look like name=value")
        if raw.startswith("@@"):  # a value that starts with "@"
            params[key] = RawParam(raw[1:])
        elif raw.startswith("@"):  # name=@config.json: the file's JSON (or YAML)
            params[key] = _file_value(key, Path(raw[1:]))
        else:
            params[key] = RawParam(raw)
    return params


def _file_value(key: str, path: Path) -> Any:
    """The value of ``-p key=@path``: the file's JSON (YAML for .yaml/.yml)."""
    try:
        text = path.read_text()
    except OSError as exc:
        fail(f"parameter {key}: cannot read {path}: {exc.strerror or exc}")
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text)
        return json.loads(text)
    except Exception as exc:
        kind = "YAML" if path.suffix in (".yaml", ".yml") else "JSON"
        fail(f"parameter {key}: {path} is not valid {kind}: {exc}")


class RawParam(str):
    """A ``-p name=value`` value, typed once the pipeline's parameters are known."""


def type_params(params: dict[str, Any], spec: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """Give ``-p`` values their types, by the declared type of each parameter
    of ``spec`` (a ``PipelineSpec`` or the API's ``PipelineDetail``): text for
    ``string`` and ``date`` parameters (``-p day=2024`` stays the string
    ``"2024"``), JSON for the others (``-p n=3``, ``-p 'tags=["a","b"]'``),
    the raw text when it is not JSON. Values from a params file are JSON
    already and are left alone (validated like the REST API's).

    Also returns hints for the errors of ``-p`` values: how a list or a
    mapping is written on the command line."""
    types = {p.name: p.type for p in spec.params}
    out: dict[str, Any] = {}
    hints: dict[str, str] = {}
    for k, v in params.items():
        if not isinstance(v, RawParam):
            out[k] = v
            continue
        text = str(v)
        declared = types.get(k)
        if declared in ("string", "date"):
            out[k] = text
            continue
        if declared == "array":
            hints[k] = f"""(on the command line a list is JSON: -p {k}='["a","b"]')"""
        elif declared == "object":
            hints[k] = f"""(on the command line a mapping is JSON: -p {k}='{{"key": "value"}}')"""
        try:
            out[k] = json.loads(text)
        except ValueError:
            out[k] = text
    return out, hints


def with_param_hints(exc: Any, hints: dict[str, str]) -> Any:
    """``ParamsInvalid`` ``exc`` with ``hints`` added to the reasons of the
    parameters they are about."""
    from ferryman.domain.params import ParamError, ParamsInvalid

    if not hints:
        return exc
    errors = [
        ParamError(e.path, f"{e.reason} {hints[top]}") if (top := _top(e.path)) in hints else e
        for e in exc.errors
    ]
    return ParamsInvalid(errors)


def _top(path: str) -> str:
    return path.split(".")[0].split("[")[0]


def setup_logging(level: str = "WARNING") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def looks_like_file(ref: str) -> bool:
    """A file or ``package.module:pipeline`` (as opposed to a deployed pipeline's
    name): a ``:``, a path (``dir/x``), a pipeline file's suffix or one close to
    it (``etl.pyy`` is a missing file, not a pipeline name), or an existing path."""
    from ferryman.dsl.loader import looks_like_path

    target = ref.partition(":")[0]
    return ":" in ref or looks_like_path(target) or Path(target).exists()
