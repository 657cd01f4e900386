"""C2SP tlog checkpoints (https://c2sp.org/tlog-checkpoint): the log's signed tree head.

A checkpoint is the text of a signed note (see ledger.note):

    test.lacre.local/consortium          origin: names the log
    1204                                 tree size: decimal, no leading zeros
    CsUYapGGPo4dkMgIAUqom/Xajj7h2f...=   root hash: base64 of the 32-byte RFC 9162 root
    lacre-block 17 3q2+7w...             extension lines: optional, opaque, non-empty

lacre's authorities cosign it, one note signature each; a verifier accepts it
with signatures from a quorum of the authority set it trusts. Signatures from
keys outside that set are ignored, as the spec requires, and never count.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ledger.note import NoteSignature, NoteSigner, NoteVerifier, format_note, open_note, sign_text

ROOT_HASH_BYTES = 32
TREE_SIZE_MAX = 2**64 - 1  # what every other implementation parses into a uint64
_TREE_SIZE = re.compile(r"0|[1-9][0-9]*")
_CONTROL = re.compile(r"[\x00-\x1f\ud800-\udfff]")


class CheckpointError(ValueError):
    """A checkpoint body that breaks the tlog-checkpoint format, or the wrong origin."""


def _check_line(value: object, what: str) -> str:
    if type(value) is not str or value == "":
        raise CheckpointError(f"{what} must be a non-empty string")
    if _CONTROL.search(value):
        raise CheckpointError(f"{what} must be one line of valid UTF-8 without control characters")
    return value


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A tree head: `tree_size` leaves hashing to `root_hash` in the log named `origin`."""

    origin: str
    tree_size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_line(self.origin, "origin")
        if type(self.tree_size) is not int or not 0 <= self.tree_size <= TREE_SIZE_MAX:
            raise CheckpointError("tree size must be an integer in [0, 2^64)")
        if type(self.root_hash) is not bytes or len(self.root_hash) != ROOT_HASH_BYTES:
            raise CheckpointError(f"root hash must be {ROOT_HASH_BYTES} bytes")
        if type(self.extensions) is not tuple:
            raise CheckpointError("extensions must be a tuple of lines")
        for extension in self.extensions:
            _check_line(extension, "an extension line")

    def text(self) -> str:
        """The note text: origin, size and base64 root, then the extension lines, each ending in a newline."""
        lines = [self.origin, str(self.tree_size), base64.b64encode(self.root_hash).decode(), *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> "Checkpoint":
        """Parse a checkpoint note text, strictly: `Checkpoint.parse(c.text()) == c` and nothing else parses.

        Requires at least three non-empty lines, each ending in a newline; a
        decimal size without leading zeros; canonical base64 of a 32-byte root.
        """
        if type(text) is not str:
            raise CheckpointError("a checkpoint is text")
        if not text.endswith("\n"):
            raise CheckpointError("a checkpoint ends with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointError("a checkpoint has an origin, a tree size and a root hash line")
        origin, size, root, *extensions = lines
        if not _TREE_SIZE.fullmatch(size):
            raise CheckpointError(f"tree size {size!r} is not a decimal number without leading zeros")
        tree_size = int(size)
        try:
            root_hash = base64.b64decode(root.encode("ascii"), validate=True)
        except (UnicodeEncodeError, binascii.Error):
            raise CheckpointError("root hash is not valid base64") from None
        if base64.b64encode(root_hash).decode() != root:
            raise CheckpointError("root hash is not canonical base64")
        return cls(origin, tree_size, root_hash, tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, signers: Sequence[NoteSigner]) -> str:
    """The checkpoint as a signed note with one signature per signer, in order (at least one)."""
    text = checkpoint.text()
    return format_note(text, [sign_text(text, signer) for signer in signers])


def verify_checkpoint(
    note: str, verifiers: Sequence[NoteVerifier], quorum: int, origin: str | None = None
) -> tuple[Checkpoint, tuple[NoteSignature, ...]]:
    """Open a checkpoint note signed by at least `quorum` distinct keys of `verifiers`.

    Returns the checkpoint and the verified signatures (one per key). Raises
    NoteError (from ledger.note) for a malformed note, a bad signature by a
    known key, or too few signatures; CheckpointError for a malformed body or
    an origin other than `origin`, when given. The body is read only after
    the signatures hold, since unsigned text must be ignored.
    """
    opened = open_note(note, verifiers, quorum)
    checkpoint = Checkpoint.parse(opened.text)
    if origin is not None and checkpoint.origin != origin:
        raise CheckpointError(f"checkpoint is for log {checkpoint.origin!r}, expected {origin!r}")
    return checkpoint, opened.verified
