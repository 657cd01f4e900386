"""What `lacre audit` reports: counts, the first violation, and the report itself.

`AuditCounts` is what the replay accumulates (and what a saved audit state
carries, so a resumed audit reports the whole chain); `Violation` is the
first rule the chain breaks; `AuditReport` is the whole outcome, as JSON
(`to_json`) and as a short human text (`render`); the `*_json` functions
describe the auditor's head, epochs and signers for it. Nothing here checks
anything: see client.audit.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ledger import codec
from ledger.block import BlockHeader, CommitCertificate
from ledger.governance import ConsortiumHistory
from ledger.state import StoreStateView

HEX_BYTES_MAX = 96
"""Bytes shown in full in a violation; longer values are cut, with their length."""
LISTED_SIGNERS_MAX = 8


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def hex_bytes(data: bytes, limit: int = HEX_BYTES_MAX) -> str:
    """Lowercase hex of `data`, cut after `limit` bytes with the full length appended."""
    if len(data) <= limit:
        return data.hex()
    return f"{data[:limit].hex()}... ({len(data)} bytes)"


@dataclass
class Violation:
    """The first rule the chain breaks.

    `height` is the block (0: the genesis against the trust file; None: a
    fault of the file that no block owns), `record_index` the record within
    the block when one is to blame, `rule` the name `ledger` uses for it
    (BlockError / RuleError rules, or a chain-file rule), `data` the bytes
    involved as hex (see `hex_bytes`).
    """

    height: int | None
    rule: str
    detail: str
    record_index: int | None = None
    data: dict[str, str] = field(default_factory=dict)
    offset: int | None = None

    def where(self) -> str:
        if self.height is None:
            place = f"offset {self.offset}" if self.offset is not None else "the source"
        elif self.height == 0:
            place = "the genesis"
        else:
            place = f"block {self.height}"
        if self.record_index is not None:
            place += f", record {self.record_index}"
        return place

    def to_json(self) -> dict:
        document: dict = {"height": self.height, "record_index": self.record_index, "rule": self.rule,
                          "detail": self.detail, "bytes": dict(self.data)}
        if self.offset is not None:
            document["offset"] = self.offset
        return document


SIGNATURE_KINDS = ("records", "precommits", "cosignatures", "approvals")


@dataclass
class AuditCounts:
    """Totals of the blocks replayed so far; O(signers + kinds) in size, never O(records)."""

    blocks: int = 0
    records: int = 0
    by_kind: Counter = field(default_factory=Counter)
    by_signer: dict[bytes, Counter] = field(default_factory=dict)
    signatures: Counter = field(default_factory=Counter)

    def count_records(self, signed: Counter) -> None:
        """Count a block's records, given as a Counter of (signer, kind) pairs."""
        for (signer, kind), count in signed.items():
            self.records += count
            self.by_kind[kind] += count
            kinds = self.by_signer.get(signer)
            if kinds is None:
                kinds = self.by_signer[signer] = Counter()
            kinds[kind] += count

    def to_json(self) -> dict:
        return {
            "blocks": self.blocks, "records": self.records, "by_kind": dict(sorted(self.by_kind.items())),
            "by_signer": {key.hex(): dict(sorted(kinds.items())) for key, kinds in self.by_signer.items()},
            "signatures": {kind: self.signatures[kind] for kind in SIGNATURE_KINDS},
        }

    @classmethod
    def from_json(cls, document: dict) -> "AuditCounts":
        return cls(
            int(document["blocks"]), int(document["records"]), Counter(document["by_kind"]),
            {bytes.fromhex(key): Counter(kinds) for key, kinds in document["by_signer"].items()},
            Counter(document["signatures"]),
        )


