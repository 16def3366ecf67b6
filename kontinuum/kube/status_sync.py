"""Keeps the objects' status in step with the mesh, while this replica leads.

A round of writes runs when the mesh applied a new fleet (`changed()`), when this replica
becomes leader, and, while some write fails (a cluster is unreachable, an object changed
in between), again every `retry` seconds. Changes that arrive during a round are taken by
the next one: the writer only ever writes the latest decisions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
        retry: float = 5.0,
    ) -> None:
        self._writer = writer
        self._desired = desired
        self._leading = leading
        self._retry = retry
        self._changed = asyncio.Event()
        self.rounds = 0

    def changed(self) -> None:
        """The decisions may have changed (a fleet was applied, leadership changed)."""
        self._changed.set()

    async def run(self) -> None:
        while True:
            await self._leading.wait()
            self._changed.clear()
            try:
                outcome = await self._writer.write(self._desired())
            except Exception:  # a bug must not stop status for good: logged, retried
                log.exception("writing status failed")
                failed = True
            else:
                failed = outcome.failed > 0
            self.rounds += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self._retry if failed else None)
