#!/usr/bin/env bash
# Install everything the tests need (Python venv from the lock file, Logto's npm connectors,
# Debian's Chromium for the inbox page's browser tests), then run every check: lint, format,
# strict type-check and the full test suite. Safe to run on a fresh clone. The Python packages
# come from requirements-test.lock (exact versions, hashes); refresh it with scripts/lock.sh
# after changing pyproject.toml's dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/chromium ]; then
  # Playwright drives the system browser: its own browser download does not work offline.
  echo "installing Debian's chromium for the browser tests (apt-get)" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
[ -x /usr/bin/chromium ] || { echo "error: /usr/bin/chromium is missing and could not be installed" >&2; exit 1; }
# Docker: tests/test_docker_image.py builds and runs the image. As root, install Debian's engine
# (and debootstrap, for scripts/base-image.sh's stand-in base image) and start dockerd when no
# engine answers. Without an engine that test fails, it is not skipped.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    echo "installing Debian's docker.io and debootstrap for the image test (apt-get)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
  fi
  if ! docker info >/dev/null 2>&1; then
    # The test builds and runs with --network host: no bridge, no iptables rules.
    echo "starting dockerd (log: /var/log/otp-service-test-dockerd.log)" >&2
    nohup dockerd --bridge=none --iptables=false >/var/log/otp-service-test-dockerd.log 2>&1 &
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  fi
fi
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet --require-hashes -r requirements-test.lock
.venv/bin/python -m pip install --quiet --no-deps -e .
npm ci --prefix tests/interop --no-audit --no-fund --loglevel=error
# PostgreSQL: the store tests need the server at OTP_TEST_DATABASE_URL (default
# postgresql://postgres@127.0.0.1:5432/test; its database is created if missing) and the
# server binaries (initdb, pg_ctl) for a cluster of their own. Missing: a failure, never a skip.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql
  fi
fi
.venv/bin/python -m tests.support.pg
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet --site-dir site  # docs/: links, anchors, nav (site/ is ignored)
.venv/bin/pytest
