"""Genesis: the consortium's origin and first authority set, and the trust file.

The genesis document is fixed forever; its hash names the chain. Block 1
links to it as its previous hash. `consortium.json` (the trust file) is what a
verifier needs and nothing more: the origin, the genesis hash, the quorum and
each authority's note verifier key and URL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ledger import codec, crypto
from ledger.quorum import proposer_index
from ledger.quorum import quorum as _quorum
from ledger.note import NoteVerifier, parse_verifier_key

GENESIS_VERSION = 1
BLOCK_RECORDS_MAX_DEFAULT = 10_000


class GenesisError(ValueError):
    """A genesis document or trust file that is malformed or inconsistent."""


def _check_name(name: object) -> str:
    if (
        type(name) is not str or not name or len(name) > 64
        or any(c.isspace() or c == "+" for c in name) or not name.isprintable()
    ):
        raise GenesisError(f"authority name {name!r} must be 1-64 printable characters without spaces or '+'")
    return name


@dataclass(frozen=True, slots=True)
class Authority:
    name: str
    public_key: bytes

    def __post_init__(self) -> None:
        _check_name(self.name)
        if type(self.public_key) is not bytes or len(self.public_key) != crypto.PUBLIC_KEY_BYTES:
            raise GenesisError(f"authority {self.name}: public key must be 32 bytes")

    @property
    def verifier(self) -> NoteVerifier:
        return NoteVerifier.from_key(self.name, self.public_key)


@dataclass(frozen=True, slots=True)
class AuthoritySet:
    """An ordered authority set: order fixes proposer rotation."""

    authorities: tuple[Authority, ...]

    def __post_init__(self) -> None:
        if not self.authorities:
            raise GenesisError("an authority set has at least one member")
        names = [a.name for a in self.authorities]
        keys = [a.public_key for a in self.authorities]
        if len(set(names)) != len(names) or len(set(keys)) != len(keys):
            raise GenesisError("authority names and keys must be unique")

    def __len__(self) -> int:
        return len(self.authorities)

    @property
    def quorum(self) -> int:
        return _quorum(len(self.authorities))

    def proposer(self, height: int, round: int) -> Authority:
        return self.authorities[proposer_index(height, round, len(self.authorities))]

    def by_name(self, name: str) -> Authority | None:
        for authority in self.authorities:
            if authority.name == name:
                return authority
        return None

    def by_key(self, public_key: bytes) -> Authority | None:
        for authority in self.authorities:
            if authority.public_key == public_key:
                return authority
        return None

    def index(self, name: str) -> int:
        for i, authority in enumerate(self.authorities):
            if authority.name == name:
                return i
        raise KeyError(name)

    @property
    def verifiers(self) -> list[NoteVerifier]:
        return [a.verifier for a in self.authorities]


@dataclass(frozen=True, slots=True)
class Genesis:
    origin: str
    authority_set: AuthoritySet
    timestamp: int
    block_records_max: int = BLOCK_RECORDS_MAX_DEFAULT

    def __post_init__(self) -> None:
        if (
            type(self.origin) is not str or not self.origin or len(self.origin) > 200
            or any(c.isspace() for c in self.origin) or not self.origin.isprintable()
        ):
            raise GenesisError("origin must be a non-empty schema-less URL without spaces")
        if type(self.timestamp) is not int or self.timestamp < 0:
            raise GenesisError("timestamp must be unix seconds")
        if type(self.block_records_max) is not int or not 1 <= self.block_records_max <= 100_000:
            raise GenesisError("block_records_max must be in 1..100000")

    @property
    def authorities(self) -> tuple[Authority, ...]:
        return self.authority_set.authorities

    def to_map(self) -> dict:
        return {
            "authorities": [{"name": a.name, "public_key": a.public_key} for a in self.authorities],
            "block_records_max": self.block_records_max,
            "origin": self.origin,
            "timestamp": self.timestamp,
            "v": GENESIS_VERSION,
        }

    def encode(self) -> bytes:
        return codec.encode(self.to_map())

    @property
    def hash(self) -> bytes:
        return crypto.sha256(self.encode())

    @classmethod
    def decode(cls, data: bytes) -> "Genesis":
        try:
            mapping = codec.decode(data)
            if mapping.get("v") != GENESIS_VERSION:
                raise GenesisError("unsupported genesis version")
            authorities = tuple(Authority(a["name"], a["public_key"]) for a in mapping["authorities"])
            return cls(mapping["origin"], AuthoritySet(authorities), mapping["timestamp"], mapping["block_records_max"])
        except (codec.CodecError, KeyError, TypeError, AttributeError) as error:
            raise GenesisError(f"malformed genesis: {error}") from None

    # genesis.json: the same fields, keys as hex, for people and tools.
    def to_json(self) -> dict:
        return {
            "origin": self.origin,
            "timestamp": self.timestamp,
            "block_records_max": self.block_records_max,
            "authorities": [{"name": a.name, "public_key": a.public_key.hex()} for a in self.authorities],
            "genesis_hash": self.hash.hex(),
        }

    @classmethod
    def from_json(cls, document: dict) -> "Genesis":
        try:
            authorities = tuple(
                Authority(a["name"], bytes.fromhex(a["public_key"])) for a in document["authorities"]
            )
            genesis = cls(
                document["origin"], AuthoritySet(authorities), document["timestamp"],
                document.get("block_records_max", BLOCK_RECORDS_MAX_DEFAULT),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            if isinstance(error, GenesisError):
                raise
            raise GenesisError(f"malformed genesis.json: {error}") from None
        if "genesis_hash" in document and document["genesis_hash"] != genesis.hash.hex():
            raise GenesisError("genesis_hash does not match the genesis contents")
        return genesis

    @classmethod
    def load(cls, path: str | Path) -> "Genesis":
        try:
            return cls.from_json(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as error:
            raise GenesisError(f"{path}: {error}") from None


@dataclass(frozen=True, slots=True)
class TrustedAuthority:
    name: str
    verifier: NoteVerifier
    url: str


@dataclass(frozen=True, slots=True)
class TrustedEpoch:
    """One authority set of the consortium's history, in force from `from_height`."""

    epoch: int
    from_height: int
    quorum: int
    authorities: tuple[TrustedAuthority, ...]

    def __post_init__(self) -> None:
        if not self.authorities:
            raise GenesisError(f"epoch {self.epoch} lists no authorities")
        if not 1 <= self.quorum <= len(self.authorities) or self.quorum < _quorum(len(self.authorities)):
            raise GenesisError(
                f"epoch {self.epoch}: quorum {self.quorum} is below the BFT quorum of {len(self.authorities)} authorities"
            )

    @property
    def verifiers(self) -> list[NoteVerifier]:
        return [a.verifier for a in self.authorities]


