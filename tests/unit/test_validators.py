"""The reusable parameter validators (``ferryman.domain.validators``)."""

from __future__ import annotations

import datetime as dt
import sys
import textwrap
import typing
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ferryman.domain import validators as v
from ferryman.domain.params import ParamError, ParamsInvalid, validate_params
from ferryman.domain.spec import FunctionRef, ParamSpec, PipelineSpec, PythonStep, ValidatorSpec


def run(kind: str, fields: list[str], params: dict[str, Any], **options: Any) -> list[ParamError]:
    return v.run_validators([ValidatorSpec(kind=kind, fields=fields, options=options)], params)


def paths(errors: list[ParamError]) -> list[str]:
    return [e.path for e in errors]


@pytest.fixture
def frozen_now(monkeypatch: pytest.MonkeyPatch) -> dt.datetime:
    """Fix the validators' clock at 2024-05-10 12:00 UTC."""
    now = dt.datetime(2024, 5, 10, 12, 0, tzinfo=dt.UTC)
    monkeypatch.setattr(v, "clock", lambda: now)
    return now


# --------------------------------------------------------------------------- language


class TestLanguage:
    def test_default_list(self) -> None:
        assert v.DEFAULT_LANGUAGES == ("en-US", "en", "hi", "ta", "te", "ma", "gu", "mr")
        for code in v.DEFAULT_LANGUAGES:
            assert run("language", ["lang"], {"lang": code}) == []

    def test_rejects_unknown_code_and_lists_allowed(self) -> None:
        (err,) = run("language", ["lang"], {"lang": "fr"})
        assert err.path == "lang"
        assert err.reason == (
            "'fr' is not an allowed language code (allowed: en-US, en, hi, ta, te, ma, gu, mr)"
        )

    def test_case_sensitive_with_hint(self) -> None:
        (err,) = run("language", ["lang"], {"lang": "en-us"})
        assert "did you mean 'en-US'?" in err.reason

    def test_list_items_have_index_paths(self) -> None:
        errors = run("language", ["langs"], {"langs": ["en", "fr", "hi", "de"]})
        assert paths(errors) == ["langs.1", "langs.3"]

    def test_custom_allowed_list(self) -> None:
        assert run("language", ["lang"], {"lang": "fr"}, allowed=["fr", "de"]) == []
        (err,) = run("language", ["lang"], {"lang": "en"}, allowed=["fr", "de"])
        assert "(allowed: fr, de)" in err.reason

    def test_null_and_missing_are_ignored(self) -> None:
        assert run("language", ["lang", "other"], {"lang": None}) == []

    def test_non_string(self) -> None:
        (err,) = run("language", ["lang"], {"lang": 5})
        assert err == ParamError("lang", "must be a language code string, got int")

    def test_several_fields(self) -> None:
        errors = run("language", ["a", "b"], {"a": "xx", "b": "yy"})
        assert paths(errors) == ["a", "b"]


# --------------------------------------------------------------------------- date


