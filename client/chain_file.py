"""The chain export file: a portable, self-verifying, streamed copy of a chain.

An auditor takes the file offline; `lacre chain import` rebuilds a node's
store from it. Writer and reader both stream: memory stays flat however long
the chain (one block, plus an O(log n) compact range of the Merkle log).

    offset 0   magic line   "lacre-chain-export/1\\n"
               frame G      the genesis (canonical bytes): nothing else is needed
               frame B      block 1 (canonical bytes, certificate included)
               ...
               frame B      block n
               frame T      trailer: block count, last header hash, log size and
                            root, SHA-256 of every byte before the trailer
               end of file

    frame      kind (1 byte: 'G', 'B' or 'T') || length (u32, big-endian)
               || payload (length bytes) || CRC-32 (u32, big-endian, of
               kind || length || payload)

What the file proves by itself, checked on every read: each frame is intact
(CRC-32, and the trailer's whole-file SHA-256), nothing is missing at the end
(the trailer), and the blocks form one chain from the genesis (consecutive
heights, previous-hash links, log sizes, every log root recomputed from the
records, each certificate bound to its header). What it cannot prove alone is
that the consortium made it: signatures (records, certificates) are checked
against the authority set by `Chain` on import and by the audit.

`docs/audit.md` describes the format byte by byte.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ledger import codec
from ledger.block import Block, BlockError
from ledger.compact_range import CompactRange
from ledger.genesis import Genesis, GenesisError
from ledger.merkle import EMPTY_ROOT, leaf_hash
from ledger.records import leaf_data

MAGIC = b"lacre-chain-export/"
VERSION = 1
MAGIC_LINE = MAGIC + b"%d\n" % VERSION
MAGIC_LINE_BYTES_MAX = 64

KIND_GENESIS = ord("G")
KIND_BLOCK = ord("B")
KIND_TRAILER = ord("T")
_KIND_NAMES = {KIND_GENESIS: "genesis", KIND_BLOCK: "block", KIND_TRAILER: "trailer"}

_FRAME_HEAD = struct.Struct(">BI")  # kind, payload length
_CRC = struct.Struct(">I")
FRAME_PAYLOAD_BYTES_MAX = codec.MESSAGE_BYTES_MAX
_TRAILER_FIELDS = {"blocks", "head_hash", "log_root", "log_size", "sha256"}
_READ_CHUNK_BYTES = 1 << 20


class ChainFileError(ValueError):
    """A chain file that is malformed, corrupted, truncated or not a chain.

    `offset` is where the faulty frame (or byte) starts; `height` the block
    concerned, when one is; `rule` a short name of what broke.
    """

    def __init__(self, path: str | Path, offset: int, rule: str, detail: str, height: int | None = None) -> None:
        where = f"offset {offset}" + (f", block {height}" if height is not None else "")
        super().__init__(f"{path}: {where}: {rule}: {detail}")
        self.path = str(path)
        self.offset = offset
        self.rule = rule
        self.detail = detail
        self.height = height


class LinkError(ValueError):
    """A block that does not continue the chain it follows; `rule` names the check."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(f"{rule}: {detail}")
        self.rule = rule
        self.detail = detail


class ChainLinks:
    """Structural checks of a block stream from genesis; no signatures.

    Invariant after `check(block)` returns: blocks 1..height were seen in
    order, each linking to the previous header (block 1 to the genesis hash),
    its first leaf at the previous log size, its log root the RFC 9162 root of
    every record so far, and its certificate naming its own header. Memory is
    one compact range: O(log n) hashes.
    """

    def __init__(self, genesis_hash: bytes) -> None:
        self.height = 0
        self.head_hash = genesis_hash
        self.range = CompactRange.empty()

    @property
    def log_size(self) -> int:
        return self.range.size

    def check(self, block: Block) -> None:
        header = block.header
        if header.height != self.height + 1:
            raise LinkError("height", f"expected block {self.height + 1}, found block {header.height}")
        if header.previous_hash != self.head_hash:
            raise LinkError("previous-hash", f"block {header.height} does not link to block {self.height}")
        if header.first_leaf != self.range.size:
            raise LinkError(
                "log-size", f"block {header.height} starts at leaf {header.first_leaf}, the log holds {self.range.size}"
            )
        if block.certificate.height != header.height or block.certificate.block_hash != header.hash:
            raise LinkError("certificate", f"block {header.height}'s certificate is for another header")
        extended = self.range.extend(leaf_hash(leaf_data(record)) for record in block.records)
        if extended.root() != header.log_root:
            raise LinkError("log-root", f"block {header.height}'s log root differs from its records")
        self.range = extended
        self.height = header.height
        self.head_hash = header.hash


