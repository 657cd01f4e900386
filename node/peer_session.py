"""Authenticated sessions between authorities: a signed handshake, then MAC'd frames.

Bring your own I/O: this module turns bytes into bytes and never touches a
socket; `node/peers.py` carries the frames over a WebSocket.

Theory of operation
-------------------
A link carries data one way, from the authority that dialed it (D) to the
one that accepted it (A). Before any data the two run a SIGMA-style
handshake over the link's first three frames, each a canonical MessagePack
map:

    D -> A  hello    {"from": D, "to": A, "eph": eD}
    A -> D  accept   {"from": A, "eph": eA, "sig": Sign_A(PEER_CONTEXT, transcript("accept"))}
    D -> A  confirm  {"sig": Sign_D(PEER_CONTEXT, transcript("dial"))}

    transcript(role) = encode({"role": role, "dialer": D, "acceptor": A,
                               "dialer_eph": eD, "acceptor_eph": eA})

eD and eA are X25519 public keys made fresh for the session; the signatures
are Ed25519 by the authority keys of the set in force. Each signature covers
both names and both fresh keys, so

- a signature from an old session never verifies in a new one: the other
  side's fresh key differs (a replayed handshake fails);
- it names both ends, so a third party cannot splice someone else's
  handshake onto its own connection or pass one authority off as another;
- the roles differ, so one side's signature cannot be reflected back as the
  other's.

Both sides then derive the session key

    K = BLAKE2b-256(key = X25519(own eph, their eph), person = "lacre/peer/v1",
                    data = transcript("key"))

which only the holders of the two fresh private keys can compute; those
keys live as long as the session (forward secrecy for the MAC key, though
the frames are not secret: the link authenticates, it does not encrypt).

A data frame (dialer to acceptor only) is

    +----------+----------+-----------------+
    | tag (16) | kind (1) | payload (0..)   |
    +----------+----------+-----------------+
    tag = BLAKE2b-128(key = K, data = seq (u64 big-endian) || kind || payload)

where seq numbers the session's frames from 0 and is never sent: the
acceptor expects the next one. The WebSocket runs over TCP and delivers in
order, so an honest link never skips a number, and a replayed, reordered,
dropped-then-injected frame, or one from another session, fails its tag.

Errors: `SessionError` means the peer broke the rules (the link must be
closed); nothing a peer sends raises anything else. `ValueError` from
`Sealer.seal` is the local side's misuse (a kind with no code).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

import nacl.bindings
import nacl.public

from ledger import codec, crypto
from ledger.genesis import Authority, AuthoritySet

EPHEMERAL_KEY_BYTES = 32
SESSION_KEY_BYTES = 32
TAG_BYTES = 16
KIND_BYTES = 1
FRAME_HEADER_BYTES = TAG_BYTES + KIND_BYTES

# One byte per frame kind. 0 is never a kind, so a zeroed frame is refused.
KIND_CODES = {"consensus": 1, "records": 2, "want": 3}
_KIND_BY_CODE = {code: kind for kind, code in KIND_CODES.items()}
_KIND_BYTE = {kind: bytes([code]) for kind, code in KIND_CODES.items()}

# BLAKE2b personalisation (at most 16 bytes): keys derived here are
# unrelated to any other use of BLAKE2b with the same shared secret.
_KEY_PERSON = b"lacre/peer/v1"


class SessionError(ValueError):
    """The peer broke the handshake or the frame rules: close the link."""


# -- handshake messages ------------------------------------------------------


def _fields(data: object, types: dict[str, type]) -> dict:
    """The decoded map of a handshake message with exactly these fields and types."""
    if not isinstance(data, (bytes, bytearray)):
        raise SessionError("handshake messages are binary")
    try:
        mapping = codec.decode(bytes(data))
    except codec.CodecError as error:
        raise SessionError(f"handshake message: {error}") from None
    if type(mapping) is not dict or set(mapping) != set(types):
        raise SessionError(f"handshake message fields are {', '.join(sorted(types))}")
    for name, kind in types.items():
        if type(mapping[name]) is not kind:
            raise SessionError(f"handshake field {name!r} must be {kind.__name__}")
    return mapping


def _check_ephemeral(public_key: bytes) -> None:
    # crypto_scalarmult does not check the length itself.
    if len(public_key) != EPHEMERAL_KEY_BYTES:
        raise SessionError(f"an X25519 public key is {EPHEMERAL_KEY_BYTES} bytes")


@dataclass(frozen=True, slots=True)
class Hello:
    """Dialer to acceptor, first frame: who dials whom, and the dialer's fresh key."""

    sender: str
    to: str
    ephemeral: bytes

    def __post_init__(self) -> None:
        _check_ephemeral(self.ephemeral)

    def encode(self) -> bytes:
        return codec.encode({"from": self.sender, "to": self.to, "eph": self.ephemeral})

    @classmethod
    def decode(cls, data: object) -> "Hello":
        mapping = _fields(data, {"from": str, "to": str, "eph": bytes})
        return cls(mapping["from"], mapping["to"], mapping["eph"])


