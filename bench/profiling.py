"""``--profile DIR``: py-spy records the service during a run; stacks are summed per function."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import stop_process
from bench.harness import Bench


def profile_start(bench: Bench, pid: int, name: str) -> subprocess.Popen[bytes] | None:
    """py-spy on the service during one run, with --profile DIR (stacks to DIR/<name>.txt)."""
    if not bench.args.profile:
        return None
    path = Path(bench.args.profile) / f"{name}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    spy = shutil.which("py-spy")
    if spy is None:
        print("note: --profile needs py-spy (pip install py-spy); not profiling", file=sys.stderr)
        return None
    # --gil: only samples holding the GIL, i.e. running Python; a thread blocked in a socket
    # call, or descheduled in one because the peer it woke took the CPU, is not counted.
    command = [spy, "record", "--pid", str(pid), "--rate", "250", "--format", "raw",
               "--nonblocking", "--gil", "-o", str(path)]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bench.procs.append(proc)
    time.sleep(1.0)  # let it attach
    return proc


def profile_report(
    bench: Bench, proc: subprocess.Popen[bytes] | None, name: str
) -> dict[str, Any] | None:
    """Stop py-spy and sum its collapsed stacks: own-code functions, inclusive and self."""
    if proc is None:
        return None
    stop_process(proc, signal.SIGINT, wait=15)
    bench.procs.remove(proc)
    path = Path(bench.args.profile) / f"{name}.txt"
    if not path.exists():
        return None
    total = 0
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        seen: set[str] = set()
        for frame in frames:
            if "otp_service" in frame and frame not in seen and not _entry_frame(frame):
                seen.add(frame)
                inclusive[_frame_name(frame)] += count
        leaf[_frame_name(frames[-1])] += count
    return {
        "file": str(path),
        "samples": total,
        "own_code_inclusive": [
            {"function": name, "pct": 100 * n / total} for name, n in inclusive.most_common(12)
        ],
        "self_any_code": [
            {"function": name, "pct": 100 * n / total} for name, n in leaf.most_common(12)
        ],
    }


def _entry_frame(frame: str) -> bool:
    """Frames around the whole server (the CLI and ``__main__``), in every sample."""
    return "otp_service/cli.py" in frame or "otp_service/__main__.py" in frame


def _frame_name(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/file.py:123)"; drop the line number.
    match = re.match(r"(.*?) \((.*?)(?::\d+)?\)$", frame)
    if not match:
        return frame or "(no Python frame)"
    function, path = match.groups()
    marker = path.rfind("site-packages/")
    if marker >= 0:
        path = path[marker + len("site-packages/") :]
    elif "otp_service/" in path:
        path = path[path.rfind("otp_service/") :]
    else:
        path = Path(path).name
    return f"{function} ({path})"
