"""What `lacre monitor` verified, kept on disk so a restart resumes safely.

The state file (JSON, rewritten atomically after every round):

    {"version": 1, "origin": ..., "genesis_hash": hex,
     "latest": HEAD | null,                 largest checkpoint proven consistent
     "nodes": {url: HEAD, ...},             last verified checkpoint of each node
     "evidence": [hex SHA-256, ...]}        evidence entries already reported
    HEAD = {"tree_size", "root_hash" (hex), "node" (url), "checkpoint" (the signed note)}

Every checkpoint in it is verified again against the trust file when it is
loaded: a state file edited by hand, or one of another consortium, is refused.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ledger.checkpoint import Checkpoint, CheckpointError, verify_checkpoint
from ledger.genesis import Trust
from ledger.note import NoteError, parse_note
from ledger.status_proof import checkpoint_height

STATE_VERSION = 1


class MonitorError(Exception):
    """The monitor cannot run: a bad trust or state file (a usage problem, not an alarm)."""


@dataclass(frozen=True, slots=True)
class Head:
    """A checkpoint that verified against the trust file, and the node that showed it."""

    tree_size: int
    root_hash: bytes
    note: str
    node: str

    def to_json(self) -> dict:
        return {"tree_size": self.tree_size, "root_hash": self.root_hash.hex(), "node": self.node, "checkpoint": self.note}

    def short(self) -> str:
        return f"size {self.tree_size} root {self.root_hash.hex()[:16]}"


@dataclass
class MonitorState:
    """What the monitor verified, kept across restarts."""

    origin: str
    genesis_hash: bytes
    nodes: dict[str, Head] = field(default_factory=dict)
    latest: Head | None = None
    evidence: set[str] = field(default_factory=set)

    def to_json(self) -> dict:
        return {
            "version": STATE_VERSION,
            "origin": self.origin,
            "genesis_hash": self.genesis_hash.hex(),
            "latest": self.latest.to_json() if self.latest else None,
            "nodes": {url: head.to_json() for url, head in sorted(self.nodes.items())},
            "evidence": sorted(self.evidence),
        }

    @classmethod
    def from_json(cls, document: dict, trust: Trust) -> "MonitorState":
        """Parse a state document, re-verifying every checkpoint in it against `trust`."""
        try:
            if document["version"] != STATE_VERSION:
                raise MonitorError(f"state version {document['version']}, this monitor writes {STATE_VERSION}")
            if document["origin"] != trust.origin or document["genesis_hash"] != trust.genesis_hash.hex():
                raise MonitorError(f"the state is for log {document['origin']}, the trust file for {trust.origin}")

            def head(entry: dict | None) -> Head | None:
                if entry is None:
                    return None
                verified = verify_note(entry["checkpoint"], trust)
                if verified.tree_size != entry["tree_size"] or verified.root_hash.hex() != entry["root_hash"]:
                    raise MonitorError("a checkpoint in the state differs from its recorded size and root")
                return Head(verified.tree_size, verified.root_hash, entry["checkpoint"], str(entry["node"]))

            nodes = {str(url): head(entry) for url, entry in document["nodes"].items()}
            return cls(
                trust.origin, trust.genesis_hash, nodes, head(document["latest"]), {str(e) for e in document["evidence"]},
            )
        except MonitorError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise MonitorError(f"malformed state: {error}") from None

    @classmethod
    def load(cls, path: Path, trust: Trust) -> "MonitorState":
        if not path.exists():
            return cls(trust.origin, trust.genesis_hash)
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise MonitorError(f"{path}: {error}") from None
        try:
            return cls.from_json(document, trust)
        except MonitorError as error:
            raise MonitorError(f"{path}: {error}") from None

    def save(self, path: Path) -> None:
        """Write atomically: a temporary file, fsynced, renamed over `path`."""
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(temporary, "w") as file:
                file.write(json.dumps(self.to_json(), indent=2) + "\n")
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except OSError as error:
            raise MonitorError(f"cannot save the state: {error}") from None


def verify_note(note: str, trust: Trust) -> Checkpoint:
    """Open a checkpoint note cosigned by a quorum of the authority set in force at its block.

    The block height is read from the `lacre-block` line before any
    signature is checked; it is trusted only once that set's quorum has signed
    the text that carries it (as client.verify does). Raises NoteError or
    CheckpointError.
    """
    epoch = trust.at(_claimed_height(note))
    checkpoint, _ = verify_checkpoint(note, epoch.verifiers, epoch.quorum, origin=trust.origin)
    return checkpoint


def _claimed_height(note: str) -> int | None:
    try:
        text, _ = parse_note(note)
        return checkpoint_height(Checkpoint.parse(text))
    except (NoteError, CheckpointError):
        return None  # verify_checkpoint refuses it, with the reason
