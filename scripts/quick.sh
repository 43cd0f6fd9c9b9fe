#!/usr/bin/env bash
# The quick run while editing: every test except those marked slow (processes, Node, a wheel
# build, anything over ~2 s), browser (Chromium) or postgres (the PostgreSQL server or a
# cluster); the markers are declared in pyproject.toml. Spread over 4 processes (pytest-xdist;
# many tests wait on sockets and timers, so 4 beat 2 on a 2-core machine): 1,106 tests in 53 s
# on this project's 2-core machine, against 1 min 47 s in one process. QUICK_WORKERS=0 runs
# them in this process (for pdb). It needs the venv scripts/test.sh made; extra arguments go
# to pytest (-x, -k NAME, a path).
# scripts/test.sh still runs every test, as CI does.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest -q -p no:cacheprovider -n "${QUICK_WORKERS:-4}" \
  -m "not slow and not browser and not postgres" "$@"
