#!/usr/bin/env bash
# Install everything the tests need (Python venv + Logto's npm connectors), then run every check:
# lint, format, strict type-check and the full test suite. Safe to run on a fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
npm ci --prefix tests/interop --no-audit --no-fund --loglevel=error
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/pytest
