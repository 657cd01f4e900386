"""The peer session as a spec: the handshake's messages and refusals, the frame layout and tag.

No sockets: messages are handed from one side to the other as bytes.
Ephemeral keys are seeded so that every failure replays.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import nacl.bindings
import nacl.public
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import codec, crypto
from ledger.genesis import Authority
from node import peer_session
from node.peer_session import Opener, Sealer, SessionError, Transcript, accept, dial
from tests.conftest import make_consortium, seeded_key

CONSORTIUM = make_consortium(4)
AUTHORITIES = CONSORTIUM.genesis.authority_set
DIALER, ACCEPTOR, OTHER = CONSORTIUM.authorities[0], CONSORTIUM.authorities[1], CONSORTIUM.authorities[2]
OUTSIDER = seeded_key("outsider")


def _authority(key: crypto.KeyPair) -> Authority:
    return Authority(key.name, key.public_key)


def _ephemeral(label: str) -> nacl.public.PrivateKey:
    return nacl.public.PrivateKey(hashlib.sha256(b"ephemeral " + label.encode()).digest())


def _handshake(session: str = "1") -> tuple[list[bytes], Sealer, Opener]:
    """One whole handshake DIALER -> ACCEPTOR: its three messages, and both sides' results."""
    dialing = dial(DIALER.name, DIALER, _authority(ACCEPTOR), _ephemeral("dialer " + session))
    reply, accepting = accept(ACCEPTOR.name, ACCEPTOR, AUTHORITIES, dialing.hello, _ephemeral("acceptor " + session))
    confirm, sealer = dialing.finish(reply)
    return [dialing.hello, reply, confirm], sealer, accepting.finish(confirm)


# -- the handshake -------------------------------------------------------------


def test_both_sides_derive_the_same_key_from_the_spec():
    (hello, reply, confirm), sealer, opener = _handshake()
    assert codec.decode(hello) == {"from": "inst-0", "to": "inst-1", "eph": bytes(_ephemeral("dialer 1").public_key)}
    accepted = codec.decode(reply)
    assert set(accepted) == {"from", "eph", "sig"} and accepted["from"] == "inst-1"
    assert set(codec.decode(confirm)) == {"sig"}

    dialer_eph, acceptor_eph = bytes(_ephemeral("dialer 1").public_key), accepted["eph"]

    def transcript(role: str) -> bytes:
        return codec.encode({
            "role": role, "dialer": "inst-0", "acceptor": "inst-1", "dialer_eph": dialer_eph, "acceptor_eph": acceptor_eph,
        })

    crypto.verify(ACCEPTOR.public_key, crypto.PEER_CONTEXT, transcript("accept"), accepted["sig"])
    crypto.verify(DIALER.public_key, crypto.PEER_CONTEXT, transcript("dial"), codec.decode(confirm)["sig"])
    shared = nacl.bindings.crypto_scalarmult(bytes(_ephemeral("dialer 1")), acceptor_eph)
    key = hashlib.blake2b(transcript("key"), digest_size=32, key=shared, person=b"lacre/peer/v1").digest()
    assert sealer.session_key == opener.session_key == key
    assert sealer.peer == "inst-1" and opener.dialer == _authority(DIALER)


def test_sessions_get_fresh_keys():
    _, first, _ = _handshake("1")
    _, second, _ = _handshake("2")
    assert first.session_key != second.session_key


def _hello(name: str = DIALER.name, key: crypto.KeyPair = DIALER, to: crypto.KeyPair = ACCEPTOR) -> bytes:
    return dial(name, key, _authority(to), _ephemeral("dialer")).hello


def _accept(hello: bytes, name: str = ACCEPTOR.name, key: crypto.KeyPair = ACCEPTOR) -> tuple[bytes, object]:
    return accept(name, key, AUTHORITIES, hello, _ephemeral("acceptor"))


def _raw_hello(**fields) -> bytes:
    return codec.encode({"from": DIALER.name, "to": ACCEPTOR.name, "eph": bytes(_ephemeral("d").public_key)} | fields)


def _impostor_confirm() -> None:
    """An outsider claims an authority's name: the hello passes, its confirm does not."""
    dialing = dial(DIALER.name, OUTSIDER, _authority(ACCEPTOR), _ephemeral("dialer"))
    reply, accepting = _accept(dialing.hello)
    confirm, _ = dialing.finish(reply)
    accepting.finish(confirm)


def _forged_accept() -> None:
    """Someone answers as the acceptor but signs with another key."""
    dialing = dial(DIALER.name, DIALER, _authority(ACCEPTOR), _ephemeral("dialer"))
    reply, _ = accept(ACCEPTOR.name, OTHER, AUTHORITIES, dialing.hello, _ephemeral("acceptor"))
    dialing.finish(reply)


