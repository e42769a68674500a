"""docs/secrets.md: its python examples (blocks naming a ``file=``) pass
under pytest, written where the page says, as a user would run them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "secrets.md"
FILE_BLOCK = re.compile(r"^```python file=(\S+)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)


def test_every_python_block_is_a_tested_file() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert len(FILE_BLOCK.findall(text)) == text.count("```python") >= 2


def test_secrets_guide_examples_pass(tmp_path: Path) -> None:
    files = FILE_BLOCK.findall(DOC.read_text(encoding="utf-8"))
    for name, body in files:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRYMAN_")}
    env.pop("CAST_API_KEY", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    tests = sum(body.count("\ndef test_") for _, body in files)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{tests} passed" in proc.stdout, proc.stdout
