"""docs/schedules.md is honest: its Python files (``python file=NAME``
blocks) are written out and every ``$ ferryman ...`` line of its console
blocks runs, in order, in a fresh home; a line followed by ``error: ...``
must fail with exit code 2 and print that text."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml
from tests.cli_support import cli_environment, ferryman

from ferryman.dsl.loader import load_pipeline

DOC = Path(__file__).resolve().parents[2] / "docs" / "schedules.md"
FENCE = re.compile(r"^```([\w+-]*)([^\n]*)\n(.*?)^```[ \t]*$", re.M | re.S)
VALIDATE = Path(sys.executable).parent / "kubernetes-validate"


def test_schedules_guide_examples_run(tmp_path: Path) -> None:
    text = DOC.read_text(encoding="utf-8")
    blocks = FENCE.findall(text)
    for lang, info, body in blocks:
        m = re.search(r"file=(\S+)", info)
        if lang == "python" and m:
            (tmp_path / m.group(1)).write_text(body)
        if lang == "yaml":
            yaml.safe_load(body)  # at least well-formed
    # the files the commands read
    (tmp_path / "bot.json").write_text(json.dumps({"action": "post_sumary"}))
    (tmp_path / "params.json").write_text(json.dumps({"config": {"action": "refresh_cache"}}))
    # the YAML block is the Python declaration's twin
    (yaml_block,) = [b for lang, _, b in blocks if lang == "yaml"]
    declared = load_pipeline(f"{tmp_path / 'greet.py'}:greet").schedules
    as_yaml = yaml.safe_load(yaml_block)["schedules"]
    assert [s.name for s in declared] == [s["name"] for s in as_yaml]

    env = cli_environment(tmp_path / "home")
    ran = 0
    for lang, _, body in blocks:
        if lang != "console":
            continue
        lines = body.splitlines()
        for i, line in enumerate(lines):
            if not line.startswith("$ ferryman "):
                continue
            expected_error = lines[i + 1] if i + 1 < len(lines) else ""
            r = ferryman(env, *shlex.split(line[2:])[1:], cwd=tmp_path)
            ran += 1
            if expected_error.startswith("error:"):
                assert r.returncode == 2, (line, r.stdout, r.stderr)
                for shown in lines[i + 1 :]:
                    if shown.startswith("$"):
                        break
                    assert shown.strip() in r.stderr, (shown, r.stderr)
            else:
                assert r.returncode == 0, (line, r.stdout, r.stderr)
    assert ran >= 10
    manifest = tmp_path / "nightly.yaml"
    assert manifest.exists()
    v = subprocess.run([str(VALIDATE), "--strict", str(manifest)], capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert v.returncode == 0, v.stdout + v.stderr