@dataclass(frozen=True, slots=True)
class Accept:
    """Acceptor to dialer: the acceptor's fresh key and its signature of the transcript."""

    sender: str
    ephemeral: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _check_ephemeral(self.ephemeral)

    def encode(self) -> bytes:
        return codec.encode({"from": self.sender, "eph": self.ephemeral, "sig": self.signature})

    @classmethod
    def decode(cls, data: object) -> "Accept":
        mapping = _fields(data, {"from": str, "eph": bytes, "sig": bytes})
        return cls(mapping["from"], mapping["eph"], mapping["sig"])


@dataclass(frozen=True, slots=True)
class Confirm:
    """Dialer to acceptor, last handshake frame: the dialer's signature of the transcript."""

    signature: bytes

    def encode(self) -> bytes:
        return codec.encode({"sig": self.signature})

    @classmethod
    def decode(cls, data: object) -> "Confirm":
        return cls(_fields(data, {"sig": bytes})["sig"])


@dataclass(frozen=True, slots=True)
class Transcript:
    """What both sides sign and derive the key from: both names and both fresh keys."""

    dialer: str
    acceptor: str
    dialer_ephemeral: bytes
    acceptor_ephemeral: bytes

    def encode(self, role: str) -> bytes:
        """The transcript for `role` ("accept", "dial" or "key"): each use gets distinct bytes."""
        return codec.encode({
            "role": role, "dialer": self.dialer, "acceptor": self.acceptor,
            "dialer_eph": self.dialer_ephemeral, "acceptor_eph": self.acceptor_ephemeral,
        })


def _verify(authority: Authority, message: bytes, signature: bytes, what: str) -> None:
    try:
        crypto.verify(authority.public_key, crypto.PEER_CONTEXT, message, signature)
    except crypto.SignatureError:
        raise SessionError(f"{what} is not signed by {authority.name}") from None


def _session_key(own: nacl.public.PrivateKey, their_ephemeral: bytes, transcript: Transcript) -> bytes:
    try:
        shared = nacl.bindings.crypto_scalarmult(bytes(own), their_ephemeral)
    except Exception:  # libsodium refuses a low-order point (an all-zero result)
        raise SessionError("the peer's fresh key gives no shared secret") from None
    if hmac.compare_digest(shared, bytes(len(shared))):
        raise SessionError("the peer's fresh key gives no shared secret")
    return hashlib.blake2b(
        transcript.encode("key"), digest_size=SESSION_KEY_BYTES, key=shared, person=_KEY_PERSON
    ).digest()


# -- the two sides of the handshake ------------------------------------------


@dataclass(frozen=True, slots=True)
class Dialing:
    """The dialer's side: send `hello`, then `finish` with the acceptor's reply."""

    name: str
    key: crypto.KeyPair = field(repr=False)
    peer: Authority
    ephemeral: nacl.public.PrivateKey = field(repr=False)

    @property
    def hello(self) -> bytes:
        return Hello(self.name, self.peer.name, bytes(self.ephemeral.public_key)).encode()

    def finish(self, reply: object) -> tuple[bytes, "Sealer"]:
        """The confirm frame to send and the session's sealer; SessionError if `reply` is wrong."""
        accept = Accept.decode(reply)
        if accept.sender != self.peer.name:
            raise SessionError(f"dialed {self.peer.name!r} but {accept.sender!r} answered")
        transcript = Transcript(self.name, self.peer.name, bytes(self.ephemeral.public_key), accept.ephemeral)
        _verify(self.peer, transcript.encode("accept"), accept.signature, "the accept")
        session_key = _session_key(self.ephemeral, accept.ephemeral, transcript)
        confirm = Confirm(self.key.sign(crypto.PEER_CONTEXT, transcript.encode("dial")))
        return confirm.encode(), Sealer(self.peer.name, session_key)


def dial(name: str, key: crypto.KeyPair, peer: Authority, ephemeral: nacl.public.PrivateKey | None = None) -> Dialing:
    """Start a handshake as authority `name` (signing with `key`) to `peer`, whose key the caller trusts.

    `ephemeral` is for tests that need reproducible bytes; otherwise each
    session makes its own.
    """
    return Dialing(name, key, peer, ephemeral or nacl.public.PrivateKey.generate())


