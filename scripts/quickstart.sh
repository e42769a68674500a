#!/usr/bin/env bash
# Set up everything and run the example pipeline on the embedded defaults
# (SQLite under FERRYMAN_HOME, steps as local processes).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/ferryman run examples/etl.py:etl -p source=demo --watch "$@"