@dataclass(frozen=True, slots=True)
class Trailer:
    """The last frame: what the reader must have seen, and a digest of it all."""

    blocks: int
    head_hash: bytes
    log_size: int
    log_root: bytes
    sha256: bytes

    def encode(self) -> bytes:
        return codec.encode({
            "blocks": self.blocks, "head_hash": self.head_hash, "log_root": self.log_root,
            "log_size": self.log_size, "sha256": self.sha256,
        })

    @classmethod
    def decode(cls, data: bytes) -> "Trailer":
        mapping = codec.decode(data)
        if type(mapping) is not dict or set(mapping) != _TRAILER_FIELDS:
            raise ValueError("trailer fields")
        for name in ("blocks", "log_size"):
            if type(mapping[name]) is not int or mapping[name] < 0:
                raise ValueError(f"trailer {name}")
        for name in ("head_hash", "log_root", "sha256"):
            if type(mapping[name]) is not bytes or len(mapping[name]) != 32:
                raise ValueError(f"trailer {name}")
        return cls(mapping["blocks"], mapping["head_hash"], mapping["log_size"], mapping["log_root"], mapping["sha256"])


@dataclass(frozen=True, slots=True)
class ExportSummary:
    path: str
    genesis_hash: bytes
    blocks: int
    log_size: int
    log_root: bytes
    head_hash: bytes
    file_bytes: int
    sha256: bytes

    def to_json(self) -> dict:
        return {
            "file": self.path, "genesis_hash": self.genesis_hash.hex(), "blocks": self.blocks,
            "tree_size": self.log_size, "log_root": self.log_root.hex(), "head_hash": self.head_hash.hex(),
            "bytes": self.file_bytes, "sha256": self.sha256.hex(),
        }


def _frame(kind: int, payload: bytes) -> bytes:
    if not 0 < len(payload) <= FRAME_PAYLOAD_BYTES_MAX:
        raise ValueError(f"frame payload of {len(payload)} bytes")
    head = _FRAME_HEAD.pack(kind, len(payload))
    return head + payload + _CRC.pack(zlib.crc32(payload, zlib.crc32(head)))


