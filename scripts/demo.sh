#!/usr/bin/env bash
# Quick start, command 1: set everything up, then run the demo on the embedded default (a DuckDB file).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/unitcost demo "$@"
