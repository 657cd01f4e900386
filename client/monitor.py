"""`lacre monitor`: watch that every node shows one history, and say so when one does not.

Theory of operation. Each round the monitor fetches `GET /v1/checkpoint` and
`GET /v1/evidence` from every authority URL of the trust file and any extra
URL, then checks, trusting no node:

    checkpoint   a C2SP note of the trust file's origin, cosigned by a quorum of
                 the authority set in force at the block it names (the trust
                 file's history)                     else no-quorum / invalid-checkpoint
    per node     the node's checkpoint extends the last one verified from it:
                 never smaller; same size, same root; larger, an RFC 9162
                 consistency proof from that node     else rollback
    across nodes two checkpoints of one size have one root; a smaller one is a
                 prefix of the latest verified one (proof from a node holding
                 the larger), and a larger one extends it (proof from the node
                 that showed it)                      else split-view
    evidence     an entry in /v1/evidence not seen before                 evidence

Only what verified is remembered: per node its last verified checkpoint, and
overall the largest checkpoint proven consistent with everything remembered
before ("latest"). The state file is rewritten atomically after every round,
so a restarted monitor resumes where it stopped and a node that went back in
time while the monitor was down still raises a rollback. A node that cannot be
reached, or cannot serve a proof, is a warning, not an alarm: it proves nothing.

Each distinct alarm is raised once per process (a split view that persists is
not repeated every round); evidence is raised once ever (the state keeps it).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import enum
import hashlib
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

import aiohttp

from client.monitor_state import Head, MonitorError, MonitorState, verify_note
from client.sdk import ApiError, AsyncClient
from ledger.checkpoint import CheckpointError
from ledger.genesis import Trust
from ledger.merkle import EMPTY_ROOT, ProofError, verify_consistency
from ledger.note import NoteError, QuorumError

DEFAULT_INTERVAL_S = 30.0
DEFAULT_TIMEOUT_S = 10.0


class AlarmKind(enum.StrEnum):
    SPLIT_VIEW = "split-view"
    ROLLBACK = "rollback"
    NO_QUORUM = "no-quorum"
    INVALID_CHECKPOINT = "invalid-checkpoint"
    EVIDENCE = "evidence"


class WarningKind(enum.StrEnum):
    UNREACHABLE = "unreachable"
    NO_CHECKPOINT = "no-checkpoint"
    NO_PROOF = "no-proof"
    BAD_ANSWER = "bad-answer"


@dataclass(frozen=True, slots=True)
class Alarm:
    kind: AlarmKind
    node: str
    detail: str
    head: Head | None = None
    other: Head | None = None
    evidence: dict | None = None
    note: str | None = None  # a checkpoint that did not verify, as served

    @property
    def key(self) -> tuple:
        def part(head: Head | None) -> tuple:
            return (head.node, head.tree_size, head.root_hash) if head else ()

        return (
            self.kind, self.node, part(self.head), part(self.other), json.dumps(self.evidence, sort_keys=True), self.note,
        )

    def to_json(self, origin: str, now_s: float) -> dict:
        document: dict[str, Any] = {
            "alarm": self.kind.value,
            "time": _iso(now_s),
            "origin": origin,
            "node": self.node,
            "detail": self.detail,
        }
        if self.head is not None:
            document.update(tree_size=self.head.tree_size, root_hash=self.head.root_hash.hex(), checkpoint=self.head.note)
        elif self.note is not None:
            document["checkpoint"] = self.note
        if self.other is not None:
            document.update(
                other_node=self.other.node, other_tree_size=self.other.tree_size,
                other_root_hash=self.other.root_hash.hex(), other_checkpoint=self.other.note,
            )
        if self.evidence is not None:
            document["evidence"] = self.evidence
        return document

    def line(self) -> str:
        return f"ALARM {self.kind.value} {self.node}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Notice:
    """A warning: something could not be checked this round."""

    kind: WarningKind
    node: str
    detail: str

    def to_json(self) -> dict:
        return {"warning": self.kind.value, "node": self.node, "detail": self.detail}

    def line(self) -> str:
        return f"warning {self.kind.value} {self.node}: {self.detail}"


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- fetching -------------------------------------------------------------------

class FetchError(Exception):
    def __init__(self, kind: WarningKind, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


class Fetcher(Protocol):
    """The three node answers the monitor reads; raises FetchError when a node cannot answer."""

    async def checkpoint(self, url: str) -> str: ...

    async def consistency(self, url: str, old_size: int, new_size: int) -> list[bytes]: ...

    async def evidence(self, url: str) -> list[dict]: ...


class _MonitorClient(AsyncClient):
    async def evidence(self) -> dict:
        return await self._request("GET", "/v1/evidence")


class HttpFetcher:
    """`Fetcher` over the node HTTP API, one session for every node."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None
        self._clients: dict[str, _MonitorClient] = {}

    async def __aenter__(self) -> "HttpFetcher":
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self, url: str) -> _MonitorClient:
        client = self._clients.get(url)
        if client is None:
            client = self._clients[url] = _MonitorClient(url, self.timeout_s, session=self._session)
        return client

    async def _call(self, call: Awaitable[Any]) -> Any:
        try:
            return await call
        except ApiError as error:
            if error.status == 0:
                raise FetchError(WarningKind.UNREACHABLE, str(error)) from None
            if error.status == 404 and error.error == "no-checkpoint":
                raise FetchError(WarningKind.NO_CHECKPOINT, "no block committed yet") from None
            raise FetchError(WarningKind.BAD_ANSWER, str(error)) from None
        except (ValueError, aiohttp.ClientError) as error:
            raise FetchError(WarningKind.BAD_ANSWER, str(error)) from None

    async def checkpoint(self, url: str) -> str:
        return await self._call(self._client(url).checkpoint())

    async def consistency(self, url: str, old_size: int, new_size: int) -> list[bytes]:
        answer = await self._call(self._client(url).consistency_proof(old_size, new_size))
        try:
            if answer["from"] != old_size or answer["to"] != new_size:
                raise ValueError(f"proof is for {answer['from']}..{answer['to']}")
            return [bytes.fromhex(node) for node in answer["consistency_path"]]
        except (KeyError, TypeError, ValueError) as error:
            raise FetchError(WarningKind.BAD_ANSWER, f"malformed consistency proof: {error}") from None

    async def evidence(self, url: str) -> list[dict]:
        answer = await self._call(self._client(url).evidence())
        items = answer.get("evidence") if isinstance(answer, dict) else None
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise FetchError(WarningKind.BAD_ANSWER, "malformed evidence list")
        return items


