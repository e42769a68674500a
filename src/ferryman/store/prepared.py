"""Prepared statements for the engine's hot path.

SQLAlchemy Core spends ~0.1-0.2 ms of Python per ``execute`` (building the
execution context, processing parameters and results). A worker turn runs
half a dozen statements per step, so for thousands of tiny steps that
overhead dominates. A ``Prepared`` statement is compiled once per dialect by
SQLAlchemy itself (same SQL, same bind processors for datetimes and JSON) and
then executed on the DBAPI cursor of the connection's current transaction.

Only for statements whose parameters are all scalar (no ``expanding`` IN
lists) and whose result columns need no type processing.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement


@dataclass
class _Compiled:
    sql: str
    order: tuple[str, ...] | None  # positional parameter order, None for named styles
    defaults: dict[str, Any]
    processors: Mapping[str, Any]
    row: Any


class Prepared:
    """A statement compiled once per dialect and run on the raw DBAPI cursor."""

    def __init__(self, stmt: ClauseElement, *, returns: tuple[str, ...] = ()) -> None:
        self.stmt = stmt
        self.returns = returns
        self._compiled: dict[str, _Compiled] = {}

    def _compile(self, conn: Connection) -> _Compiled:
        dialect = conn.dialect
        c = self._compiled.get(dialect.name)
        if c is None:
            compiled = self.stmt.compile(dialect=dialect)
            assert isinstance(compiled, SQLCompiler)
            if any(b.expanding for b in compiled.binds.values()):
                raise ValueError("Prepared statements cannot have expanding parameters")
            positional = dialect.paramstyle in ("qmark", "numeric", "format")
            order = tuple(compiled.positiontup or ()) if positional else None
            defaults = {
                k: b.effective_value
                for k, b in compiled.binds.items()
                if not b.required and b.effective_value is not None
            }
            row = namedtuple("Row", self.returns) if self.returns else None
            c = _Compiled(compiled.string, order, defaults, compiled._bind_processors, row)
            self._compiled[dialect.name] = c
        return c

    def _args(self, c: _Compiled, params: Mapping[str, Any]) -> Any:
        merged = {**c.defaults, **params} if c.defaults else dict(params)
        for k, proc in c.processors.items():
            if k in merged and merged[k] is not None:
                merged[k] = proc(merged[k])
        if c.order is not None:
            return tuple(merged[k] for k in c.order)
        return merged

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[Any]:
        """Execute and return the result rows as named tuples."""
        c = self._compile(conn)
        cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cur.execute(c.sql, self._args(c, params))
            if c.row is None:
                return []
            return [c.row(*r) for r in cur.fetchall()]
        finally:
            cur.close()

    def run_many(self, conn: Connection, params: Sequence[Mapping[str, Any]]) -> None:
        """Execute once per parameter set (no result)."""
        if not params:
            return
        c = self._compile(conn)
        cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cur.executemany(c.sql, [self._args(c, p) for p in params])
        finally:
            cur.close()
