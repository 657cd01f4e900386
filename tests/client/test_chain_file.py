"""The chain export file: a round trip, and every kind of damage caught and placed."""

from __future__ import annotations

import dataclasses
import struct

import pytest

from client.chain_file import (
    MAGIC_LINE,
    ChainFileError,
    ChainFileWriter,
    LinkError,
    export_chain,
    read_chain,
)
from ledger.chain import Chain
from ledger.merkle import EMPTY_ROOT
from ledger.store import MemoryStore
from tests.conftest import make_consortium


@pytest.fixture(scope="module")
def built():
    """A four-authority chain of five blocks (quorum-certified), and its blocks."""
    consortium = make_consortium(4)
    chain = Chain(MemoryStore(), consortium.genesis)
    consortium.commit(chain, [consortium.registration()])
    for block in range(4):
        consortium.commit(chain, [consortium.issuance(10 * block + i) for i in range(block + 1)])
    return consortium, chain, [chain.block(h) for h in range(1, chain.height + 1)]


def _write(path, genesis, blocks) -> bytes:
    with ChainFileWriter(path, genesis, check_links=False) as writer:
        for block in blocks:
            writer.write_block(block)
        writer.finish()
    return path.read_bytes()


def _frames(data: bytes) -> list[tuple[int, int, int]]:
    """(kind, start offset, end offset) of each frame of a chain file."""
    offset, frames = len(MAGIC_LINE), []
    while offset < len(data):
        kind, length = struct.unpack_from(">BI", data, offset)
        end = offset + 5 + length + 4
        frames.append((kind, offset, end))
        offset = end
    return frames


def _read_all(path, check_links: bool = True):
    genesis, reader = read_chain(path, check_links)
    with reader:
        return genesis, list(reader), reader.trailer


def test_round_trip(tmp_path, built):
    consortium, chain, blocks = built
    out = tmp_path / "chain.lacre"
    written = []
    summary = export_chain(iter(blocks), consortium.genesis, out, progress=written.append)
    assert written == blocks
    assert (summary.blocks, summary.log_size, summary.head_hash) == (5, chain.log_size, chain.head_hash)
    assert summary.log_root == chain.head.log_root and summary.file_bytes == out.stat().st_size
    assert [p.name for p in tmp_path.iterdir()] == ["chain.lacre"]  # no temporary file left
    genesis, read, trailer = _read_all(out)
    assert genesis == consortium.genesis
    assert read == blocks
    assert [b.encode() for b in read] == [b.encode() for b in blocks]
    assert (trailer.blocks, trailer.head_hash, trailer.sha256) == (5, chain.head_hash, summary.sha256)
    assert out.read_bytes().startswith(b"lacre-chain-export/1\nG")


def test_an_empty_chain_round_trips(tmp_path, built):
    consortium, _, _ = built
    summary = export_chain([], consortium.genesis, tmp_path / "empty.lacre")
    assert (summary.blocks, summary.log_size, summary.log_root, summary.head_hash) == (
        0, 0, EMPTY_ROOT, consortium.genesis.hash,
    )
    genesis, read, trailer = _read_all(tmp_path / "empty.lacre")
    assert (genesis, read, trailer.blocks) == (consortium.genesis, [], 0)


def test_reading_streams_blocks_before_the_end_is_checked(tmp_path, built):
    consortium, _, blocks = built
    data = _write(tmp_path / "full.lacre", consortium.genesis, blocks)
    trailer_start = _frames(data)[-1][1]
    (tmp_path / "cut.lacre").write_bytes(data[:trailer_start])
    genesis, reader = read_chain(tmp_path / "cut.lacre")
    assert genesis == consortium.genesis
    assert [next(reader) for _ in blocks] == blocks  # each block comes as soon as it is read
    with pytest.raises(ChainFileError) as caught:
        next(reader)
    assert caught.value.rule == "truncated" and caught.value.offset == trailer_start
    assert f"offset {trailer_start}" in str(caught.value) and "block 6 or the trailer" in str(caught.value)


def test_truncation_anywhere_is_detected(tmp_path, built):
    consortium, _, blocks = built
    data = _write(tmp_path / "full.lacre", consortium.genesis, blocks)
    frames = _frames(data)
    cuts = {0, 5, len(MAGIC_LINE), len(MAGIC_LINE) + 3, len(data) - 1}
    for _, start, end in frames:
        cuts |= {start + 2, start + 5, start + 9, end - 1, end}
    cuts.discard(len(data))
    for cut in sorted(cuts):
        path = tmp_path / f"cut-{cut}.lacre"
        path.write_bytes(data[:cut])
        with pytest.raises(ChainFileError) as caught:
            _read_all(path)
        assert caught.value.rule in ("truncated", "magic"), (cut, caught.value)
        assert "offset" in str(caught.value)