# -- one round ---------------------------------------------------------------------

@dataclass
class RoundReport:
    round: int
    alarms: list[Alarm] = field(default_factory=list)
    warnings: list[Notice] = field(default_factory=list)
    verified: dict[str, Head] = field(default_factory=dict)
    latest: Head | None = None

    def to_json(self, origin: str, now_s: float) -> dict:
        return {
            "round": self.round,
            "time": _iso(now_s),
            "ok": not self.alarms,
            "alarms": [alarm.to_json(origin, now_s) for alarm in self.alarms],
            "warnings": [notice.to_json() for notice in self.warnings],
            "nodes": {url: {"tree_size": h.tree_size, "root_hash": h.root_hash.hex()} for url, h in self.verified.items()},
            "latest": {"tree_size": self.latest.tree_size, "root_hash": self.latest.root_hash.hex(), "node": self.latest.node}
            if self.latest else None,
        }


def _evidence_id(item: dict) -> str:
    try:
        data = base64.b64decode(item["encoded"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error):
        data = json.dumps(item, sort_keys=True).encode()
    return hashlib.sha256(data).hexdigest()


class Monitor:
    """Checks rounds of observations against `state`; `poll` runs one round.

    Precondition: `state` was built for `trust` (MonitorState.load checks it).
    """

    def __init__(
        self, trust: Trust, urls: Sequence[str], state: MonitorState, fetcher: Fetcher, state_path: Path | None = None,
    ) -> None:
        self.trust = trust
        self.urls = list(dict.fromkeys(url.rstrip("/") for url in urls if url))
        self.state = state
        self.fetcher = fetcher
        self.state_path = state_path
        self.rounds = 0
        self._raised: set[tuple] = set()
        self._proven: set[tuple] = set()

    async def poll(self) -> RoundReport:
        self.rounds += 1
        report = RoundReport(self.rounds)
        notes = await asyncio.gather(*(self._checkpoint(url, report) for url in self.urls))
        heads = {url: head for url, head in zip(self.urls, notes) if head is not None}
        report.verified = heads
        await asyncio.gather(*(self._check_node(url, head, report) for url, head in heads.items()))
        await self._check_across(heads, report)
        for url, items in zip(self.urls, await asyncio.gather(*(self._evidence(url, report) for url in self.urls))):
            for item in items:
                identifier = _evidence_id(item)
                if identifier in self.state.evidence:
                    continue
                self.state.evidence.add(identifier)
                summary = {k: item.get(k) for k in ("authority", "height", "round", "encoded")}
                self._alarm(report, Alarm(
                    AlarmKind.EVIDENCE, url,
                    f"evidence of equivocation by {item.get('authority')!r} at height {item.get('height')} "
                    f"round {item.get('round')} (as reported by the node; not verified here)",
                    evidence=summary,
                ))
        report.latest = self.state.latest
        if self.state_path is not None:
            self.state.save(self.state_path)
        return report

    def _alarm(self, report: RoundReport, alarm: Alarm) -> None:
        if alarm.key not in self._raised:
            self._raised.add(alarm.key)
            report.alarms.append(alarm)

    async def _checkpoint(self, url: str, report: RoundReport) -> Head | None:
        try:
            note = await self.fetcher.checkpoint(url)
        except FetchError as error:
            report.warnings.append(Notice(error.kind, url, error.detail))
            return None
        try:
            checkpoint = verify_note(note, self.trust)
        except QuorumError as error:
            self._alarm(report, Alarm(AlarmKind.NO_QUORUM, url, f"checkpoint without a quorum: {error}", note=note))
            return None
        except (NoteError, CheckpointError) as error:
            self._alarm(report, Alarm(AlarmKind.INVALID_CHECKPOINT, url, f"checkpoint does not verify: {error}", note=note))
            return None
        return Head(checkpoint.tree_size, checkpoint.root_hash, note, url)

    async def _evidence(self, url: str, report: RoundReport) -> list[dict]:
        try:
            return await self.fetcher.evidence(url)
        except FetchError as error:
            report.warnings.append(Notice(error.kind, url, f"evidence: {error.detail}"))
            return []

    async def _prove(self, old: Head, new: Head, holders: Sequence[str]) -> tuple[bool | None, str]:
        """Is `old` a prefix of `new`? True, False (proven not), or None (nobody could answer)."""
        if old.tree_size > new.tree_size:
            return await self._prove(new, old, holders)
        if old.tree_size == new.tree_size:
            return old.root_hash == new.root_hash, "same size, different roots"
        if old.tree_size == 0:
            return old.root_hash == EMPTY_ROOT, "an empty tree with a non-empty root"
        key = (old.tree_size, old.root_hash, new.tree_size, new.root_hash)
        if key in self._proven:
            return True, ""
        failures = []
        for url in dict.fromkeys(holders):
            try:
                path = await self.fetcher.consistency(url, old.tree_size, new.tree_size)
            except FetchError as error:
                failures.append(f"{url}: {error.detail}")
                continue
            try:
                verify_consistency(old.tree_size, new.tree_size, old.root_hash, new.root_hash, path)
            except ProofError as error:
                return False, f"{url}'s consistency proof {old.tree_size} -> {new.tree_size} fails: {error}"
            self._proven.add(key)
            return True, ""
        return None, "; ".join(failures) or "no node holds the larger tree"

    async def _check_node(self, url: str, head: Head, report: RoundReport) -> None:
        previous = self.state.nodes.get(url)
        if previous is None:
            self.state.nodes[url] = head
            return
        if head.tree_size < previous.tree_size:
            self._alarm(report, Alarm(
                AlarmKind.ROLLBACK, url,
                f"tree size went back from {previous.tree_size} to {head.tree_size}", head, previous,
            ))
            return
        proven, why = await self._prove(previous, head, [url])
        if proven:
            self.state.nodes[url] = head
        elif proven is None:
            report.warnings.append(Notice(WarningKind.NO_PROOF, url, f"cannot prove {previous.short()} -> {head.short()}: {why}"))
        else:
            self._alarm(report, Alarm(
                AlarmKind.ROLLBACK, url, f"its tree no longer extends the one it showed before: {why}", head, previous,
            ))

    async def _check_across(self, heads: dict[str, Head], report: RoundReport) -> None:
        distinct: dict[tuple[int, bytes], Head] = {}
        holders: dict[tuple[int, bytes], list[str]] = {}
        for url, head in heads.items():
            key = (head.tree_size, head.root_hash)
            distinct.setdefault(key, head)
            holders.setdefault(key, []).append(url)
        latest = self.state.latest
        if latest is None:
            if not distinct:
                return
            # No history yet: the largest tree is the reference, the rest must be its prefixes.
            latest = max(distinct.values(), key=lambda h: h.tree_size)
        # One size, one root.
        by_size: dict[int, Head] = {latest.tree_size: latest}
        for key, head in sorted(distinct.items(), key=lambda item: item[0][0]):
            seen = by_size.setdefault(head.tree_size, head)
            if seen.root_hash != head.root_hash:
                self._alarm(report, Alarm(
                    AlarmKind.SPLIT_VIEW, head.node,
                    f"two cosigned checkpoints of size {head.tree_size} with different roots", head, seen,
                ))
        # Larger trees must extend the latest verified one, one step at a time.
        anchor = latest
        for key, head in sorted(distinct.items(), key=lambda item: item[0][0]):
            if head.tree_size <= anchor.tree_size:
                continue
            proven, why = await self._prove(anchor, head, holders[key])
            if proven:
                anchor = head
            elif proven is None:
                report.warnings.append(Notice(WarningKind.NO_PROOF, head.node, f"cannot prove {anchor.short()} -> {head.short()}: {why}"))
            else:
                self._alarm(report, Alarm(
                    AlarmKind.SPLIT_VIEW, head.node,
                    f"its checkpoint does not extend {anchor.node}'s: {why}", head, anchor,
                ))
        # Smaller trees must be prefixes of the latest, proven by a node that holds it.
        larger = [url for key, urls in holders.items() if key[0] >= latest.tree_size for url in urls]
        exact = holders.get((latest.tree_size, latest.root_hash), [])
        for key, head in distinct.items():
            if head.tree_size >= latest.tree_size:
                continue
            proven, why = await self._prove(head, latest, [*exact, latest.node, *larger])
            if proven is None:
                report.warnings.append(Notice(WarningKind.NO_PROOF, head.node, f"cannot prove {head.short()} -> {latest.short()}: {why}"))
            elif not proven:
                self._alarm(report, Alarm(
                    AlarmKind.SPLIT_VIEW, head.node,
                    f"its checkpoint is not a prefix of {latest.node}'s: {why}", head, latest,
                ))
        self.state.latest = anchor


# -- the loop -------------------------------------------------------------------

def monitor_urls(trust: Trust, extra: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(u.rstrip("/") for u in [*(a.url for a in trust.authorities), *extra] if u))


async def run_monitor(
    trust: Trust,
    urls: Sequence[str],
    *,
    state_path: Path | None = None,
    interval_s: float = DEFAULT_INTERVAL_S,
    iterations: int | None = None,
    webhook_lines: bool = False,
    json_rounds: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    out: TextIO | None = None,
    err: TextIO | None = None,
    fetcher: Fetcher | None = None,
    clock: Callable[[], float] | None = None,
) -> int:
    """Poll until `iterations` rounds ran (None: forever); returns the exit status.

    Without `webhook_lines`, the first round with an alarm ends the run
    (status 1). With it, each alarm is one JSON line on `out` and the run goes
    on; a bounded run then ends with status 1 if any alarm was raised.
    Warnings go to `err`. Raises MonitorError for an unusable state file.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    clock = clock or time.time
    if not urls:
        raise MonitorError("no node to watch: the trust file lists no URLs and none were given")
    state = MonitorState.load(state_path, trust) if state_path is not None else MonitorState(trust.origin, trust.genesis_hash)
    alarmed = False
    async with (HttpFetcher(timeout_s) if fetcher is None else _Borrowed(fetcher)) as active:
        monitor = Monitor(trust, urls, state, active, state_path)
        round_number = 0
        while iterations is None or round_number < iterations:
            if round_number:
                await asyncio.sleep(interval_s)
            round_number += 1
            report = await monitor.poll()
            now_s = clock()
            for notice in report.warnings:
                print(notice.line(), file=err, flush=True)
            if webhook_lines:
                for alarm in report.alarms:
                    print(json.dumps(alarm.to_json(trust.origin, now_s), sort_keys=True), file=out, flush=True)
            elif json_rounds:
                print(json.dumps(report.to_json(trust.origin, now_s)), file=out, flush=True)
            else:
                for alarm in report.alarms:
                    print(alarm.line(), file=out, flush=True)
                print(_summary(report, len(urls)), file=out, flush=True)
            if report.alarms:
                alarmed = True
                if not webhook_lines:
                    return 1
    return 1 if alarmed else 0


class _Borrowed:
    """An async context manager around a fetcher the caller owns."""

    def __init__(self, fetcher: Fetcher) -> None:
        self.fetcher = fetcher

    async def __aenter__(self) -> Fetcher:
        return self.fetcher

    async def __aexit__(self, *exc: object) -> None:
        return None


def _summary(report: RoundReport, nodes: int) -> str:
    latest = report.latest
    state = f"latest verified {latest.short()} from {latest.node}" if latest else "nothing verified yet"
    verdict = f"{len(report.alarms)} ALARMS" if report.alarms else "no alarms"
    return f"round {report.round}: {len(report.verified)}/{nodes} checkpoints verified, {state}; {verdict}"
