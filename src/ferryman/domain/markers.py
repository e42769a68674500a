"""Validator markers for ``Annotated[...]`` parameter hints (stdlib only).

``lang: Annotated[str, language_code()]`` attaches the ``language`` validator
to a parameter. The markers are importable without pydantic, so a pipeline
file that uses them stays cheap to import inside a step's process; their
``to_spec`` builds the stored ``ValidatorSpec`` when the pipeline compiles.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ferryman.domain.spec import ValidatorSpec

DEFAULT_LANGUAGES: tuple[str, ...] = ("en-US", "en", "hi", "ta", "te", "ma", "gu", "mr")
DEFAULT_URL_SCHEMES: tuple[str, ...] = ("http", "https")


def _string_list(kind: str, option: str, value: Any) -> None:
    if value is None:
        return
    if (
        not isinstance(value, list | tuple)
        or not value
        or not all(isinstance(v, str) and v for v in value)
    ):
        raise ValueError(
            f"validator {kind!r}: option {option!r} must be a non-empty list of strings"
        )


def _check_options(kind: str, options: dict[str, Any]) -> None:
    """The cheap, stdlib-only part of ``validators.check_validator_spec``."""
    if kind == "language":
        _string_list(kind, "allowed", options.get("allowed"))
    elif kind == "url":
        _string_list(kind, "schemes", options.get("schemes"))
    elif kind == "date":
        max_age = options.get("max_age_days")
        if max_age is not None and (
            isinstance(max_age, bool) or not isinstance(max_age, int) or max_age < 0
        ):
            raise ValueError("validator 'date': option 'max_age_days' must be an integer >= 0")
        if not isinstance(options.get("allow_future", True), bool):
            raise ValueError("validator 'date': option 'allow_future' must be true or false")
        tz = options.get("timezone")
        if tz is not None:
            from zoneinfo import ZoneInfo

            try:
                ZoneInfo(tz)
            except (KeyError, ValueError, TypeError, OSError):
                raise ValueError(f"validator 'date': unknown timezone {tz!r}") from None


@dataclass(frozen=True)
class FieldValidator:
    """Base of the markers used in ``Annotated[type, marker]`` parameter hints.

    ``to_spec(field)`` turns the marker into the ``ValidatorSpec`` stored with
    the pipeline. Options are checked when the marker is created.
    """

    kind: ClassVar[str] = ""

    def options(self) -> dict[str, Any]:
        """The spec options of this marker (defaults left out)."""
        return {}

    def to_spec(self, field: str) -> ValidatorSpec:
        """The validator spec applying this marker to parameter ``field``."""
        from ferryman.domain.spec import ValidatorSpec

        return ValidatorSpec(kind=self.kind, fields=[field], options=self.options())

    def __post_init__(self) -> None:
        _check_options(self.kind, self.options())


@dataclass(frozen=True)
class LanguageCode(FieldValidator):
    """Marker for the ``language`` validator (see ``language_code``)."""

    kind: ClassVar[str] = "language"
    allowed: tuple[str, ...] | None = None

    def options(self) -> dict[str, Any]:
        return {} if self.allowed is None else {"allowed": list(self.allowed)}


@dataclass(frozen=True)
class DateString(FieldValidator):
    """Marker for the ``date`` validator (see ``date_string``)."""

    kind: ClassVar[str] = "date"
    max_age_days: int | None = None
    allow_future: bool = True
    timezone: str | None = None

    def options(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.max_age_days is not None:
            out["max_age_days"] = self.max_age_days
        if not self.allow_future:
            out["allow_future"] = False
        if self.timezone is not None:
            out["timezone"] = self.timezone
        return out


@dataclass(frozen=True)
class Url(FieldValidator):
    """Marker for the ``url`` validator (see ``url``)."""

    kind: ClassVar[str] = "url"
    schemes: tuple[str, ...] | None = None

    def options(self) -> dict[str, Any]:
        return {} if self.schemes is None else {"schemes": list(self.schemes)}


def tuple_of_str(name: str, values: Iterable[str]) -> tuple[str, ...]:
    """``values`` as a tuple; a lone string (a common slip for a list) is a ``TypeError``."""
    if isinstance(values, str):
        raise TypeError(f"{name} must be a list of strings, not a single string")
    return tuple(values)


def language_code(allowed: Iterable[str] | None = None) -> LanguageCode:
    """Values must be language codes from ``allowed`` (default ``DEFAULT_LANGUAGES``).

    Use as ``lang: Annotated[str, language_code()]``; lists of codes are
    checked item by item.
    """
    if allowed is None:
        return LanguageCode()
    codes = tuple_of_str("allowed", allowed)
    return LanguageCode(None if codes == DEFAULT_LANGUAGES else codes)


def date_string(
    max_age_days: int | None = None,
    *,
    allow_future: bool = True,
    timezone: str | None = None,
) -> DateString:
    """Values must be ``YYYY-MM-DD`` dates, optionally within the last ``max_age_days``.

    ``allow_future=False`` also rejects dates after today; "today" is taken in
    ``timezone`` (IANA name) or the server's local time.
    """
    return DateString(max_age_days, allow_future, timezone)


def url(schemes: Iterable[str] = DEFAULT_URL_SCHEMES) -> Url:
    """Values must be absolute URLs with a host and one of ``schemes``."""
    chosen = tuple(s.lower() for s in tuple_of_str("schemes", schemes))
    return Url(None if chosen == DEFAULT_URL_SCHEMES else chosen)
