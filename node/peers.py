"""Authority-to-authority transport: one persistent, authenticated WebSocket per peer and direction.

Why WebSockets: aiohttp serves and dials them natively, they keep one TCP
connection open for the life of the link (no per-message request cost), frame
messages for us, and carry binary frames both ways. Each node dials every peer
(`/v1/peer/ws`) and sends only on the links it dialed; it receives on the
links peers dialed to it. A broken link is redialed with exponential backoff
and jitter; messages queued for a peer while it is down are dropped once the
queue is full, since consensus retransmits what matters.

A link opens with the handshake of `node.peer_session`: the dialer and the
acceptor each sign, with their authority keys under `PEER_CONTEXT`, a
transcript binding both names and both fresh X25519 keys, and derive a
session key. After it the dialer sends data frames `tag || kind || payload`,
each tagged with the session key and its sequence number; the acceptor sends
nothing. So a link costs two signatures and two verifications once, not one
of each per frame, and a replayed, reordered or injected frame fails its tag.

The acceptor closes the link when the handshake fails or does not finish
within HANDSHAKE_TIMEOUT_S, and at the first frame that fails its tag (after
one, the stream cannot be trusted); the dialer sees the close and redials.
Each close is counted in `frames_dropped` and logged. Nothing a peer sends
can raise out of this module.

The authority set changes by governance (`update`): every frame is checked
against the set in force when it arrives (one from a dialer no longer in it,
or whose key changed, is dropped and counted), links to added authorities
are dialed and links to removed ones closed, while links to the authorities
that stay are kept. A node that is not an authority (a follower) dials no
one: no acceptor would finish its handshake.

`on_link_up(peer)`, if set, is called each time a link to `peer` comes up:
frames queued or sent while it was down may be lost, and what only this
node holds (its pending records) must reach the peer all the same.

For tests, `block` names peers whose traffic is dropped both ways (a
partition without touching the kernel); unblocking a peer counts as its link
coming up. `dial` is public so that tests can speak to a node as an
authority would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web

from ledger import crypto
from ledger.genesis import Authority, AuthoritySet
from node import peer_session
from node.peer_session import Opener, Sealer, SessionError

log = logging.getLogger("lacre.peers")

FRAME_BYTES_MAX = 64 << 20
SEND_QUEUE_MAX = 10_000
BACKOFF_INITIAL_S = 0.05
BACKOFF_MAX_S = 2.0
HEARTBEAT_S = 5.0
HANDSHAKE_TIMEOUT_S = 10.0
PEER_PATH = "/v1/peer/ws"

Handler = Callable[[str, str, bytes], Awaitable[None] | None]


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
        self.on_link_up: Callable[[str], None] | None = None
        self.blocked: set[str] = set()
        self.connected: set[str] = set()
        self.frames_dropped = 0
        self._queues: dict[str, asyncio.Queue[tuple[str, bytes]]] = {}
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

    def block(self, peers: set[str]) -> None:
        """Drop all traffic with `peers` from now on (and no longer with any other)."""
        healed = self.blocked - peers
        self.blocked = set(peers)
        for peer in sorted(healed & self.connected):
            self._link_up(peer)

    def _link_up(self, peer: str) -> None:
        if self.on_link_up is not None:
            try:
                self.on_link_up(peer)
            except Exception:
                log.exception("on_link_up(%s) failed", peer)

    def send(self, kind: str, payload: bytes, to: str | None = None, exclude: str | None = None) -> None:
        """Queue `payload` for one peer or all (but `exclude`); never blocks.

        Frames are sealed when sent, by the session of the link they go out on.
        """
        if kind not in peer_session.KIND_CODES:
            raise ValueError(f"no frame kind {kind!r}")
        for peer, queue in self._queues.items():
            if (to is not None and peer != to) or peer == exclude or peer in self.blocked:
                continue
            try:
                queue.put_nowait((kind, payload))
            except asyncio.QueueFull:
                self.frames_dropped += 1

    async def _dial(self, peer: str, url: str, queue: asyncio.Queue[tuple[str, bytes]]) -> None:
        loop = asyncio.get_running_loop()
        backoff = BACKOFF_INITIAL_S
        while True:
            up_at: float | None = None
            try:
                authority = self.authorities.by_name(peer)
                if authority is None:
                    raise SessionError(f"{peer} is not an authority")
                async with dial(self._session, url, self.name, self.key, authority) as link:  # type: ignore[arg-type]
                    up_at = loop.time()
                    self.connected.add(peer)
                    log.info("link to %s up", peer)
                    if peer not in self.blocked:
                        self._link_up(peer)
                    await self._forward(peer, link, queue)
                log.debug("link to %s closed by the peer", peer)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # any failure of the link or its handshake: redial
                log.debug("link to %s down: %s", peer, str(error) or type(error).__name__)
            finally:
                if self._dials.get(peer) in (None, asyncio.current_task()):  # not a newer link's flag
                    self.connected.discard(peer)
            # Back off afresh only after a link that lasted: an acceptor that
            # closes each link at once (it refused our confirm) is not redialed hot.
            if up_at is not None and loop.time() - up_at >= BACKOFF_MAX_S:
                backoff = BACKOFF_INITIAL_S
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _forward(self, peer: str, link: "Link", queue: asyncio.Queue[tuple[str, bytes]]) -> None:
        """Send queued frames on `link` until it fails or the acceptor closes it."""

        async def send_queued() -> None:
            while True:
                kind, payload = await queue.get()
                if peer not in self.blocked:
                    await link.send(kind, payload)

        # Watching for the close as well as sending notices a link the
        # acceptor closed (a refused frame) even while nothing is queued.
        tasks = [asyncio.create_task(send_queued()), asyncio.create_task(link.wait_closed())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for task in done:
            task.result()  # a failed send is the link's failure

    async def accept(self, request: web.Request) -> web.WebSocketResponse:
        """The `/v1/peer/ws` handler: run the acceptor's handshake, then read frames until the link ends."""
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=FRAME_BYTES_MAX)
        await ws.prepare(request)
        try:
            opener = await asyncio.wait_for(self._handshake(ws), HANDSHAKE_TIMEOUT_S)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # refused, malformed, too slow, or the connection dropped
            self.frames_dropped += 1
            log.warning("refused a peer link from %s: %s", request.remote, str(error) or type(error).__name__)
            await ws.close()
            return ws
        await self._receive(ws, opener)
        await ws.close()
        return ws

    async def _handshake(self, ws: web.WebSocketResponse) -> Opener:
        hello = _binary(await ws.receive())
        reply, accepting = peer_session.accept(self.name, self.key, self.authorities, hello)
        await ws.send_bytes(reply)
        return accepting.finish(_binary(await ws.receive()))

    async def _receive(self, ws: web.WebSocketResponse, opener: Opener) -> None:
        """Hand each frame of an authenticated link to the handler, until the link ends or a frame is bad."""
        sender = opener.dialer.name
        async for message in ws:
            try:
                kind, payload = opener.open(_binary(message))
            except SessionError as error:
                self.frames_dropped += 1
                log.warning("closing the link from %s: %s", sender, error)
                return
            # Checked after the tag, so that the session's seq stays in step.
            if sender in self.blocked:
                continue
            if self.authorities.by_name(sender) != opener.dialer:  # removed, or its key changed
                self.frames_dropped += 1
                continue
            try:
                result = self.handler(sender, kind, payload)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("handling %s from %s failed", kind, sender)


