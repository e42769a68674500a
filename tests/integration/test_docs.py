"""Keep the documentation honest.

- the example in ``docs/getting-started.md`` is ``examples/etl.py`` byte for byte;
- every ``$ ferryman ...`` line of its ``console`` blocks runs successfully, in order;
- every relative link in ``README.md`` and ``docs/`` points at an existing file
  (and, for ``file.md#anchor`` links, at an existing heading);
- the examples of ``docs/testing.md`` (python blocks naming a ``file=``) pass
  when written to those files and run with pytest;
- every ``FERRYMAN_*`` setting is documented in ``docs/configuration.md``, with
  its real default;
- every CLI command, and every option of it, is documented in ``docs/cli.md``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.main
from pydantic import SecretStr
from pydantic.fields import FieldInfo

from ferryman.cli.app import app
from ferryman.settings import GROUPS, Settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
GETTING_STARTED = DOCS / "getting-started.md"
CONFIGURATION = DOCS / "configuration.md"
CLI_DOC = DOCS / "cli.md"
TESTING = DOCS / "testing.md"

FENCE = re.compile(r"^```([\w+-]*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)


def code_blocks(text: str, lang: str) -> list[str]:
    """The contents of the fenced blocks of language ``lang``, in order."""
    return [body for kind, body in FENCE.findall(text) if kind == lang]


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md")), *sorted(EXAMPLES.rglob("*.md"))]


# --------------------------------------------------------------------------- getting started


def test_getting_started_example_is_examples_etl() -> None:
    blocks = code_blocks(GETTING_STARTED.read_text(encoding="utf-8"), "python")
    assert len(blocks) == 1, "docs/getting-started.md should show exactly one python block"
    assert blocks[0] == (ROOT / "examples" / "etl.py").read_text(encoding="utf-8")


def console_commands(text: str) -> list[str]:
    """Every ``$ ferryman ...`` line of the ``console`` blocks, in order."""
    commands = []
    for block in code_blocks(text, "console"):
        for line in block.splitlines():
            if line.startswith("$ ferryman ") or line == "$ ferryman":
                commands.append(line[2:])
    return commands


def test_getting_started_commands_are_runnable() -> None:
    commands = console_commands(GETTING_STARTED.read_text(encoding="utf-8"))
    assert len(commands) >= 5, commands
    for command in commands:
        assert not command.endswith("\\"), f"no line continuations, please: {command!r}"
        args = shlex.split(command, comments=True)
        assert args[1:2] != ["worker"], f"{command!r} never ends: keep it out of console blocks"
        assert not any(a.isupper() or "<" in a for a in args), f"placeholder in {command!r}"


@pytest.mark.slow
def test_getting_started_commands_run_in_order(tmp_path: Path) -> None:
    env = dict(os.environ)
    env.update(
        FERRYMAN_HOME=str(tmp_path / "home"),
        FERRYMAN_DATABASE_URL=f"sqlite:///{tmp_path}/ferryman.db",
        COLUMNS="200",
    )
    env.pop("FERRYMAN_DEBUG", None)
    commands = console_commands(GETTING_STARTED.read_text(encoding="utf-8"))
    for command in commands:
        args = shlex.split(command, comments=True)[1:]
        proc = subprocess.run(
            [sys.executable, "-m", "ferryman", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, (
            f"`{command}` exited with {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )


# --------------------------------------------------------------------------- testing guide

FILE_BLOCK = re.compile(r"^```python file=(\S+)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)


def test_testing_guide_shows_only_tested_python() -> None:
    text = TESTING.read_text(encoding="utf-8")
    files = FILE_BLOCK.findall(text)
    assert len(files) >= 2
    assert len(code_blocks(text, "python")) == len(files), "a python block without file="


@pytest.mark.slow
def test_testing_guide_examples_pass(tmp_path: Path) -> None:
    """Written where the guide says, the examples pass under pytest (run from
    the project's top directory, as a user would)."""
    files = FILE_BLOCK.findall(TESTING.read_text(encoding="utf-8"))
    for name, body in files:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRYMAN_")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    tests = sum(body.count("\ndef test_") for _, body in files)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{tests} passed" in proc.stdout, proc.stdout


# --------------------------------------------------------------------------- links

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"`[^`\n]*`")


