"""Reusable parameter validators.

A pipeline declares validators as data (``ValidatorSpec``: a ``kind``, the
parameter ``fields`` it checks and ``options``), so they are stored and hashed
with the pipeline and behave the same whether the pipeline was written with the
Python DSL or in a YAML/JSON file. ``run_validators`` applies them to a run's
parameters and returns *every* problem as a ``ParamError`` with its path.

Built-in kinds:

``language``
    Each value (a string, or a list of strings) must be one of
    ``options["allowed"]`` (default ``DEFAULT_LANGUAGES``). Case-sensitive.
``date``
    Each value must be a ``YYYY-MM-DD`` string (or a ``datetime.date``).
    ``max_age_days: N`` requires the date to be on or after *today - N days*.
    Future dates are accepted unless ``allow_future: false``. "Today" is taken
    in ``timezone`` (an IANA name) when given, else in the server's local time;
    it comes from the module-level ``clock`` so tests can replace it.
``required_together``
    The fields must be all present or all absent (``None``, ``""`` and a missing
    key count as absent); each missing field is reported.
``url``
    Each value must be an absolute URL with a host and a scheme among
    ``options["schemes"]`` (default ``http``, ``https``).
``custom``
    ``options["ref"]`` names a function, ``package.module:function`` or
    ``/path/to/file.py:function``, called with the parameters dict. It returns
    ``None`` (valid), reasons (strings, reported with an empty path),
    ``(path, reason)`` pairs or ``ParamError``s; raising ``ValueError`` reports
    its message.

``language``, ``date`` and ``url`` ignore null or missing values (mark the
parameter required to demand a value). Fields that already failed their type
check are left out, so one mistake is reported once.

New kinds are added with ``@register_validator("kind")``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from ferryman.domain.markers import (
    DEFAULT_LANGUAGES,
    DEFAULT_URL_SCHEMES,
    DateString,
    FieldValidator,
    LanguageCode,
    Url,
    date_string,
    language_code,
    tuple_of_str,
    url,
)
from ferryman.domain.param_errors import ParamError
from ferryman.domain.spec import ValidatorSpec

__all__ = [
    "DEFAULT_LANGUAGES",
    "DEFAULT_URL_SCHEMES",
    "DateString",
    "FieldValidator",
    "LanguageCode",
    "Url",
    "ValidatorFunc",
    "check_validator_spec",
    "clock",
    "custom",
    "date_string",
    "language_code",
    "register_validator",
    "required_together",
    "run_validators",
    "url",
    "validator_kinds",
]


ValidatorFunc = Callable[[ValidatorSpec, dict[str, Any]], list[ParamError]]
"""A validator: receives its spec and the parameters, returns the problems."""

OptionsCheck = Callable[[ValidatorSpec], None]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


clock: Callable[[], dt.datetime] = _now
"""Current time used by the ``date`` validator; replace it in tests."""


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class _Entry:
    func: ValidatorFunc
    check: OptionsCheck | None
    all_fields: bool


_REGISTRY: dict[str, _Entry] = {}


def register_validator(
    kind: str,
    *,
    check: OptionsCheck | None = None,
    all_fields: bool = False,
    replace: bool = False,
) -> Callable[[ValidatorFunc], ValidatorFunc]:
    """Register a validator function for ``kind``.

    The function receives the ``ValidatorSpec`` and the parameters and returns a
    list of ``ParamError``. ``check`` validates a spec's fields and options when
    a pipeline is defined (raise ``ValueError``). Normally fields that failed
    their type check are removed from the spec's ``fields`` before the call;
    with ``all_fields=True`` the validator is skipped instead when any of its
    fields failed. Registering a kind twice is an error unless ``replace``.
    """

    def decorator(func: ValidatorFunc) -> ValidatorFunc:
        if kind in _REGISTRY and not replace:
            raise ValueError(f"validator kind {kind!r} is already registered")
        _REGISTRY[kind] = _Entry(func, check, all_fields)
        return func

    return decorator


def validator_kinds() -> list[str]:
    """The registered validator kinds, sorted."""
    return sorted(_REGISTRY)


def check_validator_spec(spec: ValidatorSpec) -> None:
    """Check that ``spec`` names a known kind with valid fields and options.

    Raises ``ValueError`` with a message saying what is wrong.
    """
    entry = _REGISTRY.get(spec.kind)
    if entry is None:
        known = ", ".join(validator_kinds())
        raise ValueError(f"unknown validator kind {spec.kind!r} (known: {known})")
    if len(set(spec.fields)) != len(spec.fields):
        raise ValueError(f"validator {spec.kind!r} names a field twice")
    if entry.check is not None:
        entry.check(spec)


def run_validators(
    specs: list[ValidatorSpec],
    params: dict[str, Any],
    skip: set[str] | frozenset[str] = frozenset(),
) -> list[ParamError]:
    """Apply every validator to ``params`` and return all the problems found.

    ``skip`` names fields that already have a type error: they are not checked
    (nor reported) again. Never raises for bad input: an unknown kind, invalid
    options or a crashing validator become ``ParamError``s too.
    """
    errors: list[ParamError] = []
    visible = {k: v for k, v in params.items() if k not in skip}
    for spec in specs:
        try:
            check_validator_spec(spec)
        except ValueError as exc:
            errors.append(ParamError("", f"invalid validator {spec.kind!r}: {exc}"))
            continue
        entry = _REGISTRY[spec.kind]
        remaining = [f for f in spec.fields if f not in skip]
        if spec.fields and (not remaining or (entry.all_fields and remaining != spec.fields)):
            continue
        if remaining != spec.fields:
            spec = spec.model_copy(update={"fields": remaining})
        try:
            errors.extend(entry.func(spec, dict(visible)))
        except Exception as exc:
            errors.append(
                ParamError("", f"validator {spec.kind!r} failed: {type(exc).__name__}: {exc}")
            )
    return errors


# --------------------------------------------------------------------------- helpers


def _known_options(spec: ValidatorSpec, known: Iterable[str]) -> None:
    names = list(known)
    for key in spec.options:
        if key not in names:
            listed = ", ".join(names) or "none"
            raise ValueError(
                f"validator {spec.kind!r} has unknown option {key!r} (options: {listed})"
            )


def _min_fields(spec: ValidatorSpec, n: int) -> None:
    if len(spec.fields) < n:
        what = "a field" if n == 1 else f"at least {n} fields"
        raise ValueError(f"validator {spec.kind!r} needs {what}")


def _string_list(spec: ValidatorSpec, option: str) -> None:
    value = spec.options.get(option)
    if value is None:
        return
    if (
        not isinstance(value, list | tuple)
        or not value
        or not all(isinstance(v, str) and v for v in value)
    ):
        raise ValueError(
            f"validator {spec.kind!r}: option {option!r} must be a non-empty list of strings"
        )


def _items(spec: ValidatorSpec, params: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """``(path, value)`` for each non-null value of the spec's fields; list items
    get the path ``field.index``."""
    for field in spec.fields:
        value = params.get(field)
        if value is None:
            continue
        if isinstance(value, list | tuple):
            for i, item in enumerate(value):
                yield f"{field}.{i}", item
        else:
            yield field, value


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _present(value: Any) -> bool:
    return value is not None and value != ""


# --------------------------------------------------------------------------- language


def _check_language(spec: ValidatorSpec) -> None:
    _known_options(spec, ["allowed"])
    _min_fields(spec, 1)
    _string_list(spec, "allowed")


@register_validator("language", check=_check_language)
def _language(spec: ValidatorSpec, params: dict[str, Any]) -> list[ParamError]:
    allowed: list[str] = list(spec.options.get("allowed") or DEFAULT_LANGUAGES)
    listed = ", ".join(allowed)
    errors: list[ParamError] = []
    for path, value in _items(spec, params):
        if not isinstance(value, str):
            errors.append(
                ParamError(path, f"must be a language code string, got {_type_name(value)}")
            )
        elif value not in allowed:
            reason = f"{value!r} is not an allowed language code (allowed: {listed})"
            hint = next((a for a in allowed if a.lower() == value.lower()), None)
            if hint is not None:
                reason += f"; did you mean {hint!r}?"
            errors.append(ParamError(path, reason))
    return errors


# --------------------------------------------------------------------------- date

_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _check_date(spec: ValidatorSpec) -> None:
    _known_options(spec, ["max_age_days", "allow_future", "timezone"])
    _min_fields(spec, 1)
    max_age = spec.options.get("max_age_days")
    if max_age is not None and (
        isinstance(max_age, bool) or not isinstance(max_age, int) or max_age < 0
    ):
        raise ValueError("validator 'date': option 'max_age_days' must be an integer >= 0")
    if not isinstance(spec.options.get("allow_future", True), bool):
        raise ValueError("validator 'date': option 'allow_future' must be true or false")
    tz = spec.options.get("timezone")
    if tz is not None:
        try:
            ZoneInfo(tz)
        except (KeyError, ValueError, TypeError, OSError):
            # ZoneInfoNotFoundError is a KeyError; malformed keys raise ValueError.
            raise ValueError(f"validator 'date': unknown timezone {tz!r}") from None


def _parse_date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if not isinstance(value, str):
        raise ValueError(f"must be a date string YYYY-MM-DD, got {_type_name(value)}")
    if not _DATE_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a date in the form YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a valid calendar date") from None


def _today(timezone: str | None) -> dt.date:
    now = clock()
    if timezone:
        return now.astimezone(ZoneInfo(timezone)).date()
    return now.astimezone().date()


@register_validator("date", check=_check_date)
def _date(spec: ValidatorSpec, params: dict[str, Any]) -> list[ParamError]:
    max_age: int | None = spec.options.get("max_age_days")
    allow_future: bool = spec.options.get("allow_future", True)
    errors: list[ParamError] = []
    today: dt.date | None = None
    for path, value in _items(spec, params):
        try:
            day = _parse_date(value)
        except ValueError as exc:
            errors.append(ParamError(path, str(exc)))
            continue
        if max_age is None and allow_future:
            continue
        if today is None:
            today = _today(spec.options.get("timezone"))
        if max_age is not None and day < today - dt.timedelta(days=max_age):
            earliest = today - dt.timedelta(days=max_age)
            errors.append(
                ParamError(
                    path,
                    f"{day.isoformat()} is more than {max_age} days ago "
                    f"(earliest allowed: {earliest.isoformat()})",
                )
            )
        elif not allow_future and day > today:
            errors.append(
                ParamError(path, f"{day.isoformat()} is in the future (today: {today.isoformat()})")
            )
    return errors


# --------------------------------------------------------------------------- required together


def _check_required_together(spec: ValidatorSpec) -> None:
    _known_options(spec, [])
    _min_fields(spec, 2)


@register_validator("required_together", check=_check_required_together)
def _required_together(spec: ValidatorSpec, params: dict[str, Any]) -> list[ParamError]:
    given = [f for f in spec.fields if _present(params.get(f))]
    missing = [f for f in spec.fields if not _present(params.get(f))]
    if not given or not missing:
        return []
    together = ", ".join(spec.fields)
    have = ", ".join(given)
    lack = ", ".join(missing)
    reason = f"required together with {together}: {have} given but {lack} missing"
    return [ParamError(f, reason) for f in missing]


# --------------------------------------------------------------------------- url


def _check_url(spec: ValidatorSpec) -> None:
    _known_options(spec, ["schemes"])
    _min_fields(spec, 1)
    _string_list(spec, "schemes")


def _masked(value: str) -> str:
    """The URL with any password replaced, safe to echo in an error message."""
    try:
        parts = urlsplit(value)
        if parts.password:
            host = parts.netloc.rpartition("@")[2]
            return parts._replace(netloc=f"{parts.username}:***@{host}").geturl()
    except ValueError:
        pass
    return value


@register_validator("url", check=_check_url)
def _url(spec: ValidatorSpec, params: dict[str, Any]) -> list[ParamError]:
    schemes = [s.lower() for s in spec.options.get("schemes") or DEFAULT_URL_SCHEMES]
    listed = ", ".join(schemes)
    errors: list[ParamError] = []
    for path, value in _items(spec, params):
        if not isinstance(value, str):
            errors.append(ParamError(path, f"must be a URL string, got {_type_name(value)}"))
            continue
        shown = repr(_masked(value))
        if any(c.isspace() for c in value):
            errors.append(ParamError(path, f"{shown} is not a valid URL (contains whitespace)"))
            continue
        try:
            parts = urlsplit(value)
            host = parts.hostname
            parts.port  # noqa: B018 - raises ValueError for an invalid port
        except ValueError as exc:
            errors.append(ParamError(path, f"{shown} is not a valid URL ({exc})"))
            continue
        if not parts.scheme or not parts.netloc:
            errors.append(
                ParamError(path, f"{shown} is not an absolute URL (expected e.g. https://host/...)")
            )
        elif parts.scheme.lower() not in schemes:
            errors.append(
                ParamError(path, f"{shown} uses scheme {parts.scheme!r} (allowed: {listed})")
            )
        elif not host:
            errors.append(ParamError(path, f"{shown} has no host"))
    return errors


# --------------------------------------------------------------------------- custom

_REF_RE = re.compile(r"^(?P<module>[^:]+):(?P<qualname>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)$")
_FILE_MODULES: dict[str, ModuleType] = {}


def _check_custom(spec: ValidatorSpec) -> None:
    _known_options(spec, ["ref"])
    ref = spec.options.get("ref")
    if not isinstance(ref, str) or not _REF_RE.match(ref):
        raise ValueError(
            "validator 'custom' needs option 'ref' as 'package.module:function' "
            "or 'path/to/file.py:function'"
        )


def _import_file(path: str) -> ModuleType:
    path = os.path.abspath(path)
    module = _FILE_MODULES.get(path)
    if module is not None:
        return module
    if not os.path.isfile(path):
        raise ImportError(f"no such file: {path}")
    digest = hashlib.sha1(path.encode()).hexdigest()[:8]
    name = f"ferryman_validators_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    _FILE_MODULES[path] = module
    return module


def _load_callable(ref: str) -> Callable[[dict[str, Any]], Any]:
    match = _REF_RE.match(ref)
    if match is None:
        raise ImportError(f"invalid reference {ref!r}")
    target = match["module"]
    obj: Any = _import_file(target) if target.endswith(".py") else importlib.import_module(target)
    for part in match["qualname"].split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImportError(f"{target} has no attribute {match['qualname']!r}") from None
    if not callable(obj):
        raise ImportError(f"{ref} is not callable")
    fn: Callable[[dict[str, Any]], Any] = obj
    return fn


def _normalise(ref: str, result: Any) -> list[ParamError]:
    if result is None:
        return []
    if isinstance(result, str | ParamError):
        result = [result]
    if isinstance(result, dict) or not isinstance(result, Iterable):
        return [
            ParamError("", f"custom validator {ref} returned an unsupported {_type_name(result)}")
        ]
    errors: list[ParamError] = []
    for item in result:
        if isinstance(item, ParamError):
            errors.append(item)
        elif isinstance(item, str):
            errors.append(ParamError("", item))
        elif (
            isinstance(item, tuple | list)
            and len(item) == 2
            and all(isinstance(x, str) for x in item)
        ):
            errors.append(ParamError(item[0], item[1]))
        else:
            errors.append(
                ParamError("", f"custom validator {ref} returned an unsupported item {item!r}")
            )
    return errors


@register_validator("custom", check=_check_custom, all_fields=True)
def _custom(spec: ValidatorSpec, params: dict[str, Any]) -> list[ParamError]:
    ref: str = spec.options["ref"]
    try:
        fn = _load_callable(ref)
    except Exception as exc:
        return [ParamError("", f"cannot load custom validator {ref}: {type(exc).__name__}: {exc}")]
    try:
        result = fn(params)
    except ValueError as exc:
        return [ParamError("", str(exc))]
    return _normalise(ref, result)


# --------------------------------------------------------------------------- DSL helpers
# The markers live in ``domain.markers`` (stdlib only) so that a pipeline file
# using them does not pull pydantic into every step's process.


def required_together(*fields: str) -> ValidatorSpec:
    """A rule: the named parameters are all given or all left out.

    Use as ``@pipeline(validators=[required_together("start", "end")])``.
    """
    spec = ValidatorSpec(kind="required_together", fields=list(fields))
    check_validator_spec(spec)
    return spec


def custom(ref: str, fields: Iterable[str] = ()) -> ValidatorSpec:
    """A pipeline-specific validator: ``ref`` is ``package.module:function`` or
    ``/path/to/file.py:function``.

    The function gets the parameters dict and returns ``None`` or the problems
    (strings, ``(path, reason)`` pairs or ``ParamError``s). ``fields`` names
    the parameters it reads, so that it is skipped when one has a type error.
    """
    spec = ValidatorSpec(
        kind="custom", fields=list(tuple_of_str("fields", fields)), options={"ref": ref}
    )
    check_validator_spec(spec)
    return spec
