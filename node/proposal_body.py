"""A proposal's block body in compact form: the header and its records' hashes.

Every authority already receives every record by mempool gossip, so sending
the records again in the proposal (and once more in each relay and
retransmission) would only cost bandwidth, MessagePack and signature hashing
on every node. The body is the canonical map

    {"header": <block header map>, "record_hashes": [<32-byte leaf hash>, ...]}

and the receiver resolves each hash to a record it holds or fetches
(`node.consensus_driver`). The full form, `{"header", "records"}`, is still
read: a signed state persisted by an older node may hold one.
"""

from __future__ import annotations

from dataclasses import dataclass

from consensus.messages import HASH_BYTES
from ledger import codec
from ledger.block import BlockError, BlockHeader
from ledger.merkle import leaf_hash
from ledger.records import leaf_data


@dataclass(frozen=True, slots=True)
class Body:
    """A decoded proposal body: the header and its records' hashes, in order.

    `records` holds the record bytes of a full body (the older form).
    """

    header: BlockHeader
    record_hashes: list[bytes]
    records: list[bytes] | None = None


def encode_body(header: BlockHeader, record_hashes: list[bytes]) -> bytes:
    return codec.encode({"header": header.to_map(), "record_hashes": record_hashes})


def decode_body(body: bytes) -> Body:
    """Parse a body, compact or full; raises BlockError (or codec.CodecError) on anything else."""
    mapping = codec.decode(body)
    if type(mapping) is not dict or set(mapping) not in ({"header", "record_hashes"}, {"header", "records"}):
        raise BlockError("encoding", "proposal body fields")
    header = BlockHeader.from_map(mapping["header"])
    if "records" in mapping:
        records = mapping["records"]
        if type(records) is not list or not all(type(r) is bytes for r in records):
            raise BlockError("encoding", "proposal body records")
        return Body(header, [leaf_hash(leaf_data(r)) for r in records], records)
    hashes = mapping["record_hashes"]
    if type(hashes) is not list or not all(type(h) is bytes and len(h) == HASH_BYTES for h in hashes):
        raise BlockError("encoding", "proposal body record hashes")
    return Body(header, hashes)