def test_a_flipped_byte_names_the_block_frame(tmp_path, built):
    consortium, _, blocks = built
    data = _write(tmp_path / "full.lacre", consortium.genesis, blocks)
    _, start, end = _frames(data)[3]  # genesis, block 1, block 2, block 3
    damaged = bytearray(data)
    damaged[(start + end) // 2] ^= 0x01
    (tmp_path / "flipped.lacre").write_bytes(bytes(damaged))
    genesis, reader = read_chain(tmp_path / "flipped.lacre")
    assert next(reader) == blocks[0] and next(reader) == blocks[1]
    with pytest.raises(ChainFileError) as caught:
        next(reader)
    assert (caught.value.rule, caught.value.offset) == ("checksum", start)
    assert f"offset {start}" in str(caught.value) and "block frame is corrupted" in str(caught.value)


def test_every_flipped_byte_is_caught(tmp_path, built):
    consortium, _, blocks = built
    data = _write(tmp_path / "full.lacre", consortium.genesis, blocks[:2])
    for position in range(0, len(data), 7):
        damaged = bytearray(data)
        damaged[position] ^= 0x40
        path = tmp_path / "flipped.lacre"
        path.write_bytes(bytes(damaged))
        with pytest.raises(ChainFileError):
            _read_all(path)


def test_a_record_altered_with_valid_checksums_breaks_the_log_root(tmp_path, built):
    consortium, _, blocks = built
    record = bytearray(blocks[2].records[1])
    record[-1] ^= 0x01
    tampered = dataclasses.replace(blocks[2], records=(blocks[2].records[0], bytes(record), *blocks[2].records[2:]))
    _write(tmp_path / "tampered.lacre", consortium.genesis, [*blocks[:2], tampered, *blocks[3:]])
    with pytest.raises(ChainFileError) as caught:
        _read_all(tmp_path / "tampered.lacre")
    assert (caught.value.rule, caught.value.height) == ("log-root", 3)
    assert "block 3" in str(caught.value)


@pytest.mark.parametrize("order, found", [([0, 2, 1, 3, 4], 3), ([0, 1, 3, 4], 4), ([0, 1, 1, 2, 3, 4], 2)],
                         ids=["reordered", "dropped", "repeated"])
def test_reordered_dropped_or_repeated_blocks_are_named(tmp_path, built, order, found):
    consortium, _, blocks = built
    data = _write(tmp_path / "shuffled.lacre", consortium.genesis, [blocks[i] for i in order])
    with pytest.raises(ChainFileError) as caught:
        _read_all(tmp_path / "shuffled.lacre")
    wrong = next(position for position, i in enumerate(order) if i != position)
    assert caught.value.rule == "height" and caught.value.height == found
    assert caught.value.offset == _frames(data)[1 + wrong][1]
    assert f"expected block {wrong + 1}, found block {found}" in str(caught.value)


def test_a_dropped_last_block_is_caught_by_the_trailer(tmp_path, built):
    consortium, _, blocks = built
    data = _write(tmp_path / "full.lacre", consortium.genesis, blocks)
    frames = _frames(data)
    _, last_start, last_end = frames[-2]
    (tmp_path / "short.lacre").write_bytes(data[:last_start] + data[last_end:])
    for check_links in (True, False):
        with pytest.raises(ChainFileError) as caught:
            _read_all(tmp_path / "short.lacre", check_links)
        assert caught.value.rule == "trailer" and "counts 5 blocks, the file holds 4" in str(caught.value)


def test_a_foreign_genesis_breaks_the_first_link(tmp_path, built):
    consortium, _, blocks = built
    other = make_consortium(1).genesis
    _write(tmp_path / "foreign.lacre", other, blocks)
    with pytest.raises(ChainFileError) as caught:
        _read_all(tmp_path / "foreign.lacre")
    assert (caught.value.rule, caught.value.height) == ("previous-hash", 1)


@pytest.mark.parametrize("start, rule", [
    (b"PK\x03\x04 not a chain", "magic"),
    (b"", "magic"),
    (b"lacre-chain-export/2\n", "version"),
    (b"lacre-chain-export/1", "magic"),
])
def test_wrong_magic_or_version(tmp_path, built, start, rule):
    consortium, _, blocks = built
    data = _write(tmp_path / "full.lacre", consortium.genesis, blocks[:1])
    (tmp_path / "bad.lacre").write_bytes(start + data[len(MAGIC_LINE):] if start else b"")
    with pytest.raises(ChainFileError) as caught:
        read_chain(tmp_path / "bad.lacre")
    assert (caught.value.rule, caught.value.offset) == (rule, 0)
    assert "offset 0" in str(caught.value)


def test_bytes_after_the_trailer(tmp_path, built):
    consortium, _, blocks = built
    data = _write(tmp_path / "full.lacre", consortium.genesis, blocks)
    (tmp_path / "long.lacre").write_bytes(data + b"\n")
    with pytest.raises(ChainFileError) as caught:
        _read_all(tmp_path / "long.lacre")
    assert (caught.value.rule, caught.value.offset) == ("trailing-bytes", len(data))


def test_export_refuses_a_broken_chain_and_writes_nothing(tmp_path, built):
    consortium, _, blocks = built
    out = tmp_path / "out.lacre"
    with pytest.raises(LinkError) as caught:
        export_chain([blocks[0], blocks[2]], consortium.genesis, out)
    assert caught.value.rule == "height"
    assert list(tmp_path.iterdir()) == []
    out.write_bytes(b"previous export")
    with pytest.raises(LinkError):
        export_chain([blocks[1]], consortium.genesis, out)
    assert out.read_bytes() == b"previous export"  # atomic: the old file is untouched
