#!/usr/bin/env bash
# Set up a virtual environment with ferryman and its development tools.
set -euo pipefail
cd "$(dirname "$0")/.."
# The interpreter: $PYTHON if set; else the distribution's CPython when it is
# 3.11+ with venv (distribution builds are compiled with profile-guided and
# link-time optimisation, a self-compiled pyenv build by default is not: ~20 %
# slower here; docs/decisions/0006-optimised-interpreter.md); else python3.
pick_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  for c in /usr/bin/python3 python3; do
    if "$c" -c 'import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
    then echo "$c"; return; fi
  done
  echo python3
}
PY=$(pick_python)
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
