"""The benchmark's scenarios: each module runs one part and says how to report it.

A scenario is a :class:`Scenario` value (``SCENARIO`` in its module) listed in
``bench.runner.SCENARIOS``; the runner runs the selected ones in that order and the report
module draws what their hooks return. See bench/README.md, "Adding a scenario".
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.harness import Bench

Run = dict[str, Any]  # one measured run: requests, errors, rps, p50_ms ... (see bench.loadgen)


def _nothing(result: Any) -> list[Any]:
    return []


@dataclass(frozen=True)
class Scenario:
    """One part of the benchmark: how to run it and what it adds to each part of the report.

    ``run(bench, parts)`` gets the harness and the names of every part of this invocation and
    returns a JSON-able result, stored under ``report[key]``. Every hook gets that result.
    """

    name: str  # its --only choice and its name under "parts run"
    key: str  # where its result goes in the report (and the --json output)
    run: Callable[[Bench, Sequence[str]], Any]
    help: str = ""  # what it measures, in the --only help
    default: bool = True  # in a run without --only; False: only with --only NAME
    skip_flag: str | None = None  # an option (its dest) that leaves it out of a full run
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None  # its own options
    summary: Callable[[Any], list[str]] = _nothing  # bullet lines under the report's heading
    table_rows: Callable[[Any], list[str]] = _nothing  # rows of the shared table (table.row)
    notes: Callable[[Any], list[str]] = _nothing  # lines after the shared table
    section: Callable[[Any], list[str]] = _nothing  # its own section: heading, text, table
    memory_rows: Callable[[Any], list[str]] = _nothing  # rows of the service memory table
    runs: Callable[[Any], Iterable[tuple[str, Run]]] = _nothing  # named runs: errors, profiles
