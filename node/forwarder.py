"""Forwarding client records from a follower to the authorities.

A node that is not an authority of the epoch in force (a follower: an
authority added but not yet in force, one removed, or a plain reader) still
takes submissions: the service checks them against its own state and mempool,
so a bad record is refused at once, and `?wait=commit` answers when the block
that holds the record arrives by catch-up. It cannot gossip them, since only
authorities sign peer envelopes, so it posts them to an authority's public
API (`POST /v1/records`), as any client would. Submission there is idempotent
(a record already pending or committed is reported, not refused), so
forwarding again is always safe; the consensus driver re-forwards what stays
pending, which covers an authority that crashed before gossiping it.

Delivery is best effort, in order of arrival, to one authority at a time: a
failed or overloaded target makes the next one current; records the target
refuses (they conflict with what is pending there) are left out and the rest
sent again.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable

import aiohttp

log = logging.getLogger("lacre.forward")

# Well under the API's per-submission limit (node.api.SUBMISSION_RECORDS_MAX).
FORWARD_RECORDS_MAX = 2_000
FORWARD_TIMEOUT_S = 10.0


class Forwarder:
    """Posts records to the authorities `urls()` names, one chunk at a time, from one task."""

    def __init__(self, urls: Callable[[], list[str]]) -> None:
        self.urls = urls
        self.records_forwarded = 0
        self._queue: list[bytes] = []
        self._task: asyncio.Task | None = None
        self._session: aiohttp.ClientSession | None = None
        self._target = 0  # index into urls(): the authority tried first

    def start(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    def forward(self, encoded: list[bytes]) -> None:
        """Queue records (canonical bytes) for an authority; never blocks."""
        if not encoded or self._session is None:
            return
        self._queue.extend(encoded)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="forward")

    async def _drain(self) -> None:
        while self._queue:
            chunk, self._queue = self._queue[:FORWARD_RECORDS_MAX], self._queue[FORWARD_RECORDS_MAX:]
            try:
                await self._send(chunk)
            except Exception:  # a bug here must not stop later forwarding
                log.exception("forwarding %d records failed", len(chunk))

    async def _send(self, chunk: list[bytes]) -> None:
        """Deliver `chunk` to some authority, trying each once; gives up (to the re-forward) after that."""
        urls = self.urls()
        for _ in range(len(urls)):
            url = urls[self._target % len(urls)]
            body = {"records": [base64.b64encode(data).decode() for data in chunk]}
            try:
                async with self._session.post(  # type: ignore[union-attr]
                    url + "/v1/records", json=body, timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S)
                ) as response:
                    if response.status in (200, 202):
                        self.records_forwarded += len(chunk)
                        return
                    answer = await response.json(content_type=None) if response.status < 500 else {}
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as error:
                log.debug("forwarding to %s failed: %s", url, error)
                self._target += 1
                continue
            if not isinstance(answer, dict):
                answer = {}
            refused = {item.get("index") for item in answer.get("refused", ()) if isinstance(item, dict)}
            if 400 <= response.status < 500 and refused:
                # Refused there (a conflict with its pending records, or a rule
                # of a newer state): send the others again; drop these.
                log.info("%s refused %d forwarded records: %s", url, len(refused), answer.get("detail", ""))
                chunk = [data for index, data in enumerate(chunk) if index not in refused]
                if not chunk:
                    return
                continue
            self._target += 1  # overloaded or failing: try the next authority
        log.warning("no authority took %d forwarded records; they stay pending here", len(chunk))
