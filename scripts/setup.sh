#!/usr/bin/env bash
# Set up a virtual environment with ferryman and its development tools.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import ferryman, pytest, mypy, ruff" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.ferryman-installed ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev]"
  touch .venv/.ferryman-installed
fi
# Byte-compile ferryman's own sources (pip does it for installed packages, not
# for an editable install): with PYTHONDONTWRITEBYTECODE set, every start of
# `ferryman` would otherwise recompile them.
.venv/bin/python -m compileall -q src >/dev/null
