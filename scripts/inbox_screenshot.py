"""Take the README's screenshot of the inbox page: ``python scripts/inbox_screenshot.py``.

Starts ``otp-service serve`` on a free port (capture defaults, its own outbox file), sends a few
messages the way Logto does, opens /inbox in Debian's Chromium (Playwright, the system browser)
with one email open, and writes docs/inbox.png.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp
from playwright.async_api import async_playwright

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "inbox.png"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
MESSAGES: list[tuple[str, dict[str, object]]] = [
    ("sms", {"to": "+33612345678", "type": "Register", "payload": {"code": "604817"}}),
    (
        "email",
        {
            "to": "lea@example.com",
            "type": "ForgotPassword",
            "payload": {"code": "318540", "locale": "fr"},
        },
    ),
    (
        "email",
        {
            "to": "ana@example.com",
            "type": "SignIn",
            "payload": {"code": "482913", "application": {"name": "Acme"}},
        },
    ),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def shoot(base: str) -> None:
    async with aiohttp.ClientSession() as session:
        for channel, body in MESSAGES:  # as Logto sends them
            async with session.post(f"{base}/v1/{channel}", json=body) as response:
                assert response.status == 200, await response.text()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = await browser.new_page(viewport={"width": 1100, "height": 960})
        await page.goto(f"{base}/inbox")
        await page.wait_for_selector("#live[data-state='live']")
        await page.locator("li.msg .summary").first.click()
        await page.wait_for_timeout(500)  # let the preview frame paint
        OUT.parent.mkdir(exist_ok=True)
        await page.screenshot(path=str(OUT))
        await browser.close()


def main() -> int:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as state:
        env = {**os.environ, "XDG_STATE_HOME": state}
        server = subprocess.Popen(  # noqa: S603 (our own entry point)
            [str(Path(sys.executable).parent / "otp-service"), "serve", "--port", str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        )  # fmt: skip
        try:
            assert server.stdout is not None
            server.stdout.readline()  # "listening on ...": it is up
            asyncio.run(shoot(base))
        finally:
            server.terminate()
            server.wait(timeout=10)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
