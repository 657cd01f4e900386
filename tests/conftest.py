"""Shared fixtures: a one-authority consortium with a registered issuer."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pytest

from ledger.block import CommitCertificate, precommit
from ledger.chain import Chain
from ledger.crypto import KeyPair
from ledger.genesis import Authority, AuthoritySet, Genesis
from ledger.records import CredentialIssuance, IssuerRegistration, SignedRecord
from ledger.store import MemoryStore


def seeded_key(name: str) -> KeyPair:
    """Deterministic keys keep failures reproducible."""
    return KeyPair(name, hashlib.sha256(name.encode()).digest())


@dataclass
class Consortium:
    authorities: list[KeyPair]
    issuer: KeyPair
    genesis: Genesis

    @property
    def authority(self) -> KeyPair:
        return self.authorities[0]

    def registration(self, issuer: KeyPair | None = None, by: KeyPair | None = None) -> SignedRecord:
        issuer = issuer or self.issuer
        return SignedRecord.sign(IssuerRegistration(issuer.public_key, f"Issuer {issuer.name}", "MX"), by or self.authority)

    def issuance(self, n: int, issuer: KeyPair | None = None) -> SignedRecord:
        credential_id = hashlib.sha256(b"credential %d" % n).digest()
        return SignedRecord.sign(CredentialIssuance(credential_id, 1_700_000_000 + n), issuer or self.issuer)

    def commit(self, chain: Chain, records: list[SignedRecord], timestamp_ms: int = 1_700_000_000_000) -> None:
        """Build, certify (every authority precommits) and commit one block."""
        proposer = chain.authority_set.proposer(chain.height + 1, 0).name
        proposed = chain.propose(records, proposer, 0, timestamp_ms)
        assert not proposed.rejected, proposed.rejected
        header = proposed.header
        signatures = tuple(precommit(k, header, 0, chain.chain_id, chain.origin) for k in self.authorities)
        chain.commit(header, proposed.records, CommitCertificate(header.height, 0, header.hash, signatures), proposed.delta)


def make_consortium(n: int = 1) -> Consortium:
    authorities = [seeded_key(f"inst-{i}") for i in range(n)]
    genesis = Genesis(
        "test.lacre.local/consortium",
        AuthoritySet(tuple(Authority(k.name, k.public_key) for k in authorities)),
        1_700_000_000,
    )
    return Consortium(authorities, seeded_key("issuer"), genesis)


@pytest.fixture
def consortium() -> Consortium:
    return make_consortium(1)


@pytest.fixture
def chain(consortium: Consortium) -> Chain:
    return Chain(MemoryStore(), consortium.genesis)