class ChainFileWriter:
    """Writes a chain file atomically: a temporary file, renamed over `path` by `finish`.

    `check_links=False` writes whatever blocks it is given (tests build
    tampered files this way); otherwise a block that does not continue the
    chain raises LinkError and nothing is written at `path`.
    """

    def __init__(self, path: str | Path, genesis: Genesis, check_links: bool = True) -> None:
        self.path = Path(path)
        self.genesis = genesis
        self._links = ChainLinks(genesis.hash) if check_links else None
        self._temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._file: BinaryIO | None = open(self._temporary, "wb")
        self._digest = hashlib.sha256()
        self._bytes = 0
        self.blocks = 0
        self._last: Block | None = None
        self._write(MAGIC_LINE)
        self._write(_frame(KIND_GENESIS, genesis.encode()))

    def __enter__(self) -> "ChainFileWriter":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if self._file is not None:
            self.abort()

    def _write(self, data: bytes) -> None:
        assert self._file is not None, "writer finished or aborted"
        self._file.write(data)
        self._digest.update(data)
        self._bytes += len(data)

    def write_block(self, block: Block) -> None:
        if self._links is not None:
            self._links.check(block)
        self._write(_frame(KIND_BLOCK, block.encode()))
        self.blocks += 1
        self._last = block

    def finish(self) -> ExportSummary:
        """Write the trailer, sync, and rename into place."""
        if self._links is not None:
            head_hash, log_size, log_root = self._links.head_hash, self._links.log_size, self._links.range.root()
        elif self._last is not None:
            header = self._last.header
            head_hash, log_size, log_root = header.hash, header.log_size, header.log_root
        else:
            head_hash, log_size, log_root = self.genesis.hash, 0, EMPTY_ROOT
        digest = self._digest.digest()
        trailer = Trailer(self.blocks, head_hash, log_size, log_root, digest)
        self._write(_frame(KIND_TRAILER, trailer.encode()))
        file = self._file
        assert file is not None
        file.flush()
        os.fsync(file.fileno())
        file.close()
        self._file = None
        os.replace(self._temporary, self.path)
        sync_directory(self.path.parent)
        return ExportSummary(
            str(self.path), self.genesis.hash, self.blocks, log_size, log_root, head_hash, self._bytes, digest,
        )

    def abort(self) -> None:
        """Forget everything written; `path` is left as it was."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._temporary.unlink(missing_ok=True)


def sync_directory(path: Path) -> None:
    """fsync a folder, so a rename in it survives a crash (best effort: not every OS allows it)."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def export_chain(
    blocks: Iterable[Block],
    genesis: Genesis,
    out_path: str | Path,
    progress: Callable[[Block], None] | None = None,
    check_links: bool = True,
) -> ExportSummary:
    """Stream `blocks` (height 1 upwards) of the chain of `genesis` into a chain file at `out_path`.

    Atomic: `out_path` appears complete or not at all. Raises LinkError if the
    blocks do not form one chain from `genesis` (then nothing is written).
    `progress(block)` runs after each block is written.
    """
    with ChainFileWriter(out_path, genesis, check_links) as writer:
        for block in blocks:
            writer.write_block(block)
            if progress is not None:
                progress(block)
        return writer.finish()


