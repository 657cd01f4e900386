"""C2SP signed notes (https://c2sp.org/signed-note), Ed25519 only.

A signed note is a text followed by a blank line and one signature line per
key. It is byte-for-byte the format of golang.org/x/mod/sumdb/note, so notes
made here open there and the other way round:

    If you think cryptography is the answer to your problem,      <- text: ends
    then you don't know what your problem is.                     <- in "\\n"
                                                                  <- blank line
    — PeterNeumann x08go/ZJkuBS9UG/SffcvIAQx...                   <- signatures
      ^ U+2014      ^ base64(key id (4 bytes) || signature)

A key is named by (name, key id), with key id = SHA-256(name || "\\n" || 0x01 ||
public key)[:4]. Keys travel as text:

    verifier  name+<key id, 8 hex>+base64(0x01 || 32-byte public key)
    signer    PRIVATE+KEY+name+<key id, 8 hex>+base64(0x01 || 32-byte seed)

Opening a note (`open_note`) follows the spec: a signature whose (name, key
id) matches a known verifier MUST verify or the whole note is refused; other
signatures are kept aside as unknown, never trusted; and the note is accepted
only with at least `quorum` distinct known keys behind it.

Deliberate differences from the Go package, all on the strict side except the
first: (1) a signature line from an unknown key may carry a signature of any
length, because C2SP lets other algorithms (witness cosignatures, 0x04) sign
the same note; (2) base64 must be canonical; (3) every signature line of a
known key is verified, duplicates included, where Go skips repeats; (4) key
names may not contain ASCII control characters.

Nothing here does I/O. Every malformed input raises NoteError (or a subclass)
and nothing else.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import nacl.exceptions
import nacl.signing

ALGORITHM_ED25519 = 0x01
KEY_ID_BYTES = 4
PUBLIC_KEY_BYTES = 32
SEED_BYTES = 32
SIGNATURE_BYTES = 64

# The spec asks verifiers to bound the work a note can cause and to accept at
# least 16 signatures; Go stops at 100. A checkpoint is a few hundred bytes.
SIGNATURES_MAX = 100
NOTE_BYTES_MAX = 1 << 20

SIGNATURE_PREFIX = "\u2014 "  # em dash, space
_PRIVATE_PREFIX = "PRIVATE+KEY+"
_KEY_ID_HEX = re.compile(r"[0-9a-fA-F]{8}")

# Unicode White_Space, the set Go's unicode.IsSpace uses. str.isspace() is not
# the same set (it also counts U+001C..U+001F), and key names must agree with Go.
_WHITE_SPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000"
    + "".join(chr(c) for c in range(0x2000, 0x200B))
)
_CONTROL_EXCEPT_NEWLINE = re.compile(r"[\x00-\x09\x0b-\x1f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class NoteError(ValueError):
    """A malformed note, key or signature, or a note that fails verification."""


class InvalidSignatureError(NoteError):
    """A signature by a known key that does not verify: the note is forged or corrupted."""


class QuorumError(NoteError):
    """A well-formed note without enough distinct known keys' signatures."""


def key_id(name: str, public_key: bytes) -> bytes:
    """The 4-byte C2SP key id of an Ed25519 key: SHA-256(name || 0x0A || 0x01 || key)[:4]."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALGORITHM_ED25519]) + public_key).digest()[:KEY_ID_BYTES]


def _check_name(name: object) -> str:
    if type(name) is not str or name == "":
        raise NoteError("a key name must be a non-empty string")
    if "+" in name or any(c in _WHITE_SPACE for c in name):
        raise NoteError(f"key name {name!r} must not contain spaces or '+'")
    if _CONTROL_EXCEPT_NEWLINE.search(name) or _SURROGATE.search(name):
        raise NoteError(f"key name {name!r} must be valid UTF-8 without control characters")
    return name


def _check_bytes(value: object, size: int, what: str) -> bytes:
    if type(value) is not bytes or len(value) != size:
        raise NoteError(f"{what} must be {size} bytes")
    return value


def _b64decode(text: str, what: str) -> bytes:
    """Decode standard, padded base64, refusing any other spelling of the same bytes."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise NoteError(f"{what} is not valid base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise NoteError(f"{what} is not canonical base64")
    return raw


