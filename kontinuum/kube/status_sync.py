"""Keeps the objects' status in step with the mesh, while this replica leads.

A round of writes runs when the mesh applied a new fleet (`changed()`), when this replica
becomes leader, when a failed write is due again (`StatusWriter.next_retry`), and every
`resync` seconds, when the writer forgets what it wrote and reads every object again (a
status someone else changed is repaired). Changes that arrive during a round are taken by
the next one: the writer only ever writes the latest decisions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable

from kontinuum.kube.status_writer import DesiredStatus, StatusWriter

log = logging.getLogger("kontinuum.kube.status")


class StatusSync:
    """Runs the writer's rounds (see the module doc) until cancelled."""

    def __init__(
        self,
        writer: StatusWriter,
        desired: Callable[[], Iterable[DesiredStatus]],
        leading: asyncio.Event,
        resync: float = 300.0,
    ) -> None:
        self._writer = writer
        self._desired = desired
        self._leading = leading
        self._resync = resync
        self._changed = asyncio.Event()

    def changed(self) -> None:
        """The decisions may have changed (a fleet was applied, leadership changed)."""
        self._changed.set()

    @property
    def due(self) -> bool:
        """Whether a round is due (`changed()` since the last one began)."""
        return self._changed.is_set()

    async def run(self) -> None:
        resync_at = time.monotonic() + self._resync
        while True:
            await self._leading.wait()
            self._changed.clear()
            if time.monotonic() >= resync_at:
                self._writer.forget()
                resync_at = time.monotonic() + self._resync
            try:
                await self._writer.write(self._desired())
            except Exception:  # a bug must not stop status for good: logged, retried
                log.exception("writing status failed")
                self._changed.set()
                await asyncio.sleep(1.0)
            due = [resync_at, self._writer.next_retry() or resync_at]
            # asyncio.timeout, not wait_for: on 3.11, wait_for can swallow a cancellation
            # that arrives as the wait ends (CPython gh-86296), and shutdown would hang.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(min(due) - time.monotonic(), 0)):
                    await self._changed.wait()
