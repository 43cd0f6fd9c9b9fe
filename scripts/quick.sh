#!/usr/bin/env bash
# The quick run while editing: every test except those marked slow (processes, Node, a wheel
# build, anything over ~2 s), browser (Chromium) or postgres (the PostgreSQL server or a
# cluster); the markers are declared in pyproject.toml. Under a minute on a 2-core machine.
# It needs the venv scripts/test.sh made; extra arguments go to pytest (-x, -k NAME, a path).
# scripts/test.sh still runs every test, as CI does.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest -q -p no:cacheprovider \
  -m "not slow and not browser and not postgres" "$@"