def _check_text(text: object) -> str:
    """Check the rules a note text must meet to be signed; return it."""
    if type(text) is not str:
        raise NoteError("note text must be a str")
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    if _SURROGATE.search(text):
        raise NoteError("note text must be valid UTF-8")
    if _CONTROL_EXCEPT_NEWLINE.search(text):
        raise NoteError("note text must not contain control characters other than newline")
    return text


@dataclass(frozen=True, slots=True)
class NoteVerifier:
    """A known Ed25519 note key. Invariant: key_id == key_id(name, public_key)."""

    name: str
    key_id: bytes
    public_key: bytes
    _verify_key: nacl.signing.VerifyKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_name(self.name)
        _check_bytes(self.key_id, KEY_ID_BYTES, "key id")
        _check_bytes(self.public_key, PUBLIC_KEY_BYTES, "an Ed25519 public key")
        if self.key_id != key_id(self.name, self.public_key):
            raise NoteError(f"key id {self.key_id.hex()} does not match key {self.name!r}")
        object.__setattr__(self, "_verify_key", nacl.signing.VerifyKey(self.public_key))

    @classmethod
    def from_key(cls, name: str, public_key: bytes) -> "NoteVerifier":
        """The verifier for `public_key` under `name`, with its key id computed."""
        _check_name(name)
        _check_bytes(public_key, PUBLIC_KEY_BYTES, "an Ed25519 public key")
        return cls(name, key_id(name, public_key), public_key)

    def encode(self) -> str:
        """The verifier key text: "name+hex8+base64(0x01 || public key)"."""
        key = base64.b64encode(bytes([ALGORITHM_ED25519]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{key}"

    def verify(self, text: str, signature: bytes) -> bool:
        """Whether `signature` is this key's Ed25519 signature over the UTF-8 `text`."""
        if len(signature) != SIGNATURE_BYTES:
            return False
        try:
            self._verify_key.verify(text.encode(), signature)
        except nacl.exceptions.BadSignatureError:
            return False
        return True


def _parse_key_body(name: str, hex8: str, key64: str, what: str) -> tuple[str, bytes, bytes]:
    """Shared checks of "name+hex8+base64(alg||key)"; returns (name, key id, key bytes)."""
    _check_name(name)
    if not _KEY_ID_HEX.fullmatch(hex8):
        raise NoteError(f"{what}: key id must be 8 hex digits")
    raw = _b64decode(key64, f"{what}: key")
    if len(raw) == 0 or raw[0] != ALGORITHM_ED25519:
        raise NoteError(f"{what}: unknown key algorithm (only Ed25519, 0x01, is supported)")
    if len(raw) != 1 + PUBLIC_KEY_BYTES:
        raise NoteError(f"{what}: an Ed25519 key is 32 bytes")
    return name, bytes.fromhex(hex8), raw[1:]


def parse_verifier_key(text: str) -> NoteVerifier:
    """Parse "name+hex8+base64(0x01 || public key)"; the key id must match the key."""
    if type(text) is not str:
        raise NoteError("a verifier key must be a str")
    # The base64 part may itself hold '+', so split only twice, as Go's chop does.
    parts = text.split("+", 2)
    if len(parts) != 3:
        raise NoteError("a verifier key reads name+keyid+key")
    name, wanted_id, public_key = _parse_key_body(*parts, what="verifier key")
    if key_id(name, public_key) != wanted_id:
        raise NoteError("verifier key: key id does not match the name and key")
    return NoteVerifier(name, wanted_id, public_key)


@dataclass(frozen=True, slots=True)
class NoteSigner:
    """A private Ed25519 note key. The seed never appears in repr()."""

    name: str
    seed: bytes = field(repr=False)
    _signing_key: nacl.signing.SigningKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_name(self.name)
        _check_bytes(self.seed, SEED_BYTES, "an Ed25519 seed")
        object.__setattr__(self, "_signing_key", nacl.signing.SigningKey(self.seed))

    @property
    def public_key(self) -> bytes:
        return bytes(self._signing_key.verify_key)

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public_key)

    @property
    def verifier(self) -> NoteVerifier:
        return NoteVerifier(self.name, self.key_id, self.public_key)

    def encode(self) -> str:
        """The signer key text: "PRIVATE+KEY+name+hex8+base64(0x01 || seed)". Keep it secret."""
        key = base64.b64encode(bytes([ALGORITHM_ED25519]) + self.seed).decode()
        return f"{_PRIVATE_PREFIX}{self.name}+{self.key_id.hex()}+{key}"

    def sign(self, text: str) -> bytes:
        """The raw 64-byte Ed25519 signature over the UTF-8 `text` (no checks)."""
        return self._signing_key.sign(text.encode()).signature


def parse_signer_key(text: str) -> NoteSigner:
    """Parse "PRIVATE+KEY+name+hex8+base64(0x01 || seed)"; the key id must match the derived public key."""
    if type(text) is not str or not text.startswith(_PRIVATE_PREFIX):
        raise NoteError("a signer key starts with PRIVATE+KEY+")
    parts = text[len(_PRIVATE_PREFIX):].split("+", 2)
    if len(parts) != 3:
        raise NoteError("a signer key reads PRIVATE+KEY+name+keyid+key")
    name, wanted_id, seed = _parse_key_body(*parts, what="signer key")
    signer = NoteSigner(name, seed)
    if signer.key_id != wanted_id:
        raise NoteError("signer key: key id does not match the name and key")
    return signer


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line. `signature` is 64 bytes for Ed25519; unknown algorithms may differ."""

    name: str
    key_id: bytes
    signature: bytes

    def __post_init__(self) -> None:
        _check_name(self.name)
        _check_bytes(self.key_id, KEY_ID_BYTES, "key id")
        if type(self.signature) is not bytes or len(self.signature) == 0:
            raise NoteError("a signature must be non-empty bytes")

    def line(self) -> str:
        """The signature line, newline included: "— name base64(key id || signature)\\n"."""
        return f"{SIGNATURE_PREFIX}{self.name} {base64.b64encode(self.key_id + self.signature).decode()}\n"


def sign_text(text: str, signer: NoteSigner) -> NoteSignature:
    """Sign `text`, which must end in a newline and hold no control characters but newlines."""
    _check_text(text)
    return NoteSignature(signer.name, signer.key_id, signer.sign(text))


def format_note(text: str, signatures: Sequence[NoteSignature]) -> str:
    """The signed note: `text`, a blank line, then the signature lines in the given order.

    Requires 1..SIGNATURES_MAX signatures. Signatures are not verified here.
    """
    _check_text(text)
    if not 1 <= len(signatures) <= SIGNATURES_MAX:
        raise NoteError(f"a note carries 1 to {SIGNATURES_MAX} signatures, not {len(signatures)}")
    return text + "\n" + "".join(s.line() for s in signatures)


def _parse_signature_line(line: str) -> NoteSignature:
    if not line.startswith(SIGNATURE_PREFIX):
        raise NoteError("a signature line starts with an em dash and a space")
    name, space, encoded = line[len(SIGNATURE_PREFIX):].partition(" ")
    if not space or encoded == "":
        raise NoteError("a signature line reads '— name signature'")
    _check_name(name)
    raw = _b64decode(encoded, f"signature of {name!r}")
    if len(raw) <= KEY_ID_BYTES:
        raise NoteError(f"signature of {name!r} is too short")
    return NoteSignature(name, raw[:KEY_ID_BYTES], raw[KEY_ID_BYTES:])


def parse_note(note: str | bytes) -> tuple[str, list[NoteSignature]]:
    """Split a signed note into its text and signature lines, in order, unverified.

    Strict: UTF-8 without control characters other than newline, at most
    NOTE_BYTES_MAX bytes, text separated from the signatures by the last blank
    line, 1..SIGNATURES_MAX well-formed signature lines, each ending in a
    newline. Raises NoteError on anything else.
    """
    if isinstance(note, bytes):
        if len(note) > NOTE_BYTES_MAX:
            raise NoteError(f"a note is at most {NOTE_BYTES_MAX} bytes")
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError:
            raise NoteError("a note must be valid UTF-8") from None
    elif type(note) is not str:
        raise NoteError("a note must be str or bytes")
    elif len(note) > NOTE_BYTES_MAX or len(note.encode("utf-8", "surrogatepass")) > NOTE_BYTES_MAX:
        raise NoteError(f"a note is at most {NOTE_BYTES_MAX} bytes")
    if _SURROGATE.search(note):
        raise NoteError("a note must be valid UTF-8")
    if _CONTROL_EXCEPT_NEWLINE.search(note):
        raise NoteError("a note must not contain control characters other than newline")
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("a note needs a blank line between the text and the signatures")
    text, block = note[: split + 1], note[split + 2:]
    if block == "" or not block.endswith("\n"):
        raise NoteError("a note ends with signature lines, each ending in a newline")
    lines = block[:-1].split("\n")
    if len(lines) > SIGNATURES_MAX:
        raise NoteError(f"a note carries at most {SIGNATURES_MAX} signatures")
    return text, [_parse_signature_line(line) for line in lines]


@dataclass(frozen=True, slots=True)
class OpenedNote:
    """A note whose text a quorum of known keys signed.

    `verified` has one signature per distinct known key, in note order;
    `unknown` has the distinct signature lines of keys not given, never trusted.
    """

    text: str
    verified: tuple[NoteSignature, ...]
    unknown: tuple[NoteSignature, ...]


def open_note(note: str | bytes, verifiers: Sequence[NoteVerifier], quorum: int = 1) -> OpenedNote:
    """Parse `note` and verify it against `verifiers`; require `quorum` distinct verified keys.

    A signature whose (name, key id) matches a verifier must verify, or
    InvalidSignatureError. Repeats of one key count once, and so do two
    verifiers that share a public key under different names. Fewer than
    `quorum` (>= 1) distinct verified keys: QuorumError. Two different keys
    under one (name, key id) in `verifiers` is ambiguous: NoteError.
    """
    if type(quorum) is not int or quorum < 1:
        raise ValueError("quorum must be an int >= 1: a note with no verified signature is never accepted")
    known: dict[tuple[str, bytes], NoteVerifier] = {}
    for verifier in verifiers:
        slot = (verifier.name, verifier.key_id)
        if known.get(slot, verifier).public_key != verifier.public_key:
            raise NoteError(f"ambiguous key {verifier.name}+{verifier.key_id.hex()}: two verifiers share it")
        known[slot] = verifier

    text, signatures = parse_note(note)
    verified: list[NoteSignature] = []
    unknown: list[NoteSignature] = []
    signed_keys: set[bytes] = set()
    for signature in signatures:
        verifier = known.get((signature.name, signature.key_id))
        if verifier is None:
            if signature not in unknown:
                unknown.append(signature)
            continue
        if signature in verified:
            continue  # an identical line already verified: Ed25519 is deterministic
        if not verifier.verify(text, signature.signature):
            raise InvalidSignatureError(f"invalid signature for key {signature.name}+{signature.key_id.hex()}")
        if verifier.public_key not in signed_keys:
            signed_keys.add(verifier.public_key)
            verified.append(signature)
    if len(signed_keys) < quorum:
        raise QuorumError(f"note has {len(signed_keys)} verified signatures from known keys, quorum is {quorum}")
    return OpenedNote(text, tuple(verified), tuple(unknown))
