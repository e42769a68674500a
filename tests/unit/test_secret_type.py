"""``Secret`` never shows its value; ``ferryman.secret`` reads a declared one."""

from __future__ import annotations

import logging
import pickle

import pytest

import ferryman
from ferryman import Secret

VALUE = "cast-api-key-0123456789"


def test_repr_str_format_and_logging_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    s = Secret("CAST_API_KEY", VALUE)
    shown = [repr(s), str(s), f"{s}", f"{s:>20}", "%s" % s, str([s]), str({"k": s})]  # noqa: UP031
    assert all(VALUE not in text for text in shown)
    assert repr(s) == "Secret('CAST_API_KEY', '********')"
    with caplog.at_level(logging.INFO):
        logging.getLogger("t").info("key %s %r", s, s)
    assert VALUE not in caplog.text
    assert s.reveal() == VALUE and s.get_secret_value() == VALUE and s.name == "CAST_API_KEY"


def test_equality_hash_and_no_pickling() -> None:
    assert Secret("A", VALUE) == Secret("A", VALUE)
    assert Secret("A", VALUE) != Secret("A", VALUE + "x")
    assert Secret("A", VALUE) != Secret("B", VALUE)
    assert len({Secret("A", VALUE), Secret("A", VALUE)}) == 1
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(Secret("A", VALUE))
    with pytest.raises(TypeError):
        Secret("A", 42)  # type: ignore[arg-type]


def test_secret_reads_the_step_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAST_API_KEY", VALUE)
    got = ferryman.secret("CAST_API_KEY")
    assert isinstance(got, Secret) and got.reveal() == VALUE
    monkeypatch.delenv("CAST_API_KEY")
    with pytest.raises(LookupError, match=r"declare it with @step\(secrets=\['CAST_API_KEY'\]\)"):
        ferryman.secret("CAST_API_KEY")
    monkeypatch.setenv("FERRYMAN_SECRET_KEY", "x")
    with pytest.raises(LookupError, match="ferryman's own"):
        ferryman.secret("FERRYMAN_SECRET_KEY")
