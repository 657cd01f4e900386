"""Consortium governance: the authority set and policy in force, and how they change.

Theory of operation. The consortium's current configuration is a state entry
(`ConsortiumEntry`): epoch, the height it applies from, the ordered authority
set and the policy (`block_records_max`). Genesis is epoch 0, from height 1.
A `consortium.change` record whose `epoch` is the current one, submitted by
an authority and carrying valid approvals from a quorum of the current
authorities, produces epoch + 1, in force from the block after the one that
holds it. Every epoch's entry is kept (the history), both as a plain index
for the node and in the authenticated registry map, so a certificate or
checkpoint of any height is checked against the set in force at that height,
and `lacre trust export` hands verifiers the whole history.

Approvals are Ed25519 signatures over

    GOVERNANCE_CONTEXT || chain id (genesis hash) || canonical proposal map

so an approval cannot be replayed on another consortium, another epoch or
another change. At most one change per block: a second would be judged by a
set that is not yet in force.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger import codec, crypto
from ledger.genesis import Authority, AuthoritySet, Genesis
from ledger.records import ConsortiumChange

AUTHORITIES_MAX = 64


class GovernanceError(ValueError):
    """A change the governance rules refuse; `rule` names the rule."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(f"{rule}: {detail}")
        self.rule = rule
        self.detail = detail


def approval_message(chain_id: bytes, change: ConsortiumChange) -> bytes:
    return chain_id + codec.encode(change.proposal_map())


def approve(key: crypto.KeyPair, chain_id: bytes, change: ConsortiumChange) -> tuple[bytes, bytes]:
    """One authority's approval of `change` (its approvals field is ignored)."""
    return key.public_key, key.sign(crypto.GOVERNANCE_CONTEXT, approval_message(chain_id, change))


@dataclass(frozen=True, slots=True)
class ConsortiumEntry:
    epoch: int
    from_height: int
    chain_id: bytes
    authorities: tuple[Authority, ...]
    urls: tuple[str, ...]
    block_records_max: int
    leaf_index: int = -1  # the change that made this epoch; -1 for genesis

    @property
    def authority_set(self) -> AuthoritySet:
        return AuthoritySet(self.authorities)

    @classmethod
    def from_genesis(cls, genesis: Genesis) -> "ConsortiumEntry":
        return cls(
            0, 1, genesis.hash, genesis.authorities, ("",) * len(genesis.authorities), genesis.block_records_max,
        )

    def encode(self) -> bytes:
        return codec.encode({
            "authorities": [[a.name, a.public_key, url] for a, url in zip(self.authorities, self.urls)],
            "block_records_max": self.block_records_max,
            "chain": self.chain_id,
            "epoch": self.epoch,
            "from_height": self.from_height,
            "leaf": self.leaf_index,
        })

    @classmethod
    def decode(cls, data: bytes) -> "ConsortiumEntry":
        m = codec.decode(data)
        authorities = tuple(Authority(name, key) for name, key, _ in m["authorities"])
        urls = tuple(url for _, _, url in m["authorities"])
        return cls(m["epoch"], m["from_height"], m["chain"], authorities, urls, m["block_records_max"], m["leaf"])

    def apply(self, change: ConsortiumChange, signer: bytes, height: int, leaf: int) -> "ConsortiumEntry":
        """The next epoch after `change`, submitted by `signer` in block `height`; or GovernanceError."""
        current = self.authority_set
        if current.by_key(signer) is None:
            raise GovernanceError("governance-by-authority", "only an authority submits a consortium change")
        if change.epoch != self.epoch:
            raise GovernanceError("governance-epoch", f"change is for epoch {change.epoch}; the current one is {self.epoch}")
        message = approval_message(self.chain_id, change)
        approvers = 0
        for key, signature in change.approvals:
            if current.by_key(key) is None:
                raise GovernanceError("governance-approval", f"approval by {key.hex()[:16]}..., not an authority")
            try:
                crypto.verify(key, crypto.GOVERNANCE_CONTEXT, message, signature)
            except crypto.SignatureError:
                raise GovernanceError("governance-approval", f"approval by {key.hex()[:16]}... does not verify") from None
            approvers += 1
        if approvers < current.quorum:
            raise GovernanceError(
                "governance-quorum", f"{approvers} approvals; a change needs {current.quorum} of {len(current)}"
            )
        authorities, urls, records_max = list(self.authorities), list(self.urls), self.block_records_max
        if change.action == "authority.add":
            if current.by_name(change.name) is not None or current.by_key(change.public_key) is not None:
                raise GovernanceError("governance-authority-unique", "name or key already in the authority set")
            if len(authorities) >= AUTHORITIES_MAX:
                raise GovernanceError("governance-authorities-max", f"at most {AUTHORITIES_MAX} authorities")
            try:
                authorities.append(Authority(change.name, change.public_key))
            except ValueError as error:
                raise GovernanceError("governance-authority", str(error)) from None
            urls.append(change.url)
        elif change.action == "authority.remove":
            if current.by_name(change.name) is None:
                raise GovernanceError("governance-authority-known", f"{change.name!r} is not an authority")
            if len(authorities) == 1:
                raise GovernanceError("governance-authorities-min", "the last authority cannot be removed")
            index = current.index(change.name)
            del authorities[index], urls[index]
        else:
            if change.block_records_max > 100_000:
                raise GovernanceError("governance-policy", "block_records_max must be in 1..100000")
            records_max = change.block_records_max
        return ConsortiumEntry(
            self.epoch + 1, height + 1, self.chain_id, tuple(authorities), tuple(urls), records_max, leaf,
        )


class ConsortiumHistory:
    """Every epoch so far, ordered; answers "which set was in force at height h"."""

    def __init__(self, epochs: list[ConsortiumEntry]) -> None:
        if not epochs or any(e.epoch != i for i, e in enumerate(epochs)):
            raise ValueError("a history holds epochs 0, 1, 2, ... in order")
        self.epochs = epochs

    @property
    def current(self) -> ConsortiumEntry:
        return self.epochs[-1]

    def at(self, height: int) -> ConsortiumEntry:
        for entry in reversed(self.epochs):
            if entry.from_height <= height:
                return entry
        return self.epochs[0]

    def append(self, entry: ConsortiumEntry) -> None:
        if entry.epoch != len(self.epochs):
            raise ValueError("epochs are appended in order")
        self.epochs.append(entry)