@dataclass
class AuditReport:
    """The outcome of an audit. `ok` only when every block replayed held every rule,
    no equivocation was proven, and the audit ran to the source's end."""

    source: str
    origin: str
    genesis_hash: bytes
    first_height: int
    """The first block this run replayed (greater than 1 when resumed)."""
    counts: AuditCounts
    head: dict | None = None
    """The last block that held every rule: height, hash, log size and root, state root, time."""
    issuers: list[dict] = field(default_factory=list)
    epochs: list[dict] = field(default_factory=list)
    checkpoint: str | None = None
    trust: str | None = None
    evidence: list[dict] = field(default_factory=list)
    violation: Violation | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    interrupted: bool = False
    elapsed_s: float = 0.0
    records_this_run: int = 0
    state_file: str | None = None

    @property
    def height(self) -> int:
        return self.head["height"] if self.head else 0

    @property
    def ok(self) -> bool:
        return (self.violation is None and self.error is None and not self.interrupted
                and not any(item["verified"] for item in self.evidence))

    @property
    def records_per_s(self) -> float:
        return self.records_this_run / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_json(self) -> dict:
        counts = self.counts.to_json()
        return {
            "ok": self.ok, "source": self.source, "origin": self.origin, "genesis_hash": self.genesis_hash.hex(),
            "blocks": counts["blocks"], "first_height": self.first_height, "records": counts["records"],
            "records_by_kind": counts["by_kind"], "records_by_issuer": self.issuers,
            "signatures_verified": counts["signatures"], "epochs": self.epochs,
            "authorities": self.epochs[-1]["authorities"] if self.epochs else [],
            "head": self.head, "checkpoint": self.checkpoint, "trust": self.trust, "evidence": self.evidence,
            "violation": self.violation.to_json() if self.violation else None, "error": self.error,
            "warnings": self.warnings, "interrupted": self.interrupted, "state_file": self.state_file,
            "elapsed_s": round(self.elapsed_s, 3), "records_per_s": round(self.records_per_s, 1),
        }

    def render(self) -> str:
        """A short human report: a few lines whatever the chain's size."""
        counts = self.counts
        lines = [f"audit of {self.source}: {self.origin}, genesis {self.genesis_hash.hex()[:16]}..."]
        if self.height > self.first_height:
            span = f"blocks {self.first_height}-{self.height}"
        else:
            span = f"block {self.height}" if self.height == self.first_height else "no new block"
        before = self.first_height - 1
        resumed = (f" (resumed: {'block 1' if before == 1 else f'blocks 1-{before}'} audited before)"
                   if before > 0 else "")
        lines.append(f"  replayed {span}{resumed}: {_plural(counts.blocks, 'block')}, "
                     f"{_plural(counts.records, 'record')} in all")
        if counts.by_kind:
            lines.append("  records by kind: " + ", ".join(f"{n} {kind}" for kind, n in sorted(counts.by_kind.items())))
        if self.issuers:
            shown = [f"{i['name'] or '?'} ({i['role']} {i['key'][:12]}) {i['records']}"
                     for i in self.issuers[:LISTED_SIGNERS_MAX]]
            more = len(self.issuers) - LISTED_SIGNERS_MAX
            lines.append("  records by issuer: " + "; ".join(shown) + (f"; and {more} more" if more > 0 else ""))
        signatures = counts.signatures
        lines.append(f"  signatures verified: {signatures['records']} records, {signatures['precommits']} precommits, "
                     f"{signatures['cosignatures']} checkpoint cosignatures, {signatures['approvals']} governance approvals")
        for epoch in self.epochs:
            names = " ".join(a["name"] for a in epoch["authorities"])
            lines.append(f"  epoch {epoch['epoch']} from block {epoch['from_height']}: {names} (quorum {epoch['quorum']})")
        if self.trust:
            lines.append(f"  trust file: {self.trust}")
        if self.head:
            head = self.head
            lines.append(f"  head: block {head['height']} {head['hash'][:16]}..., tree size {head['log_size']}, "
                         f"log root {head['log_root'][:16]}..., state root {head['state_root'][:16]}...")
        if self.checkpoint and self.head:
            signers = [line.split()[1] for line in self.checkpoint.splitlines() if line.startswith("\u2014 ")]
            lines.append(f"  checkpoint of block {self.head['height']} (tree size {self.head['log_size']}) "
                         f"cosigned by {len(signers)}: {' '.join(signers)}")
        for item in self.evidence:
            verdict = "PROVEN equivocation" if item["verified"] else "unproven claim"
            lines.append(f"  evidence ({verdict}): {item['authority']} at height {item['height']} round {item['round']}: "
                         f"{item['detail']}")
        lines += [f"  warning: {warning}" for warning in self.warnings]
        rate = f"{self.elapsed_s:.1f} s, {self.records_per_s:,.0f} records/s"
        if self.violation is not None:
            violation = self.violation
            lines.append(f"VIOLATION at {violation.where()}: {violation.rule}: {violation.detail}")
            lines += [f"  {name}: {value}" for name, value in violation.data.items()]
        elif self.error is not None:
            lines.append(f"FAILED: {self.error}")
        elif self.interrupted:
            lines.append(f"INTERRUPTED after block {self.height} ({rate})"
                         + (f"; continue with --resume --state {self.state_file}" if self.state_file else ""))
        elif not self.ok:
            lines.append(f"FAILED: an authority equivocated ({rate})")
        else:
            lines.append(f"audit OK: every rule holds in blocks 1-{self.height} ({rate})" if self.height
                         else f"audit OK: the chain has no block yet ({rate})")
        return "\n".join(lines)


# -- the auditor's view, for the report ---------------------------------------------

def head_json(head_block: bytes) -> dict | None:
    """The head block ({"certificate", "header"} canonical bytes, or empty) as the report shows it."""
    if not head_block:
        return None
    header = BlockHeader.from_map(codec.decode(head_block)["header"])
    return {"height": header.height, "hash": header.hash.hex(), "log_size": header.log_size,
            "log_root": header.log_root.hex(), "state_root": header.state_root.hex(),
            "timestamp_ms": header.timestamp_ms, "proposer": header.proposer, "round": header.round}


def checkpoint_note(head_block: bytes, origin: str, history: ConsortiumHistory) -> str | None:
    """The head block's quorum-cosigned checkpoint, as a C2SP signed note."""
    if not head_block:
        return None
    mapping = codec.decode(head_block)
    header = BlockHeader.from_map(mapping["header"])
    certificate = CommitCertificate.from_map(mapping["certificate"])
    return certificate.checkpoint_note(header, origin, history.at(header.height).authority_set)


def epochs_json(history: ConsortiumHistory) -> list[dict]:
    return [
        {"epoch": e.epoch, "from_height": e.from_height, "quorum": e.authority_set.quorum,
         "block_records_max": e.block_records_max, "change_leaf": e.leaf_index,
         "authorities": [{"name": a.name, "key": a.public_key.hex()} for a in e.authorities]}
        for e in history.epochs
    ]


def issuers_json(counts: AuditCounts, history: ConsortiumHistory, state: StoreStateView) -> list[dict]:
    """Records by signing key, most first, with the name the chain gives the key."""
    authorities = {a.public_key: a.name for e in history.epochs for a in e.authorities}
    rows = []
    for key, kinds in counts.by_signer.items():
        entry = state.issuer(key)
        if entry is not None:
            name, role = entry.name, "issuer"
        else:
            name, role = authorities.get(key, ""), "authority" if key in authorities else "unknown"
        rows.append({"key": key.hex(), "name": name, "role": role, "records": sum(kinds.values()),
                     "kinds": dict(sorted(kinds.items()))})
    rows.sort(key=lambda row: (-row["records"], row["key"]))
    return rows