@dataclass(frozen=True, slots=True)
class Accepting:
    """The acceptor's side after its reply: `finish` with the dialer's confirm."""

    dialer: Authority
    transcript: Transcript
    session_key: bytes = field(repr=False)

    def finish(self, confirm: object) -> "Opener":
        """The session's opener; SessionError unless `confirm` is the dialer's signature of this session."""
        message = Confirm.decode(confirm)
        _verify(self.dialer, self.transcript.encode("dial"), message.signature, "the confirm")
        return Opener(self.dialer, self.session_key)


def accept(
    name: str, key: crypto.KeyPair, authorities: AuthoritySet, hello: object,
    ephemeral: nacl.public.PrivateKey | None = None,
) -> tuple[bytes, Accepting]:
    """Answer a dialer's `hello` as authority `name`: the reply frame and the pending handshake.

    Refuses (SessionError) a hello for another node, from this node's own
    name, or from a name not in `authorities`. The dialer proves it holds
    that name's key only with its confirm (`Accepting.finish`).
    """
    message = Hello.decode(hello)
    if message.to != name:
        raise SessionError(f"the hello is for {message.to!r}, not {name!r}")
    if message.sender == name:
        raise SessionError("a node does not dial itself")
    dialer = authorities.by_name(message.sender)
    if dialer is None:
        raise SessionError(f"{message.sender!r} is not an authority")
    ephemeral = ephemeral or nacl.public.PrivateKey.generate()
    transcript = Transcript(dialer.name, name, message.ephemeral, bytes(ephemeral.public_key))
    session_key = _session_key(ephemeral, message.ephemeral, transcript)
    signature = key.sign(crypto.PEER_CONTEXT, transcript.encode("accept"))
    reply = Accept(name, transcript.acceptor_ephemeral, signature).encode()
    return reply, Accepting(dialer, transcript, session_key)


# -- data frames ---------------------------------------------------------------


def _tag(session_key: bytes, seq: int, *body: bytes | memoryview) -> bytes:
    """BLAKE2b-128 keyed with the session key over seq || body (body = kind || payload).

    The body parts are fed one by one: a payload is never copied to be tagged.
    """
    mac = hashlib.blake2b(digest_size=TAG_BYTES, key=session_key)
    mac.update(seq.to_bytes(8, "big"))  # overflows after 2**64 frames: never
    for part in body:
        mac.update(part)
    return mac.digest()


class Sealer:
    """Seals one session's data frames, dialer side: frame n is tagged with seq n.

    Frames must be sent in the order they are sealed.
    """

    __slots__ = ("peer", "session_key", "_seq")

    def __init__(self, peer: str, session_key: bytes) -> None:
        self.peer = peer
        self.session_key = session_key
        self._seq = 0

    def __repr__(self) -> str:
        return f"Sealer(peer={self.peer!r}, seq={self._seq})"

    def seal(self, kind: str, payload: bytes) -> bytes:
        code = _KIND_BYTE.get(kind)
        if code is None:
            raise ValueError(f"no frame kind {kind!r}")  # our own misuse, not the peer's
        tag = _tag(self.session_key, self._seq, code, payload)
        self._seq += 1
        return b"".join((tag, code, payload))


class Opener:
    """Checks one session's data frames, acceptor side, expecting seq 0, 1, 2, ...

    After a bad frame the stream cannot be trusted: every later frame is
    refused too, and the caller should close the link.
    """

    __slots__ = ("dialer", "session_key", "_seq", "_broken")

    def __init__(self, dialer: Authority, session_key: bytes) -> None:
        self.dialer = dialer
        self.session_key = session_key
        self._seq = 0
        self._broken = False

    def __repr__(self) -> str:
        return f"Opener(dialer={self.dialer.name!r}, seq={self._seq}, broken={self._broken})"

    def open(self, frame: object) -> tuple[str, bytes]:
        """The (kind, payload) of the next frame; SessionError unless it is exactly that."""
        if self._broken:
            raise SessionError("the session was broken by an earlier bad frame")
        try:
            kind, payload = self._open(frame)
        except SessionError:
            self._broken = True
            raise
        self._seq += 1
        return kind, payload

    def _open(self, frame: object) -> tuple[str, bytes]:
        if not isinstance(frame, (bytes, bytearray)):
            raise SessionError("data frames are binary")
        if len(frame) < FRAME_HEADER_BYTES:
            raise SessionError("frame shorter than its tag and kind")
        view = memoryview(frame)
        if not hmac.compare_digest(_tag(self.session_key, self._seq, view[TAG_BYTES:]), view[:TAG_BYTES]):
            raise SessionError(f"frame {self._seq} fails its tag (tampered, replayed, reordered or injected)")
        kind = _KIND_BY_CODE.get(frame[TAG_BYTES])
        if kind is None:
            raise SessionError(f"no frame kind has code {frame[TAG_BYTES]}")
        return kind, bytes(view[FRAME_HEADER_BYTES:])