def _answered_by_another() -> None:
    """The node at the dialed URL is another authority, answering honestly as itself."""
    dialing = dial(DIALER.name, DIALER, _authority(ACCEPTOR), _ephemeral("dialer"))
    reply, _ = accept(OTHER.name, OTHER, AUTHORITIES, _hello(to=OTHER), _ephemeral("acceptor"))
    dialing.finish(reply)


def _reflected_signature() -> None:
    """The acceptor's own signature sent back to it as the dialer's confirm."""
    dialing = dial(DIALER.name, DIALER, _authority(ACCEPTOR), _ephemeral("dialer"))
    reply, accepting = _accept(dialing.hello)
    accepting.finish(codec.encode({"sig": codec.decode(reply)["sig"]}))


def _wrong_role() -> None:
    """The dialer's key, but over the transcript of the other role."""
    dialing = dial(DIALER.name, DIALER, _authority(ACCEPTOR), _ephemeral("dialer"))
    reply, accepting = _accept(dialing.hello)
    accepted = codec.decode(reply)
    transcript = Transcript(DIALER.name, ACCEPTOR.name, bytes(_ephemeral("dialer").public_key), accepted["eph"])
    accepting.finish(codec.encode({"sig": DIALER.sign(crypto.PEER_CONTEXT, transcript.encode("accept"))}))


def _replayed_confirm() -> None:
    """A recorded session's hello and confirm, replayed: the acceptor's fresh key differs."""
    (hello, _, confirm), _, _ = _handshake("old")
    _, accepting = accept(ACCEPTOR.name, ACCEPTOR, AUTHORITIES, hello, _ephemeral("acceptor new"))
    accepting.finish(confirm)


def _replayed_accept() -> None:
    """A recorded session's accept, replayed to a new dial: the dialer's fresh key differs."""
    (_, reply, _), _, _ = _handshake("old")
    dial(DIALER.name, DIALER, _authority(ACCEPTOR), _ephemeral("dialer new")).finish(reply)


def _low_order_accept() -> None:
    """The acceptor itself signs a low-order key, which would make the shared secret zero."""
    dialing = dial(DIALER.name, DIALER, _authority(ACCEPTOR), _ephemeral("dialer"))
    transcript = Transcript(DIALER.name, ACCEPTOR.name, bytes(_ephemeral("dialer").public_key), bytes(32))
    signature = ACCEPTOR.sign(crypto.PEER_CONTEXT, transcript.encode("accept"))
    dialing.finish(codec.encode({"from": ACCEPTOR.name, "eph": bytes(32), "sig": signature}))


REFUSED_HANDSHAKES: dict[str, Callable[[], object]] = {
    "hello from an outsider": lambda: _accept(_hello(OUTSIDER.name, OUTSIDER)),
    "outsider with an authority's name": _impostor_confirm,
    "hello for another node": lambda: _accept(_hello(to=OTHER)),
    "hello from the acceptor's own name": lambda: _accept(_hello(ACCEPTOR.name, ACCEPTOR, ACCEPTOR)),
    "forged accept signature": _forged_accept,
    "accept from another node than dialed": _answered_by_another,
    "reflected signature": _reflected_signature,
    "dialer signature for the accept role": _wrong_role,
    "confirm replayed from an old session": _replayed_confirm,
    "accept replayed to a new session": _replayed_accept,
    "low-order ephemeral key in the hello": lambda: _accept(_raw_hello(eph=bytes(32))),
    "low-order ephemeral key in the accept": _low_order_accept,
    "short ephemeral key": lambda: _accept(_raw_hello(eph=b"\x09")),
    "extra hello field": lambda: _accept(_raw_hello(extra=1)),
    "missing hello field": lambda: _accept(codec.encode({"from": DIALER.name, "to": ACCEPTOR.name})),
    "name as bytes": lambda: _accept(_raw_hello(**{"from": b"inst-0"})),
    "not MessagePack": lambda: _accept(b"\xc1garbage"),
    "not a map": lambda: _accept(codec.encode(["inst-0", "inst-1"])),
    "text, not bytes": lambda: _accept("hello"),  # type: ignore[arg-type]
    "empty confirm": lambda: _handshake_with_confirm(b""),
    "confirm with a short signature": lambda: _handshake_with_confirm(codec.encode({"sig": b"\x00" * 10})),
}


def _handshake_with_confirm(confirm: bytes) -> None:
    _, accepting = _accept(_hello())
    accepting.finish(confirm)  # type: ignore[attr-defined]


@pytest.mark.parametrize("attempt", REFUSED_HANDSHAKES.values(), ids=REFUSED_HANDSHAKES.keys())
def test_refused_handshakes(attempt):
    with pytest.raises(SessionError):
        attempt()


