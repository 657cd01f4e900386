"""Peer links over real sockets on 127.0.0.1: handshake, frames, refusals.

Each node is a bare aiohttp app serving `/v1/peer/ws` with its `Peers`;
what a node's handler receives, and each accepted link's end, are put on
queues the tests await (no sleeps, no polling).
"""

from __future__ import annotations

import asyncio
import os

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from ledger.crypto import KeyPair
from ledger.genesis import Authority, AuthoritySet
from node import peers as peers_module
from node.peer_session import SessionError
from node.peers import PEER_PATH, Peers, dial
from tests.conftest import make_consortium, seeded_key

WAIT_S = 10.0
CONSORTIUM = make_consortium(4)
AUTHORITIES = CONSORTIUM.genesis.authority_set
OUTSIDER = seeded_key("outsider")


def _authority(key: KeyPair) -> Authority:
    return Authority(key.name, key.public_key)


class Node:
    """One authority's `Peers` behind a real server."""

    def __init__(self, key: KeyPair) -> None:
        self.key = key
        self.received: asyncio.Queue[tuple[str, str, bytes]] = asyncio.Queue()
        self.links_ended: asyncio.Queue[None] = asyncio.Queue()
        self.peers = Peers(key.name, key, AUTHORITIES, {}, lambda *frame: self.received.put_nowait(frame))
        app = web.Application()
        app.router.add_get(PEER_PATH, self._accept)
        self.server = TestServer(app, host="127.0.0.1")

    async def _accept(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self.peers.accept(request)
        finally:
            self.links_ended.put_nowait(None)

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    async def next_frame(self) -> tuple[str, str, bytes]:
        return await asyncio.wait_for(self.received.get(), WAIT_S)

    async def link_ended(self) -> None:
        await asyncio.wait_for(self.links_ended.get(), WAIT_S)


@pytest.fixture
async def nodes():
    made = [Node(key) for key in CONSORTIUM.authorities[:2]]
    for node in made:
        await node.server.start_server()
    yield made
    for node in made:  # dialers first: their closes end the accepted links the servers wait for
        await node.peers.close()
    for node in made:
        await node.server.close()


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as client:
        yield client


async def test_two_nodes_exchange_frames_over_authenticated_links(nodes):
    a, b = nodes
    a.peers.update(AUTHORITIES, {b.key.name: b.url})
    b.peers.update(AUTHORITIES, {a.key.name: a.url})
    a.peers.send("consensus", b"vote", to="inst-1")  # queued before the link is up
    a.peers.send("records", b"")
    b.peers.send("want", b"hashes")
    await a.peers.start()
    await b.peers.start()
    assert await b.next_frame() == ("inst-0", "consensus", b"vote")
    assert await b.next_frame() == ("inst-0", "records", b"")
    assert await a.next_frame() == ("inst-1", "want", b"hashes")
    assert a.peers.connected == {"inst-1"} and b.peers.frames_dropped == 0
    big = os.urandom(1 << 20)
    a.peers.send("records", big)
    assert await b.next_frame() == ("inst-0", "records", big)


async def test_an_outsider_is_refused_at_the_handshake(nodes, session):
    _, b = nodes
    with pytest.raises(SessionError):
        async with dial(session, b.url, OUTSIDER.name, OUTSIDER, _authority(b.key)):
            pass
    await b.link_ended()
    # Claiming an authority's name gets as far as the confirm, which its key cannot sign.
    async with dial(session, b.url, "inst-0", OUTSIDER, _authority(b.key)) as link:
        await link.send("consensus", b"forged")
        await asyncio.wait_for(link.wait_closed(), WAIT_S)
    await b.link_ended()
    assert b.peers.frames_dropped == 2 and b.received.empty()


async def test_the_dialer_refuses_an_acceptor_with_another_key(nodes, session):
    _, b = nodes
    with pytest.raises(SessionError):
        async with dial(session, b.url, "inst-0", CONSORTIUM.authorities[0], _authority(CONSORTIUM.authorities[2])):
            pass


async def _raw(session: aiohttp.ClientSession, node: Node, *frames: bytes | str) -> aiohttp.WSMessage:
    """Send `frames` on a fresh, unauthenticated link; what the acceptor does next."""
    async with session.ws_connect(node.url + PEER_PATH) as ws:
        for frame in frames:
            await (ws.send_str(frame) if isinstance(frame, str) else ws.send_bytes(frame))
        return await asyncio.wait_for(ws.receive(), WAIT_S)


async def test_garbage_closes_the_link_and_the_acceptor_carries_on(nodes, session):
    a, b = nodes
    for frames in ([os.urandom(100)], ["hello"], [b""], [os.urandom(1 << 16)]):
        message = await _raw(session, b, *frames)
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        await b.link_ended()
    assert b.peers.frames_dropped == 4
    # After a good handshake, a frame that fails its tag closes the link too.
    async with dial(session, b.url, "inst-0", a.key, _authority(b.key)) as link:
        await link.send("consensus", b"first")
        await link.ws.send_bytes(os.urandom(40))
        await link.send("consensus", b"after garbage")  # never delivered: the stream is no longer trusted
        await asyncio.wait_for(link.wait_closed(), WAIT_S)
    await b.link_ended()
    assert await b.next_frame() == ("inst-0", "consensus", b"first")
    assert b.received.empty() and b.peers.frames_dropped == 5
    # A text frame on an authenticated link is no better.
    async with dial(session, b.url, "inst-0", a.key, _authority(b.key)) as link:
        await link.ws.send_str("hello")
        await asyncio.wait_for(link.wait_closed(), WAIT_S)
    await b.link_ended()
    # And the acceptor still takes honest links.
    async with dial(session, b.url, "inst-0", a.key, _authority(b.key)) as link:
        await link.send("want", b"still here")
        assert await b.next_frame() == ("inst-0", "want", b"still here")


async def test_a_stalled_handshake_is_cut_off(nodes, session, monkeypatch):
    _, b = nodes
    monkeypatch.setattr(peers_module, "HANDSHAKE_TIMEOUT_S", 0.2)
    async with session.ws_connect(b.url + PEER_PATH) as ws:
        message = await asyncio.wait_for(ws.receive(), WAIT_S)  # we never say hello
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    await b.link_ended()
    assert b.peers.frames_dropped == 1


async def test_frames_from_a_removed_authority_are_dropped_on_a_live_link(nodes, session):
    a, b = nodes
    async with dial(session, b.url, "inst-0", a.key, _authority(b.key)) as link:
        await link.send("consensus", b"before")
        assert await b.next_frame() == ("inst-0", "consensus", b"before")
        b.peers.update(AuthoritySet(AUTHORITIES.authorities[1:]), {})  # governance removed inst-0
        await link.send("consensus", b"after")
    await b.link_ended()  # every frame of the link was read before it ended
    assert b.received.empty() and b.peers.frames_dropped == 1


async def test_frames_from_a_blocked_peer_are_dropped(nodes, session):
    a, b = nodes
    b.peers.block({"inst-0"})
    async with dial(session, b.url, "inst-0", a.key, _authority(b.key)) as link:
        await link.send("consensus", b"cut off")
    await b.link_ended()
    assert b.received.empty() and b.peers.frames_dropped == 0  # a partition, not a fault


def test_sending_an_unknown_kind_is_the_callers_error():
    peers = Peers("inst-0", CONSORTIUM.authorities[0], AUTHORITIES, {"inst-1": "http://127.0.0.1:1"}, print)
    with pytest.raises(ValueError):
        peers.send("gossip", b"x")


async def test_each_link_coming_up_is_announced_and_healing_a_partition_counts(nodes):
    a, b = nodes
    ups: asyncio.Queue[str] = asyncio.Queue()
    a.peers.on_link_up = ups.put_nowait
    a.peers.update(AUTHORITIES, {b.key.name: b.url})
    await a.peers.start()
    assert await asyncio.wait_for(ups.get(), WAIT_S) == "inst-1"
    a.peers.block({"inst-1"})
    a.peers.block({"inst-1"})  # still blocked: nothing came up
    assert ups.empty()
    a.peers.block(set())
    assert ups.get_nowait() == "inst-1" and ups.empty()
    a.peers.block({"inst-2"})  # never linked: nothing to announce when it heals
    a.peers.block(set())
    assert ups.empty()
