#!/usr/bin/env bash
# Set up everything and run the whole test suite: lint, types, tests on
# SQLite and PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/ensure-postgres.sh
bash scripts/ensure-docker.sh
export FERRYMAN_TEST_PG_URL=${FERRYMAN_TEST_PG_URL:-postgresql://postgres@127.0.0.1:5432/test}
echo "== ruff"; .venv/bin/ruff check src tests bench examples
.venv/bin/ruff format --check src tests bench examples
echo "== mypy"; .venv/bin/mypy
echo "== import contracts"; .venv/bin/lint-imports
echo "== pytest"
# Most tests wait on processes, servers and databases rather than compute:
# four test processes keep the two cores busy (each has its own PostgreSQL
# database). FERRYMAN_TEST_WORKERS=0 runs them in this process.
.venv/bin/python -m pytest -q -p no:cacheprovider -n "${FERRYMAN_TEST_WORKERS:-4}" "$@"
