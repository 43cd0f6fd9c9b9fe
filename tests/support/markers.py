"""The markers the quick run (``scripts/quick.sh``) leaves out, and the fixtures needing them.

A test that uses one of these fixtures needs what its marker names (see pyproject.toml), so it
carries the mark. ``test_suite_layout`` checks the fixtures a test asks for by name; conftest's
fixtures also call :func:`require_mark` when set up, which catches one taken on the way
(``request.getfixturevalue``: a per-backend fixture takes ``pg_schema`` for its PostgreSQL
variant only, that variant alone being marked ``postgres``).
"""

from __future__ import annotations

import pytest

MARKER_FOR_FIXTURE = {
    "pg_schema": "postgres",  # the PostgreSQL server
    "browser": "browser",  # Chromium through Playwright
    "processes": "slow",  # service and sink processes
    "services": "slow",  # otp-service serve processes
}

# A backend parameter whose tests need the PostgreSQL server: only they are marked postgres.
POSTGRES = pytest.param("postgres", marks=pytest.mark.postgres)


def require_mark(request: pytest.FixtureRequest, fixture: str) -> None:
    """Fail the test setting up ``fixture`` unless it carries the fixture's marker."""
    marker = MARKER_FOR_FIXTURE[fixture]
    if request.node.get_closest_marker(marker) is None:
        raise AssertionError(
            f"{request.node.nodeid} uses {fixture} but is not marked {marker} "
            f"(mark the test, or the parameter that needs it: pytest.param(..., "
            f"marks=pytest.mark.{marker}))"
        )
