"""``ferryman server`` (with its embedded worker) and ``ferryman worker``
check the installed plugins at start: a plugin id registered twice stops
them with a clear message and exit code 2 (a real distribution's entry
point on the path, real processes)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.cli_support import cli_environment, ferryman, free_port


def duplicate_plugin(root: Path) -> Path:
    """A distribution on ``root`` whose entry point registers ``http_job`` again."""
    dist = root / "dupplug-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: dupplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[ferryman.plugins]\nhttp_job = ferryman.plugins.http:HttpJobPlugin\n"
    )
    return root


@pytest.mark.parametrize("args", [("server", "--port", "0"), ("worker",)], ids=["server", "worker"])
def test_a_duplicate_plugin_id_stops_the_process_at_start(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    site = duplicate_plugin(tmp_path / "site")
    db = f"sqlite:///{tmp_path / 'f.db'}"
    env = cli_environment(tmp_path / "home", db, PYTHONPATH=str(site))
    if args[0] == "server":
        args = ("server", "--port", str(free_port()))
    p = ferryman(env, *args, timeout=60)
    assert p.returncode == 2, (p.stdout, p.stderr)
    out = p.stdout + p.stderr
    assert "plugin id 'http_job' is registered twice" in out, out
    assert "Traceback" not in out