def _binary(message: aiohttp.WSMessage) -> bytes:
    if message.type != aiohttp.WSMsgType.BINARY:
        raise SessionError(f"expected a binary frame, not {message.type.name}")
    return message.data


class Link:
    """A dialed link whose handshake is done: seals and sends data frames."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, sealer: Sealer) -> None:
        self.ws = ws
        self.sealer = sealer

    async def send(self, kind: str, payload: bytes) -> None:
        """Seal and send one frame; frames arrive in the order they are sent."""
        await self.ws.send_bytes(self.sealer.seal(kind, payload))

    async def wait_closed(self) -> None:
        """Return when the link ends: the acceptor never sends after the handshake, so anything it does ends it."""
        await self.ws.receive()


@contextlib.asynccontextmanager
async def dial(
    session: aiohttp.ClientSession, url: str, name: str, key: crypto.KeyPair, peer: Authority,
    handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S,
) -> AsyncIterator[Link]:
    """Connect to `peer` (its key as this node trusts it) at `url` as authority `name`, and run the handshake.

    Raises SessionError if the acceptor refuses or answers wrongly,
    TimeoutError if it does not answer within `handshake_timeout_s`, and
    aiohttp's errors if it cannot be reached. An acceptor that refuses only
    the confirm (a wrong key for `name`) closes the link after this returns.
    """
    async with session.ws_connect(
        url.rstrip("/") + PEER_PATH, heartbeat=HEARTBEAT_S, max_msg_size=FRAME_BYTES_MAX,
    ) as ws:
        dialing = peer_session.dial(name, key, peer)

        async def handshake() -> Sealer:
            await ws.send_bytes(dialing.hello)
            reply = await ws.receive()
            if reply.type != aiohttp.WSMsgType.BINARY:
                raise SessionError(f"{peer.name} refused the handshake ({reply.type.name})")
            confirm, sealer = dialing.finish(reply.data)
            await ws.send_bytes(confirm)
            return sealer

        yield Link(ws, await asyncio.wait_for(handshake(), handshake_timeout_s))
