"""Authority-to-authority transport: one persistent WebSocket per peer and direction.

Why WebSockets: aiohttp serves and dials them natively, they keep one TCP
connection open for the life of the link (no per-message request cost), frame
messages for us, and carry binary frames both ways. Each node dials every peer
(`/v1/peer/ws`) and sends only on the links it dialed; it receives on the
links peers dialed to it. A broken link is redialed with exponential backoff
and jitter; messages queued for a peer while it is down are dropped once the
queue is full, since consensus retransmits what matters.

Every frame is an envelope signed by the sending authority:

    {"from": name, "kind": "consensus" | "records" | "want", "payload": bin, "sig": bin}

with the signature over `PEER_CONTEXT || encode({"from", "kind", "payload"})`.
Frames from keys outside the authority set, badly signed or malformed are
dropped and counted; nothing a peer sends can raise out of this module.

The authority set changes by governance (`update`): frames are then checked
against the new set at once, links to added authorities are dialed and links
to removed ones closed, while links to the authorities that stay are kept. A
node that is not an authority (a follower) dials no one: its frames would be
dropped, since only authorities sign envelopes.

For tests, `blocked` names peers whose traffic is dropped both ways (a
partition without touching the kernel).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from ledger import codec, crypto
from ledger.genesis import AuthoritySet

log = logging.getLogger("lacre.peers")

FRAME_BYTES_MAX = 64 << 20
SEND_QUEUE_MAX = 10_000
BACKOFF_INITIAL_S = 0.05
BACKOFF_MAX_S = 2.0
HEARTBEAT_S = 5.0

Handler = Callable[[str, str, bytes], Awaitable[None] | None]


class EnvelopeError(ValueError):
    """A frame that is not a well-formed envelope signed by an authority."""


@dataclass(frozen=True, slots=True)
class Envelope:
    sender: str
    kind: str
    payload: bytes

    def seal(self, key: crypto.KeyPair) -> bytes:
        body = {"from": self.sender, "kind": self.kind, "payload": self.payload}
        signature = key.sign(crypto.PEER_CONTEXT, codec.encode(body))
        return codec.encode({**body, "sig": signature})

    @classmethod
    def open(cls, frame: bytes, authorities: AuthoritySet) -> "Envelope":
        try:
            mapping = codec.decode(frame)
        except codec.CodecError as error:
            raise EnvelopeError(str(error)) from None
        if type(mapping) is not dict or set(mapping) != {"from", "kind", "payload", "sig"}:
            raise EnvelopeError("envelope fields are from, kind, payload, sig")
        sender, kind, payload, signature = mapping["from"], mapping["kind"], mapping["payload"], mapping["sig"]
        if type(sender) is not str or type(kind) is not str or type(payload) is not bytes or type(signature) is not bytes:
            raise EnvelopeError("envelope field types")
        authority = authorities.by_name(sender)
        if authority is None:
            raise EnvelopeError(f"{sender!r} is not an authority")
        try:
            crypto.verify(
                authority.public_key, crypto.PEER_CONTEXT,
                codec.encode({"from": sender, "kind": kind, "payload": payload}), signature,
            )
        except crypto.SignatureError:
            raise EnvelopeError(f"bad envelope signature from {sender}") from None
        return cls(sender, kind, payload)


class Peers:
    """Links to every other authority; `handler(sender, kind, payload)` gets what arrives."""

    def __init__(
        self, name: str, key: crypto.KeyPair, authorities: AuthoritySet, urls: dict[str, str], handler: Handler
    ) -> None:
        self.name = name
        self.key = key
        self.authorities = authorities
        self.urls: dict[str, str] = {}
        self.handler = handler
        self.blocked: set[str] = set()
        self.connected: set[str] = set()
        self.frames_dropped = 0
        self._queues: dict[str, asyncio.Queue[bytes]] = {}
        self._dials: dict[str, asyncio.Task] = {}
        self._closing: list[asyncio.Task] = []
        self._session: aiohttp.ClientSession | None = None
        self.update(authorities, urls)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        for peer, url in self.urls.items():
            self._start_dial(peer, url)

    def update(self, authorities: AuthoritySet, urls: dict[str, str]) -> None:
        """Accept frames from `authorities` only, and keep links to exactly the peers in `urls`.

        Links to peers whose URL is unchanged stay up (and keep their queued
        frames); the others are closed or dialed. Before `start`, only
        records what to dial.
        """
        self.authorities = authorities
        self._closing = [task for task in self._closing if not task.done()]
        wanted = {peer: url.rstrip("/") for peer, url in urls.items() if peer != self.name}
        for peer in [p for p, url in self.urls.items() if wanted.get(p) != url]:
            del self.urls[peer], self._queues[peer]
            self.connected.discard(peer)
            task = self._dials.pop(peer, None)
            if task is not None:
                task.cancel()
                self._closing.append(task)
        for peer, url in wanted.items():
            if peer not in self.urls:
                self.urls[peer] = url
                self._queues[peer] = asyncio.Queue(SEND_QUEUE_MAX)
                if self._session is not None:
                    self._start_dial(peer, url)

    def _start_dial(self, peer: str, url: str) -> None:
        self._dials[peer] = asyncio.create_task(self._dial(peer, url, self._queues[peer]), name=f"peer-{peer}")

    async def close(self) -> None:
        tasks = list(self._dials.values()) + self._closing
        self._dials.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._session is not None:
            await self._session.close()

    def send(self, kind: str, payload: bytes, to: str | None = None, exclude: str | None = None) -> None:
        """Queue `payload` for one peer or all (but `exclude`); never blocks."""
        frame = Envelope(self.name, kind, payload).seal(self.key)
        for peer, queue in self._queues.items():
            if (to is not None and peer != to) or peer == exclude or peer in self.blocked:
                continue
            try:
                queue.put_nowait(frame)
            except asyncio.QueueFull:
                self.frames_dropped += 1

    async def _dial(self, peer: str, url: str, queue: asyncio.Queue[bytes]) -> None:
        backoff = BACKOFF_INITIAL_S
        while True:
            try:
                async with self._session.ws_connect(  # type: ignore[union-attr]
                    url + "/v1/peer/ws", heartbeat=HEARTBEAT_S, max_msg_size=FRAME_BYTES_MAX,
                    headers={"X-Lacre-Authority": self.name},
                ) as ws:
                    self.connected.add(peer)
                    backoff = BACKOFF_INITIAL_S
                    log.info("link to %s up", peer)
                    while True:
                        frame = await queue.get()
                        if peer in self.blocked:
                            continue
                        await ws.send_bytes(frame)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # any failure of the link: redial
                log.debug("link to %s down: %s", peer, error)
            finally:
                if self._dials.get(peer) in (None, asyncio.current_task()):  # not a newer link's flag
                    self.connected.discard(peer)
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def accept(self, request: web.Request) -> web.WebSocketResponse:
        """The `/v1/peer/ws` handler: read envelopes until the peer hangs up."""
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=FRAME_BYTES_MAX)
        await ws.prepare(request)
        async for message in ws:
            if message.type != aiohttp.WSMsgType.BINARY:
                self.frames_dropped += 1
                continue
            try:
                envelope = Envelope.open(message.data, self.authorities)
            except EnvelopeError as error:
                self.frames_dropped += 1
                log.warning("dropped frame: %s", error)
                continue
            if envelope.sender in self.blocked or envelope.sender == self.name:
                continue
            try:
                result = self.handler(envelope.sender, envelope.kind, envelope.payload)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("handling %s from %s failed", envelope.kind, envelope.sender)
        return ws