def without_code(text: str) -> str:
    return INLINE_CODE.sub("", FENCE.sub("", text))


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links keep their text
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = github_anchor(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def relative_links(path: Path) -> list[str]:
    out = []
    for target in LINK.findall(without_code(path.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        out.append(target)
    return out


@pytest.mark.parametrize("doc", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path) -> None:
    broken = []
    for target in relative_links(doc):
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert broken == []


def test_the_link_checker_sees_links() -> None:
    links = relative_links(ROOT / "README.md")
    assert "docs/getting-started.md" in links
    assert github_anchor("`@step` options") == "step-options"
    assert github_anchor("Where the code must be") == "where-the-code-must-be"


# --------------------------------------------------------------------------- settings


def setting_names() -> dict[str, tuple[str, str]]:
    """Every ``FERRYMAN_*`` variable -> (group attribute, field)."""
    return Settings.variables()


def _field(where: tuple[str, str]) -> FieldInfo:
    group, name = where
    model = GROUPS[group] if group else Settings
    return model.model_fields[name]


def test_every_setting_is_documented() -> None:
    text = CONFIGURATION.read_text(encoding="utf-8")
    names = setting_names()
    assert "FERRYMAN_DATABASE_URL" in names
    missing = [env for env in names if f"`{env}`" not in text]
    assert missing == []


def _renderings(default: object) -> set[str]:
    if isinstance(default, bool):
        return {str(default).lower()}
    if isinstance(default, int | float):
        return {f"{default:g}", str(default)}
    return {str(default)}


def test_documented_defaults_are_the_real_ones() -> None:
    """Rows of the settings table look like ``| `FERRYMAN_X` | `default` | meaning |``."""
    text = CONFIGURATION.read_text(encoding="utf-8")
    for env, where in setting_names().items():
        field = _field(where)
        default = field.get_default(call_default_factory=True)
        computed = field.default_factory is not None and not isinstance(default, dict | list)
        if default is None or isinstance(default, SecretStr) or computed:  # described in words
            continue
        row = re.search(rf"^\|\s*`{env}`\s*\|\s*([^|]*)\|", text, re.M)
        assert row is not None, f"no table row for {env} in docs/configuration.md"
        shown = row.group(1).strip().strip("`")
        assert shown in _renderings(default), f"{env}: documented {shown!r}, real {default!r}"


# --------------------------------------------------------------------------- CLI


def command_paths() -> list[str]:
    """``run``, ``runs ls``, ...: every command registered on the typer app."""
    paths: list[str] = []

    def walk(t: typer.Typer, prefix: str) -> None:
        for cmd in t.registered_commands:
            assert cmd.callback is not None
            name = cmd.name or cmd.callback.__name__.replace("_", "-")
            paths.append(f"{prefix}{name}")
        for group in t.registered_groups:
            assert group.typer_instance is not None
            gname = group.name or group.typer_instance.info.name
            walk(group.typer_instance, f"{prefix}{gname} ")

    walk(app, "")
    return paths


def test_every_command_is_documented() -> None:
    text = CLI_DOC.read_text(encoding="utf-8")
    paths = command_paths()
    assert {"run", "worker", "runs ls", "db upgrade", "version"} <= set(paths)
    missing = [p for p in paths if f"`ferryman {p}" not in text]
    assert missing == []


def _section(text: str, path: str) -> str:
    """The part of cli.md from the heading naming ``ferryman <path>`` to the next heading."""
    m = re.search(rf"^(#+) .*`ferryman {re.escape(path)}( [^`]*)?`.*$", text, re.M)
    assert m is not None, f"docs/cli.md has no heading for `ferryman {path}`"
    rest = text[m.end() :]
    level = len(m.group(1))
    nxt = re.search(rf"^#{{1,{level}}} ", rest, re.M)
    return rest[: nxt.start()] if nxt else rest


def test_every_option_is_documented_with_its_command() -> None:
    text = CLI_DOC.read_text(encoding="utf-8")
    # typer may bundle its own copy of click: look at the objects, not their classes
    root: Any = typer.main.get_command(app)
    missing = []
    seen = []

    def walk(cmd: Any, path: list[str]) -> None:
        subcommands = getattr(cmd, "commands", None)
        if subcommands is not None:
            for name, sub in subcommands.items():
                walk(sub, [*path, name])
            return
        seen.append(" ".join(path))
        section = _section(text, " ".join(path))
        for param in cmd.params:
            if param.param_type_name == "option":
                for opt in [*param.opts, *param.secondary_opts]:
                    if opt != "--help" and f"`{opt}" not in section:
                        missing.append(f"ferryman {' '.join(path)} {opt}")

    walk(root, [])
    assert "run" in seen and "runs ls" in seen
    assert missing == []


def test_configuration_python_examples_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Python blocks of docs/configuration.md run as written (with no
    ``FERRYMAN_*`` variable set, as on a fresh machine)."""
    for name in list(os.environ):
        if name.startswith("FERRYMAN_"):
            monkeypatch.delenv(name)
    blocks = re.findall(r"```python\n(.*?)```", CONFIGURATION.read_text(encoding="utf-8"), re.S)
    assert blocks
    for code in blocks:
        exec(compile(code, str(CONFIGURATION), "exec"), {})
