"""Secret names are refused when a pipeline is compiled: ``FERRYMAN_*`` (ferryman's
own) and names that are no variable names, in the Python DSL and in YAML."""

from __future__ import annotations

import pytest

from ferryman import step
from ferryman.domain.secret_names import check_secret_name, secret_name_problem
from ferryman.dsl.errors import DSLError
from ferryman.dsl.yaml_loader import PipelineFileError, spec_from_mapping


@pytest.mark.parametrize("name", ["CAST_API_KEY", "_x", "a1", "K" * 128])
def test_good_names(name: str) -> None:
    assert secret_name_problem(name) is None and check_secret_name(name) == name


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("FERRYMAN_SECRET_KEY", "reserved"),
        ("ferryman_jwt_secret", "reserved"),
        ("bad-name", "invalid secret name"),
        ("../x", "invalid secret name"),
        ("1ABC", "invalid secret name"),
        ("", "invalid secret name"),
        ("K" * 129, "invalid secret name"),
    ],
)
def test_bad_names(name: str, says: str) -> None:
    problem = secret_name_problem(name)
    assert problem is not None and says in problem
    with pytest.raises(ValueError, match=says):
        check_secret_name(name)


def test_python_dsl_refuses_at_declaration() -> None:
    with pytest.raises(DSLError, match=r"'FERRYMAN_SECRET_KEY' is reserved"):
        step(secrets=["OK", "FERRYMAN_SECRET_KEY"])
    with pytest.raises(DSLError, match="a list of names"):
        step(secrets="API_KEY")


def test_yaml_refuses_every_bad_name_with_its_path() -> None:
    doc = {
        "name": "bot",
        "steps": [
            {"name": "a", "kind": "container", "image": "alpine",
             "secrets": ["OK", "FERRYMAN_DATABASE_URL", "bad-name"]},
        ],
    }  # fmt: skip
    with pytest.raises(PipelineFileError) as info:
        spec_from_mapping(doc, source="bot.yaml")
    text = str(info.value)
    assert "steps[0].secrets[1]: secret name 'FERRYMAN_DATABASE_URL' is reserved" in text
    assert "steps[0].secrets[2]: invalid secret name 'bad-name'" in text