_fields = st.dictionaries(
    st.sampled_from(["from", "to", "eph", "sig", "extra"]),
    st.none() | st.integers(0, 2**64 - 1) | st.text(max_size=8) | st.binary(max_size=70),
    max_size=5,
)


@given(st.binary(max_size=200) | _fields.map(codec.encode))
def test_whatever_a_peer_sends_in_the_handshake_raises_only_session_error(data):
    _, accepting = _accept(_hello())
    for step in (lambda: _accept(data), lambda: accepting.finish(data),
                 lambda: dial(DIALER.name, DIALER, _authority(ACCEPTOR), _ephemeral("d")).finish(data)):
        with pytest.raises(SessionError):
            step()


# -- data frames -----------------------------------------------------------------


def _tag(key: bytes, seq: int, body: bytes) -> bytes:
    return hashlib.blake2b(seq.to_bytes(8, "big") + body, digest_size=16, key=key).digest()


def test_frame_layout_is_tag_kind_payload():
    _, sealer, opener = _handshake()
    frames = [sealer.seal("consensus", b"vote"), sealer.seal("records", b""), sealer.seal("want", b"hashes")]
    for seq, (frame, code, payload) in enumerate(zip(frames, (1, 2, 3), (b"vote", b"", b"hashes"))):
        assert frame == _tag(sealer.session_key, seq, bytes([code]) + payload) + bytes([code]) + payload
    assert [opener.open(f) for f in frames] == [("consensus", b"vote"), ("records", b""), ("want", b"hashes")]


def test_sealing_an_unknown_kind_is_the_callers_error():
    _, sealer, _ = _handshake()
    with pytest.raises(ValueError) as raised:
        sealer.seal("gossip", b"x")
    assert not isinstance(raised.value, SessionError)


def _flip(frame: bytes, index: int) -> bytes:
    return frame[:index] + bytes([frame[index] ^ 1]) + frame[index + 1:]


def _with_code(key: bytes, seq: int, code: int, payload: bytes) -> bytes:
    """A frame with a valid tag for any kind code: only a peer holding the key makes these."""
    return _tag(key, seq, bytes([code]) + payload) + bytes([code]) + payload


def _another_session_frame(sealer: Sealer, frames: list[bytes]) -> list[bytes]:
    _, other, _ = _handshake("other")
    return [frames[0], other.seal("records", b"batch")]


# Each case turns the session's honest frames [f0, f1, f2] (consensus
# "vote", records "batch", want "hashes") into what the acceptor receives,
# in order. The last frame is refused, every one before it opens.
REFUSED_FRAMES: dict[str, Callable[[Sealer, list[bytes]], list[bytes]]] = {
    "tampered payload": lambda s, f: [f[0], _flip(f[1], len(f[1]) - 1)],
    "tampered kind": lambda s, f: [_flip(f[0], 16)],
    "tampered tag": lambda s, f: [_flip(f[0], 0)],
    "replayed frame": lambda s, f: [f[0], f[1], f[0]],
    "reordered frames": lambda s, f: [f[0], f[2]],  # f2 before f1: refused on arrival
    "dropped then injected": lambda s, f: [f[1]],  # f0 never arrived
    "frame from another session": _another_session_frame,
    "truncated payload": lambda s, f: [f[0][:-1]],
    "truncated to the tag": lambda s, f: [f[0][:16]],
    "empty frame": lambda s, f: [b""],
    "unknown kind": lambda s, f: [f[0], _with_code(s.session_key, 1, 9, b"x")],
    "kind code 0": lambda s, f: [_with_code(s.session_key, 0, 0, b"x")],
    "text, not bytes": lambda s, f: ["vote"],  # type: ignore[list-item]
}


@pytest.mark.parametrize("deliver", REFUSED_FRAMES.values(), ids=REFUSED_FRAMES.keys())
def test_refused_frames(deliver):
    _, sealer, opener = _handshake()
    honest = [sealer.seal("consensus", b"vote"), sealer.seal("records", b"batch"), sealer.seal("want", b"hashes")]
    *passed, refused = deliver(sealer, honest)
    for frame in passed:
        opener.open(frame)
    with pytest.raises(SessionError):
        opener.open(refused)


@given(st.binary(max_size=100))
def test_whatever_a_peer_sends_as_a_frame_raises_only_session_error(frame):
    _, _, opener = _handshake()
    with pytest.raises(SessionError):
        opener.open(frame)


def test_after_a_bad_frame_the_session_refuses_everything():
    _, sealer, opener = _handshake()
    good = sealer.seal("consensus", b"vote")
    with pytest.raises(SessionError):
        opener.open(_flip(good, 20))
    with pytest.raises(SessionError, match="broken"):
        opener.open(good)


def test_kind_codes_are_fixed():
    assert peer_session.KIND_CODES == {"consensus": 1, "records": 2, "want": 3}
