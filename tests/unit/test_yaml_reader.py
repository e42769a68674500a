"""The one bounded YAML reader (``ferryman.yaml_reader``), and every reader of
YAML ferryman did not write going through it: the subscriptions file, a
``--params-file`` and a Kubernetes customizations file refuse a billion
laughs at once with a clear error, as pipeline files do."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from tests.cli_support import cli_environment, ferryman

from ferryman.infra.kubernetes.config import load_customizations
from ferryman.infra.kubernetes.manifest import ManifestError
from ferryman.services.subscriptions_file import FileError, read_file
from ferryman.yaml_reader import YamlError, parse_yaml


def bomb(levels: int = 9, top: str = "subscriptions") -> str:
    """A billion-laughs document: 9 levels of 9 aliases, about 4·10⁸ nodes."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    prev = "a"
    for name in "bcdefghijk"[: levels - 1]:
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
        prev = name
    lines.append(f"{top}: *{prev}")
    return "\n".join(lines) + "\n"


def test_parse_yaml_refuses_bombs_loops_and_duplicates() -> None:
    started = time.monotonic()
    with pytest.raises(YamlError, match=r"^refused: the document expands to more than 1000000"):
        parse_yaml(bomb())
    assert time.monotonic() - started < 10  # refused before anything is built
    with pytest.raises(YamlError, match="more than 50 nodes"):
        parse_yaml(bomb(levels=2), max_nodes=50)
    assert parse_yaml(bomb(levels=2), max_nodes=200)["subscriptions"][0][0] == "lol"
    with pytest.raises(YamlError, match=r"^invalid YAML at line 2, column 1: found duplicate key"):
        parse_yaml("a: 1\na: 2\n")
    with pytest.raises(YamlError, match=r"^invalid YAML at line 1, column 5: mapping values"):
        parse_yaml("a: b: c\n")
    with pytest.raises(YamlError, match="refers to a node that contains it"):
        parse_yaml("a: &a [1, *a]\n")
    with pytest.raises(YamlError, match="could not determine a constructor"):
        parse_yaml("!!python/object/apply:os.system ['true']\n")
    assert parse_yaml("") is None
    assert parse_yaml("- {name: x, url: 'http://a'}\n") == [{"name": "x", "url": "http://a"}]


def test_the_subscriptions_file_refuses_a_billion_laughs_at_once(tmp_path: Path) -> None:
    path = tmp_path / "subscriptions.yaml"
    path.write_text(bomb())
    started = time.monotonic()
    with pytest.raises(FileError) as info:
        read_file(path)
    assert time.monotonic() - started < 10
    assert str(info.value) == (
        f"{path}: refused: the document expands to more than 1000000 nodes (through its aliases)"
    )
    path.write_text("- name: a\n  url: http://127.0.0.1:9/x\n  name: b\n")
    with pytest.raises(FileError, match=r"invalid YAML at line 3, column 3: found duplicate key"):
        read_file(path)
    path.write_text("- name: a\n  url: http://127.0.0.1:9/x\n")
    assert [s.name for s in read_file(path)] == ["a"]
    broken = tmp_path / "subscriptions.json"
    broken.write_text("[{")
    with pytest.raises(FileError, match=r"subscriptions.json: not valid JSON: "):
        read_file(broken)


def test_a_kubernetes_customizations_file_refuses_a_billion_laughs(tmp_path: Path) -> None:
    path = tmp_path / "patch.yaml"
    path.write_text(bomb())
    with pytest.raises(ManifestError, match="refused: the document expands to more than"):
        load_customizations(str(path))


def test_a_params_file_bomb_is_a_user_error(tmp_path: Path) -> None:
    pf = tmp_path / "params.yaml"
    pf.write_text(bomb())
    env = cli_environment(tmp_path / "home")
    started = time.monotonic()
    r = ferryman(env, "run", "examples/etl.py:etl", "--params-file", str(pf))
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"{pf}: not valid YAML: refused: the document expands to more than" in r.stderr
    assert "Traceback" not in r.stderr
    assert time.monotonic() - started < 60
