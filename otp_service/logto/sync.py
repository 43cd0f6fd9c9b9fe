"""Keep Logto's email templates in memory, refreshed in the background.

:class:`TemplateSync` reads the templates at start (waiting a few seconds at most), then every
``refresh_seconds`` (sooner while Logto is failing: with backoff from 1 s up to at most 30 s).
Each good answer is handed to ``apply`` (in a thread: compiling must not hold up sends), which
compiles the rows and returns the ones that do not compile; a failed read changes nothing, so
sends keep the last good templates. Requests never wait for Logto.

The state (``ok``, ``unreachable``, ``refused``, ``template_error``; ``starting`` before the first
answer) is logged once per change (WARNING when it worsens, INFO when it recovers), shown by
``/readyz`` and as the ``otp_logto_templates_up`` metric.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..config.logto import LogtoConfig
from ..errors import LogtoApiError
from ..retry import Backoff
from .client import LogtoClient, LogtoTemplate

log = logging.getLogger("otp_service.logto")

Apply = Callable[[Sequence[LogtoTemplate]], list[str]]
_RETRY_FIRST_SECONDS = 1.0  # while failing, the first retry (then doubling)
_RETRY_SECONDS = 30.0  # while failing, try again at least this often
_START_WAIT_SECONDS = 5.0  # how long start-up waits for the first answer


@dataclass(frozen=True)
class SyncStatus:
    state: str
    templates: int  # rows of the last good answer that compiled
    problem: str | None
    last_success: float | None  # wall-clock time of the last good answer

    def as_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "templates": self.templates,
            "problem": self.problem,
            "last_success": self.last_success,
        }


class TemplateSync:
    """Reads Logto's templates into ``apply`` now and every ``refresh_seconds``."""

    def __init__(
        self, config: LogtoConfig, apply: Apply, client: LogtoClient | None = None
    ) -> None:
        self.config = config
        self.apply = apply
        self.client = client or LogtoClient(config)
        self.state = "starting"
        self.problem: str | None = None
        self.templates = 0
        self.last_success: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._first = asyncio.Event()

    @property
    def up(self) -> bool:
        return self.state == "ok"

    def status(self) -> SyncStatus:
        return SyncStatus(self.state, self.templates, self.problem, self.last_success)

    def _set(self, state: str, problem: str | None) -> None:
        # Once per state; for template_error also when other templates break. An outage whose
        # wording varies (timed out, refused) is still one outage.
        changed = state != self.state or (state == "template_error" and problem != self.problem)
        self.state, self.problem = state, problem
        if not changed:
            return
        if state == "ok":
            log.info("Logto email templates: ok, %d template(s)", self.templates)
        else:
            log.warning(
                "Logto email templates: %s: %s (sending with the last good templates, "
                "then the other sources)",
                state,
                problem,
            )

    async def refresh(self) -> None:
        """Read the templates once; on failure keep what was there."""
        try:
            rows, unusable = await self.client.email_templates()
        except LogtoApiError as exc:
            self._set("refused" if exc.refused else "unreachable", exc.message)
        else:
            # Compiling can take a while (a large template): never on the event loop.
            failed = await asyncio.to_thread(self.apply, rows)
            broken = unusable + failed
            self.templates = len(rows) - len(failed)
            self.last_success = time.time()
            if broken:
                shown = ", ".join(broken[:5]) + (" ..." if len(broken) > 5 else "")
                self._set("template_error", f"{len(broken)} template(s) unusable: {shown}")
            else:
                self._set("ok", None)
        finally:
            self._first.set()

    async def _run(self) -> None:
        every = self.config.refresh_seconds
        backoff = Backoff(min(every, _RETRY_FIRST_SECONDS), min(every, _RETRY_SECONDS))
        while True:
            try:
                await self.refresh()
            except Exception:  # a bug here must not end the refreshes
                log.exception("Logto email templates: refresh failed")
            if self.state in ("unreachable", "refused"):
                await backoff.wait()
            else:
                backoff.reset()
                await asyncio.sleep(every)

    async def start(self) -> None:
        """Start refreshing; wait briefly for the first answer so early sends can use it."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="logto-templates")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._first.wait(), _START_WAIT_SECONDS)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.client.close()
