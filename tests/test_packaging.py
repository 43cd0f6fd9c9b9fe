"""The built wheel carries what the service reads at run time besides Python modules."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_ships_the_inbox_page_and_templates(tmp_path: Path) -> None:
    """pip builds a wheel holding the inbox page's files and the bundled templates."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    [wheel] = tmp_path.glob("otp_service-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("inbox.html", "inbox.js", "inbox.css"):
        assert f"otp_service/http/static/{name}" in names
    assert "otp_service/_templates/email/en/SignIn.html" in names