class TestDate:
    def test_valid_strings_and_dates(self) -> None:
        assert run("date", ["d"], {"d": "2024-02-29"}) == []
        assert run("date", ["d"], {"d": dt.date(2024, 1, 1)}) == []
        assert run("date", ["d"], {"d": dt.datetime(2024, 1, 1, 5)}) == []

    @pytest.mark.parametrize(
        ("value", "reason"),
        [
            ("2024-1-01", "'2024-1-01' is not a date in the form YYYY-MM-DD"),
            ("01/02/2024", "'01/02/2024' is not a date in the form YYYY-MM-DD"),
            ("2024-01-01T00:00", "'2024-01-01T00:00' is not a date in the form YYYY-MM-DD"),
            ("2023-02-29", "'2023-02-29' is not a valid calendar date"),
            ("2024-13-01", "'2024-13-01' is not a valid calendar date"),
            (20240101, "must be a date string YYYY-MM-DD, got int"),
        ],
    )
    def test_invalid(self, value: Any, reason: str) -> None:
        assert run("date", ["d"], {"d": value}) == [ParamError("d", reason)]

    def test_max_age_days(self, frozen_now: dt.datetime) -> None:
        assert run("date", ["d"], {"d": "2024-05-03"}, max_age_days=7) == []  # boundary
        assert run("date", ["d"], {"d": "2024-05-10"}, max_age_days=0) == []
        (err,) = run("date", ["d"], {"d": "2024-05-02"}, max_age_days=7)
        assert err == ParamError(
            "d", "2024-05-02 is more than 7 days ago (earliest allowed: 2024-05-03)"
        )

    def test_future_allowed_by_default(self, frozen_now: dt.datetime) -> None:
        assert run("date", ["d"], {"d": "2030-01-01"}) == []
        assert run("date", ["d"], {"d": "2030-01-01"}, max_age_days=7) == []

    def test_allow_future_false(self, frozen_now: dt.datetime) -> None:
        assert run("date", ["d"], {"d": "2024-05-10"}, allow_future=False) == []
        (err,) = run("date", ["d"], {"d": "2024-05-11"}, allow_future=False)
        assert err == ParamError("d", "2024-05-11 is in the future (today: 2024-05-10)")

    def test_timezone_decides_today(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # 20:00 UTC on 10 May is already 11 May in Kolkata (UTC+5:30).
        now = dt.datetime(2024, 5, 10, 20, 0, tzinfo=dt.UTC)
        monkeypatch.setattr(v, "clock", lambda: now)
        opts = {"allow_future": False, "timezone": "Asia/Kolkata"}
        assert run("date", ["d"], {"d": "2024-05-11"}, **opts) == []
        opts["timezone"] = "UTC"
        assert paths(run("date", ["d"], {"d": "2024-05-11"}, **opts)) == ["d"]

    def test_list_items(self, frozen_now: dt.datetime) -> None:
        errors = run(
            "date", ["days"], {"days": ["2024-05-09", "bad", "2020-01-01"]}, max_age_days=3
        )
        assert paths(errors) == ["days.1", "days.2"]

    def test_null_ignored(self) -> None:
        assert run("date", ["d"], {"d": None}, max_age_days=1) == []


# --------------------------------------------------------------------------- required together


class TestRequiredTogether:
    def test_all_or_none(self) -> None:
        assert run("required_together", ["a", "b"], {"a": 1, "b": 2}) == []
        assert run("required_together", ["a", "b"], {}) == []
        assert run("required_together", ["a", "b"], {"a": None, "b": ""}) == []

    def test_reports_each_missing_field(self) -> None:
        errors = run("required_together", ["a", "b", "c"], {"a": 1, "b": None, "c": ""})
        assert paths(errors) == ["b", "c"]
        assert errors[0].reason == "required together with a, b, c: a given but b, c missing"

    def test_falsy_values_other_than_empty_string_count(self) -> None:
        assert run("required_together", ["a", "b"], {"a": 0, "b": False}) == []

    def test_skipped_fields_are_neither_present_nor_missing(self) -> None:
        spec = v.required_together("a", "b", "c")
        # "a" had a type error: only b/c are compared, and b is given without c.
        errors = v.run_validators([spec], {"a": 1, "b": 2}, skip={"a"})
        assert paths(errors) == ["c"]
        assert v.run_validators([spec], {"b": 2, "c": 3}, skip={"a"}) == []


# --------------------------------------------------------------------------- url


class TestUrl:
    def test_valid(self) -> None:
        for value in ("http://example.com", "https://a.b:8443/x?y=1#z", "https://[::1]/"):
            assert run("url", ["u"], {"u": value}) == [], value

    @pytest.mark.parametrize(
        ("value", "reason"),
        [
            (
                "ftp://example.com/x",
                "'ftp://example.com/x' uses scheme 'ftp' (allowed: http, https)",
            ),
            (
                "example.com",
                "'example.com' is not an absolute URL (expected e.g. https://host/...)",
            ),
            ("https://", "'https://' is not an absolute URL (expected e.g. https://host/...)"),
            ("https://:80/x", "'https://:80/x' has no host"),
            ("https://a b.com", "'https://a b.com' is not a valid URL (contains whitespace)"),
            (42, "must be a URL string, got int"),
        ],
    )
    def test_invalid(self, value: Any, reason: str) -> None:
        assert run("url", ["u"], {"u": value}) == [ParamError("u", reason)]

    def test_invalid_port(self) -> None:
        (err,) = run("url", ["u"], {"u": "http://example.com:99999/"})
        assert err.reason.startswith("'http://example.com:99999/' is not a valid URL (")

    def test_password_is_masked(self) -> None:
        (err,) = run("url", ["u"], {"u": "ftp://me:s3cret@host/x"})
        assert "s3cret" not in err.reason
        assert "ftp://me:***@host/x" in err.reason

    def test_custom_schemes_are_case_insensitive(self) -> None:
        assert run("url", ["u"], {"u": "S3://bucket/key"}, schemes=["s3"]) == []
        assert paths(run("url", ["u"], {"u": "https://x"}, schemes=["s3"])) == ["u"]

    def test_list(self) -> None:
        errors = run("url", ["u"], {"u": ["https://ok", "nope", None]})
        assert paths(errors) == ["u.1", "u.2"]

    def test_null_ignored(self) -> None:
        assert run("url", ["u"], {"u": None}) == []


# --------------------------------------------------------------------------- custom


@pytest.fixture
def custom_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An importable module of custom validators; yields its name."""
    name = f"custom_checks_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            from ferryman.domain.params import ParamError

            def ok(params):
                return None

            def strings(params):
                return ["first problem", "second problem"]

            def pairs(params):
                if params.get("low", 0) > params.get("high", 0):
                    return [("low", "must not be above high")]
                return []

            def errors(params):
                return [ParamError("x", "bad x")]

            def single(params):
                return "one reason"

            def raises_value(params):
                raise ValueError("nope")

            def crashes(params):
                raise RuntimeError("boom")

            def weird(params):
                return {"not": "a list"}

            def weird_item(params):
                return [42]

            class Rules:
                @staticmethod
                def nested(params):
                    return ["nested"]

            NOT_CALLABLE = 3
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


class TestCustom:
    def test_return_forms(self, custom_module: str) -> None:
        def check(fn: str, params: dict[str, Any] | None = None) -> list[ParamError]:
            return v.run_validators([v.custom(f"{custom_module}:{fn}")], params or {})

        assert check("ok") == []
        assert check("strings") == [
            ParamError("", "first problem"),
            ParamError("", "second problem"),
        ]
        assert check("pairs", {"low": 5, "high": 1}) == [
            ParamError("low", "must not be above high")
        ]
        assert check("pairs", {"low": 1, "high": 5}) == []
        assert check("errors") == [ParamError("x", "bad x")]
        assert check("single") == [ParamError("", "one reason")]
        assert check("raises_value") == [ParamError("", "nope")]
        assert check("Rules.nested") == [ParamError("", "nested")]

    def test_bad_functions_become_errors(self, custom_module: str) -> None:
        def reason(fn: str) -> str:
            (err,) = v.run_validators([v.custom(f"{custom_module}:{fn}")], {})
            assert err.path == ""
            return err.reason

        assert reason("crashes") == "validator 'custom' failed: RuntimeError: boom"
        assert "returned an unsupported dict" in reason("weird")
        assert "returned an unsupported item 42" in reason("weird_item")
        assert reason("missing").startswith(f"cannot load custom validator {custom_module}:missing")
        assert "is not callable" in reason("NOT_CALLABLE")

    def test_import_error(self) -> None:
        (err,) = v.run_validators([v.custom("no_such_module_xyz:check")], {})
        assert err.reason.startswith(
            "cannot load custom validator no_such_module_xyz:check: ModuleNotFoundError"
        )

    def test_file_reference(self, tmp_path: Path) -> None:
        file = tmp_path / "rules.py"
        file.write_text(
            "def check(params):\n"
            "    return [('a', 'a must be even')] if params['a'] % 2 else None\n"
        )
        spec = v.custom(f"{file}:check", fields=["a"])
        assert v.run_validators([spec], {"a": 3}) == [ParamError("a", "a must be even")]
        assert v.run_validators([spec], {"a": 4}) == []
        (err,) = v.run_validators([v.custom(f"{tmp_path}/missing.py:check")], {})
        assert "no such file" in err.reason

    def test_skipped_when_a_field_has_a_type_error(self, custom_module: str) -> None:
        spec = v.custom(f"{custom_module}:strings", fields=["a", "b"])
        assert v.run_validators([spec], {"b": 1}, skip={"a"}) == []
        assert len(v.run_validators([spec], {"a": 1, "b": 1})) == 2

    def test_gets_params_without_skipped_fields(self, custom_module: str) -> None:
        spec = v.custom(f"{custom_module}:pairs")
        assert v.run_validators([spec], {"low": 9, "high": 1}, skip={"low"}) == []


# --------------------------------------------------------------------------- registry and checks


@pytest.fixture
def scratch_kind() -> Iterator[str]:
    kind = f"test_kind_{uuid.uuid4().hex[:6]}"
    yield kind
    v._REGISTRY.pop(kind, None)


class TestRegistry:
    def test_register_and_run(self, scratch_kind: str) -> None:
        @v.register_validator(scratch_kind)
        def positive(spec: ValidatorSpec, params: dict[str, Any]) -> list[ParamError]:
            return [ParamError(f, "must be > 0") for f in spec.fields if params.get(f, 1) <= 0]

        assert scratch_kind in v.validator_kinds()
        spec = ValidatorSpec(kind=scratch_kind, fields=["a", "b"])
        assert v.run_validators([spec], {"a": 0, "b": -1}) == [
            ParamError("a", "must be > 0"),
            ParamError("b", "must be > 0"),
        ]
        # Fields with a type error are removed from the spec before the call.
        assert v.run_validators([spec], {"b": -1}, skip={"a"}) == [ParamError("b", "must be > 0")]

    def test_duplicate_registration(self, scratch_kind: str) -> None:
        def f(spec: ValidatorSpec, params: dict[str, Any]) -> list[ParamError]:
            return []

        v.register_validator(scratch_kind)(f)
        with pytest.raises(ValueError, match="already registered"):
            v.register_validator(scratch_kind)(f)
        v.register_validator(scratch_kind, replace=True)(f)
        with pytest.raises(ValueError, match="already registered"):
            v.register_validator("language")(f)

    def test_options_check_hook(self, scratch_kind: str) -> None:
        def check(spec: ValidatorSpec) -> None:
            if "limit" not in spec.options:
                raise ValueError("needs a limit")

        v.register_validator(scratch_kind, check=check)(lambda spec, params: [])
        with pytest.raises(ValueError, match="needs a limit"):
            v.check_validator_spec(ValidatorSpec(kind=scratch_kind))
        v.check_validator_spec(ValidatorSpec(kind=scratch_kind, options={"limit": 1}))

    def test_crashing_validator_is_reported(self, scratch_kind: str) -> None:
        @v.register_validator(scratch_kind)
        def broken(spec: ValidatorSpec, params: dict[str, Any]) -> list[ParamError]:
            raise KeyError("x")

        (err,) = v.run_validators([ValidatorSpec(kind=scratch_kind)], {})
        assert err == ParamError("", f"validator {scratch_kind!r} failed: KeyError: 'x'")

    def test_unknown_kind(self) -> None:
        spec = ValidatorSpec(kind="colour", fields=["c"])
        with pytest.raises(ValueError, match=r"unknown validator kind 'colour' \(known: custom, "):
            v.check_validator_spec(spec)
        (err,) = v.run_validators([spec], {"c": 1})
        assert err.path == ""
        assert err.reason.startswith("invalid validator 'colour': unknown validator kind 'colour'")

    def test_validators_all_run(self) -> None:
        specs = [
            v.language_code().to_spec("lang"),
            ValidatorSpec(kind="nope"),
            v.url().to_spec("u"),
        ]
        errors = v.run_validators(specs, {"lang": "fr", "u": "x"})
        assert paths(errors) == ["lang", "", "u"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (ValidatorSpec(kind="language"), "needs a field"),
        (ValidatorSpec(kind="language", fields=["a", "a"]), "names a field twice"),
        (ValidatorSpec(kind="language", fields=["a"], options={"allowed": "en"}), "non-empty list"),
        (ValidatorSpec(kind="language", fields=["a"], options={"allowed": []}), "non-empty list"),
        (
            ValidatorSpec(kind="language", fields=["a"], options={"alowed": ["en"]}),
            "unknown option",
        ),
        (ValidatorSpec(kind="date", fields=["a"], options={"max_age_days": -1}), "integer >= 0"),
        (ValidatorSpec(kind="date", fields=["a"], options={"max_age_days": True}), "integer >= 0"),
        (ValidatorSpec(kind="date", fields=["a"], options={"max_age_days": 1.5}), "integer >= 0"),
        (ValidatorSpec(kind="date", fields=["a"], options={"allow_future": "no"}), "true or false"),
        (ValidatorSpec(kind="date", fields=["a"], options={"timezone": "Mars/Base"}), "timezone"),
        (ValidatorSpec(kind="date", fields=["a"], options={"timezone": "../x"}), "timezone"),
        (ValidatorSpec(kind="required_together", fields=["a"]), "at least 2 fields"),
        (ValidatorSpec(kind="required_together", fields=["a", "b"], options={"x": 1}), "unknown"),
        (ValidatorSpec(kind="url", fields=["a"], options={"schemes": [1]}), "list of strings"),
        (ValidatorSpec(kind="custom", options={}), "needs option 'ref'"),
        (ValidatorSpec(kind="custom", options={"ref": "nocolon"}), "needs option 'ref'"),
        (ValidatorSpec(kind="custom", options={"ref": "m:1bad"}), "needs option 'ref'"),
    ],
)
def test_check_validator_spec_rejects(spec: ValidatorSpec, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        v.check_validator_spec(spec)


# --------------------------------------------------------------------------- DSL helpers


class TestHelpers:
    def test_language_code(self) -> None:
        marker = v.language_code()
        assert isinstance(marker, v.FieldValidator)
        assert marker.to_spec("lang") == ValidatorSpec(kind="language", fields=["lang"])
        assert v.language_code(v.DEFAULT_LANGUAGES).to_spec("x").options == {}
        assert v.language_code(["en", "fr"]).to_spec("x").options == {"allowed": ["en", "fr"]}
        with pytest.raises(TypeError, match="not a single string"):
            v.language_code("en")
        with pytest.raises(ValueError, match="non-empty list"):
            v.language_code([])

    def test_date_string(self) -> None:
        assert v.date_string().to_spec("d") == ValidatorSpec(kind="date", fields=["d"])
        spec = v.date_string(7, allow_future=False, timezone="UTC").to_spec("d")
        assert spec.options == {"max_age_days": 7, "allow_future": False, "timezone": "UTC"}
        with pytest.raises(ValueError, match="integer >= 0"):
            v.date_string(-1)

    def test_url(self) -> None:
        assert v.url().to_spec("u") == ValidatorSpec(kind="url", fields=["u"])
        assert v.url(["HTTP", "https"]).to_spec("u").options == {}
        assert v.url(["s3"]).to_spec("u").options == {"schemes": ["s3"]}
        with pytest.raises(ValueError, match="non-empty list"):
            v.url([])

    def test_required_together_and_custom(self) -> None:
        assert v.required_together("a", "b") == ValidatorSpec(
            kind="required_together", fields=["a", "b"]
        )
        with pytest.raises(ValueError, match="at least 2 fields"):
            v.required_together("a")
        assert v.custom("pkg.mod:check", fields=["a"]) == ValidatorSpec(
            kind="custom", fields=["a"], options={"ref": "pkg.mod:check"}
        )
        with pytest.raises(ValueError, match="'ref'"):
            v.custom("not a ref")

    def test_usable_in_annotated(self) -> None:
        hint = typing.Annotated[str, v.language_code()]
        (marker,) = typing.get_args(hint)[1:]
        assert isinstance(marker, v.FieldValidator)
        assert marker.to_spec("lang").kind == "language"

    def test_markers_are_hashable_and_comparable(self) -> None:
        assert v.language_code(["en"]) == v.language_code(["en"])
        assert len({v.url(), v.url(), v.date_string(3)}) == 2

    def test_exported_from_package(self) -> None:
        import ferryman

        assert ferryman.language_code is v.language_code
        assert ferryman.date_string is v.date_string
        assert ferryman.url is v.url
        assert ferryman.required_together is v.required_together


# ------------------------------------------------------------------ through validate_params


def _pipeline() -> PipelineSpec:
    return PipelineSpec(
        name="p",
        params=[
            ParamSpec(name="limit", type="integer"),
            ParamSpec(name="lang", type="string", required=False, default="en"),
            ParamSpec(name="langs", type="array", items="string", required=False, nullable=True),
            ParamSpec(name="day", type="date", required=False, nullable=True),
            ParamSpec(name="start", type="string", required=False, nullable=True),
            ParamSpec(name="end", type="string", required=False, nullable=True),
            ParamSpec(name="callback", type="string", required=False, nullable=True),
        ],
        validators=[
            v.language_code().to_spec("lang"),
            v.language_code().to_spec("langs"),
            v.date_string(7).to_spec("day"),
            v.required_together("start", "end"),
            v.url().to_spec("callback"),
        ],
        steps=[PythonStep(name="a", function=FunctionRef(module="m", qualname="f"))],
    )


def _errors(raw: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ParamsInvalid) as info:
        validate_params(_pipeline(), raw)
    return [(e.path, e.reason) for e in info.value.errors]


class TestThroughValidateParams:
    def test_valid(self, frozen_now: dt.datetime) -> None:
        out = validate_params(
            _pipeline(),
            {"limit": 3, "langs": ["hi", "ta"], "day": "2024-05-09", "start": "a", "end": "b"},
        )
        assert out["lang"] == "en"
        assert out["day"] == "2024-05-09"

    def test_type_and_validator_errors_together(self, frozen_now: dt.datetime) -> None:
        errors = _errors(
            {
                "limit": "many",
                "lang": "fr",
                "langs": ["en", "xx"],
                "day": "2024-01-01",
                "start": "2024",
                "callback": "ftp://host",
            }
        )
        assert [p for p, _ in errors] == ["limit", "lang", "langs.1", "day", "end", "callback"]
        reasons = dict(errors)
        assert "valid integer" in reasons["limit"]
        assert "'fr' is not an allowed language code" in reasons["lang"]
        assert "more than 7 days ago" in reasons["day"]
        assert "start given but end missing" in reasons["end"]

    def test_type_error_is_not_reported_twice(self) -> None:
        errors = _errors({"limit": 1, "lang": 5, "langs": "en", "day": "31/12/2024"})
        assert [p for p, _ in errors] == ["lang", "langs", "day"]
        # Each reason comes from the type check, not from the validators.
        assert all("allowed" not in r for _, r in errors)

    def test_missing_required_and_rule(self) -> None:
        errors = _errors({"end": "x"})
        assert errors[0] == ("limit", "Field required")
        assert ("start", "required together with start, end: end given but start missing") in errors