def _authorities_json(authorities: tuple[TrustedAuthority, ...]) -> list[dict]:
    return [{"name": a.name, "key": a.verifier.encode(), "url": a.url} for a in authorities]


def _authorities_from_json(entries: object) -> tuple[TrustedAuthority, ...]:
    authorities = []
    for entry in entries:  # type: ignore[union-attr]
        verifier = parse_verifier_key(entry["key"])
        if verifier.name != entry["name"]:
            raise GenesisError(f"authority {entry['name']!r}: key names {verifier.name!r}")
        authorities.append(TrustedAuthority(entry["name"], verifier, entry.get("url", "")))
    return tuple(authorities)


@dataclass(frozen=True, slots=True)
class Trust:
    """consortium.json: everything a verifier trusts.

    `authorities` and `quorum` are the current set; `history` lists every
    set since genesis (epoch 0 first), so a checkpoint of block h is checked
    against the set in force at h (`at`). A trust file without "history" is
    a consortium that never changed its set.
    """

    origin: str
    genesis_hash: bytes
    quorum: int
    authorities: tuple[TrustedAuthority, ...]
    history: tuple[TrustedEpoch, ...] = ()

    def __post_init__(self) -> None:
        if not self.authorities:
            raise GenesisError("trust file lists no authorities")
        if not 1 <= self.quorum <= len(self.authorities) or self.quorum < _quorum(len(self.authorities)):
            raise GenesisError(
                f"quorum {self.quorum} is below the BFT quorum of {len(self.authorities)} authorities"
            )
        if not self.history:
            object.__setattr__(self, "history", (TrustedEpoch(0, 1, self.quorum, self.authorities),))
        epochs = self.history
        if [e.epoch for e in epochs] != list(range(len(epochs))) or epochs[0].from_height != 1:
            raise GenesisError("history must list epochs 0, 1, ... from height 1")
        if any(b.from_height <= a.from_height for a, b in zip(epochs, epochs[1:])):
            raise GenesisError("history heights must increase")
        last = epochs[-1]
        if (last.quorum, last.authorities) != (self.quorum, self.authorities):
            raise GenesisError("the current authorities must be the last epoch of the history")

    @property
    def verifiers(self) -> list[NoteVerifier]:
        return [a.verifier for a in self.authorities]

    def at(self, height: int | None) -> TrustedEpoch:
        """The set in force at block `height` (None: the current one)."""
        if height is None:
            return self.history[-1]
        for epoch in reversed(self.history):
            if epoch.from_height <= height:
                return epoch
        return self.history[0]

    def ever_authority(self, public_key: bytes) -> TrustedAuthority | None:
        """The authority with this key in any epoch (issuers registered by a
        since-removed authority stay registered)."""
        for epoch in reversed(self.history):
            for authority in epoch.authorities:
                if authority.verifier.public_key == public_key:
                    return authority
        return None

    @classmethod
    def from_genesis(cls, genesis: Genesis, urls: dict[str, str]) -> "Trust":
        return cls(
            genesis.origin, genesis.hash, genesis.authority_set.quorum,
            tuple(TrustedAuthority(a.name, a.verifier, urls.get(a.name, "")) for a in genesis.authorities),
        )

    def to_json(self) -> dict:
        document = {
            "origin": self.origin,
            "genesis_hash": self.genesis_hash.hex(),
            "quorum": self.quorum,
            "authorities": _authorities_json(self.authorities),
        }
        if len(self.history) > 1:
            document["history"] = [
                {"epoch": e.epoch, "from_height": e.from_height, "quorum": e.quorum,
                 "authorities": _authorities_json(e.authorities)}
                for e in self.history
            ]
        return document

    @classmethod
    def from_json(cls, document: dict) -> "Trust":
        try:
            history = tuple(
                TrustedEpoch(int(e["epoch"]), int(e["from_height"]), int(e["quorum"]), _authorities_from_json(e["authorities"]))
                for e in document.get("history", ())
            )
            return cls(
                document["origin"], bytes.fromhex(document["genesis_hash"]),
                int(document["quorum"]), _authorities_from_json(document["authorities"]), history,
            )
        except GenesisError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise GenesisError(f"malformed trust file: {error}") from None

    @classmethod
    def load(cls, path: str | Path) -> "Trust":
        try:
            return cls.from_json(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as error:
            raise GenesisError(f"{path}: {error}") from None