class ChainFileReader:
    """Reads a chain file: the genesis at once, then the blocks as an iterator.

    Iterating yields each block once it passed every structural check; the
    iterator ends only after the trailer matched what was read and the file
    ended there. Any fault raises ChainFileError naming the offset (and the
    block, when known). `offset` and `size` serve progress display.
    """

    def __init__(self, path: str | Path, check_links: bool = True) -> None:
        self.path = Path(path)
        self._check_links = check_links
        try:
            self._file: BinaryIO | None = open(self.path, "rb", buffering=_READ_CHUNK_BYTES)
            self.size = os.fstat(self._file.fileno()).st_size
        except OSError as error:
            raise ChainFileError(path, 0, "unreadable", error.strerror or str(error)) from None
        self.offset = 0
        self._digest = hashlib.sha256()
        self.trailer: Trailer | None = None
        try:
            self._read_magic()
            kind, payload, start = self._read_frame(expected="the genesis")
            if kind != KIND_GENESIS:
                raise self._error(start, "structure", f"the first frame is a {_KIND_NAMES[kind]}, not the genesis")
            try:
                self.genesis = Genesis.decode(payload)
            except GenesisError as error:
                raise self._error(start, "genesis", str(error)) from None
        except BaseException:
            self.close()
            raise
        self._links = ChainLinks(self.genesis.hash)
        self._iterator = self._blocks()

    def __enter__(self) -> "ChainFileReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Block]:
        return self

    def __next__(self) -> Block:
        return next(self._iterator)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _error(self, offset: int, rule: str, detail: str, height: int | None = None) -> ChainFileError:
        return ChainFileError(self.path, offset, rule, detail, height)

    def _read(self, count: int, start: int, what: str) -> bytes:
        assert self._file is not None
        data = self._file.read(count)
        if len(data) != count:
            raise self._error(
                start, "truncated", f"the file ends at offset {self.offset + len(data)} inside {what}"
            )
        self.offset += count
        return data

    def _read_magic(self) -> None:
        assert self._file is not None
        line = self._file.readline(MAGIC_LINE_BYTES_MAX)
        if not line.startswith(MAGIC) or not line.endswith(b"\n"):
            raise self._error(0, "magic", f"not a lacre chain export (it starts {line[:24]!r})")
        version = line[len(MAGIC):-1]
        if version != b"%d" % VERSION:
            raise self._error(0, "version", f"format version {version.decode(errors='replace')!r}, this reader knows {VERSION}")
        self.offset = len(line)
        self._digest.update(line)

    def _read_frame(self, expected: str) -> tuple[int, bytes, int]:
        """(kind, payload, start offset) of the next frame; the digest covers it."""
        assert self._file is not None
        start = self.offset
        head = self._file.read(_FRAME_HEAD.size)
        if not head:
            raise self._error(start, "truncated", f"the file ends at offset {start}, where {expected} should start")
        if len(head) != _FRAME_HEAD.size:
            raise self._error(start, "truncated", f"the file ends at offset {start + len(head)} inside a frame header")
        self.offset += len(head)
        kind, length = _FRAME_HEAD.unpack(head)
        if kind not in _KIND_NAMES:
            raise self._error(start, "frame-kind", f"unknown frame kind 0x{kind:02x} where {expected} should start")
        if not 0 < length <= FRAME_PAYLOAD_BYTES_MAX:
            raise self._error(start, "frame-length", f"frame length {length} out of range")
        payload = self._read(length, start, f"a {_KIND_NAMES[kind]} frame of {length} bytes")
        (crc,) = _CRC.unpack(self._read(_CRC.size, start, "a frame checksum"))
        if crc != zlib.crc32(payload, zlib.crc32(head)):
            raise self._error(start, "checksum", f"{_KIND_NAMES[kind]} frame is corrupted (CRC-32 mismatch)")
        if kind != KIND_TRAILER:
            self._digest.update(head)
            self._digest.update(payload)
            self._digest.update(_CRC.pack(crc))
        return kind, payload, start

    def _blocks(self) -> Iterator[Block]:
        try:
            count = 0
            last_hash, last_size, last_root = self.genesis.hash, 0, EMPTY_ROOT
            while True:
                expected_height = count + 1
                kind, payload, start = self._read_frame(expected=f"block {expected_height} or the trailer")
                if kind == KIND_TRAILER:
                    self._finish(payload, start, count, last_hash, last_size, last_root)
                    return
                if kind != KIND_BLOCK:
                    raise self._error(start, "structure", f"a {_KIND_NAMES[kind]} frame among the blocks")
                try:
                    block = Block.decode(payload)
                except BlockError as error:
                    raise self._error(start, error.rule, error.detail, expected_height) from None
                if self._check_links:
                    try:
                        self._links.check(block)
                    except LinkError as error:
                        raise self._error(start, error.rule, error.detail, block.header.height) from None
                count += 1
                header = block.header
                last_hash, last_size, last_root = header.hash, header.log_size, header.log_root
                yield block
        finally:
            self.close()

    def _finish(self, payload: bytes, start: int, count: int, head_hash: bytes, log_size: int, log_root: bytes) -> None:
        try:
            trailer = Trailer.decode(payload)
        except (codec.CodecError, ValueError) as error:
            raise self._error(start, "trailer", f"malformed trailer: {error}") from None
        if trailer.blocks != count:
            raise self._error(start, "trailer", f"the trailer counts {trailer.blocks} blocks, the file holds {count}")
        if (trailer.head_hash, trailer.log_size, trailer.log_root) != (head_hash, log_size, log_root):
            raise self._error(start, "trailer", "the trailer's head hash, log size or root differs from the last block")
        if trailer.sha256 != self._digest.digest():
            raise self._error(start, "trailer", "the SHA-256 of the file differs from the trailer's")
        assert self._file is not None
        if self._file.read(1):
            raise self._error(self.offset, "trailing-bytes", "bytes follow the trailer")
        self.trailer = trailer


def read_chain(path: str | Path, check_links: bool = True) -> tuple[Genesis, ChainFileReader]:
    """The genesis of the chain file at `path`, and an iterator of its blocks.

    The iterator checks as it goes (see ChainFileReader) and closes the file
    when exhausted; close it yourself (or use it as a context manager) to
    stop early. Raises ChainFileError.
    """
    reader = ChainFileReader(path, check_links)
    return reader.genesis, reader
