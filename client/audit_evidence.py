"""Evidence of equivocation, as a node serves it, checked with ledger crypto alone.

`GET /v1/evidence` lists pairs of conflicting statements an authority signed:
two votes of one kind, or two proposals, for one (height, round). The client
must not import the consensus code that made them, so this module reads the
pair from its canonical bytes and checks what makes it proof:

- both statements are by the same authority, for the same (height, round,
  kind), and say different things (another block; for proposals, another
  block or valid round);
- that authority is a member of the set in force at that height (from the
  epochs the audit replayed; past the audited head, the latest);
- both signatures verify under its key, over the bytes it signed, under
  `crypto.VOTE_CONTEXT`: a vote's are `ledger.block.vote_message`, a
  proposal's the canonical map {block, chain, height, round, type:
  "proposal", valid_round} (consensus/messages.py, `proposal_message`).

Encoded evidence: {"first": S, "second": S}, each S {"type": "vote", "vote":
{authority, block, checkpoint_sig, height, kind, round, signature}} or
{"type": "proposal", "proposal": {block, height, proposer, round, signature,
valid_round}}. Anything else is an unproven claim, reported as the node's.
"""

from __future__ import annotations

import base64
import json
import urllib.request

from ledger import codec, crypto
from ledger.block import vote_message
from ledger.governance import ConsortiumHistory

_VOTE_FIELDS = {"authority", "block", "checkpoint_sig", "height", "kind", "round", "signature"}
_PROPOSAL_FIELDS = {"block", "height", "proposer", "round", "signature", "valid_round"}


class EvidenceFormatError(ValueError):
    pass


def fetch_evidence(url: str, timeout_s: float = 30.0) -> list[dict]:
    """The node's `/v1/evidence` entries: {"authority", "height", "round", "encoded" (base64)}."""
    with urllib.request.urlopen(url.rstrip("/") + "/v1/evidence", timeout=timeout_s) as response:
        document = json.loads(response.read())
    items = document.get("evidence") if isinstance(document, dict) else None
    if not isinstance(items, list):
        raise EvidenceFormatError("the node's evidence list is malformed")
    return items


def _statement(mapping: object) -> tuple[str, int, int, str, tuple, bytes, bytes]:
    """(authority, height, round, kind, content, signed bytes without chain, signature) of one statement."""
    if type(mapping) is not dict or mapping.get("type") not in ("vote", "proposal"):
        raise EvidenceFormatError("a statement is a tagged vote or proposal")
    if mapping["type"] == "vote":
        vote = mapping.get("vote")
        if type(vote) is not dict or set(vote) != _VOTE_FIELDS or vote["kind"] not in ("prevote", "precommit"):
            raise EvidenceFormatError("vote fields")
        return (vote["authority"], vote["height"], vote["round"], vote["kind"], (vote["block"],),
                vote["block"], vote["signature"])
    proposal = mapping.get("proposal")
    if type(proposal) is not dict or set(proposal) != _PROPOSAL_FIELDS:
        raise EvidenceFormatError("proposal fields")
    return (proposal["proposer"], proposal["height"], proposal["round"], "proposal",
            (proposal["block"], proposal["valid_round"]), proposal["block"], proposal["signature"])


def _signed_bytes(chain_id: bytes, kind: str, height: int, round: int, content: tuple) -> bytes:
    if kind == "proposal":
        block, valid_round = content
        return codec.encode({"block": block, "chain": chain_id, "height": height, "round": round,
                             "type": "proposal", "valid_round": valid_round})
    return vote_message(chain_id, kind, height, round, content[0])


def check_evidence(item: dict, history: ConsortiumHistory, chain_id: bytes) -> dict:
    """One served entry, judged: {"authority", "height", "round", "kind", "verified", "detail"}."""
    claimed = {"authority": item.get("authority"), "height": item.get("height"), "round": item.get("round"),
               "kind": None}

    def unproven(detail: str) -> dict:
        return {**claimed, "verified": False, "detail": f"unproven: {detail}"}

    try:
        encoded = base64.b64decode(item["encoded"], validate=True)
        pair = codec.decode(encoded)
        if type(pair) is not dict or set(pair) != {"first", "second"}:
            raise EvidenceFormatError("evidence fields")
        first, second = _statement(pair["first"]), _statement(pair["second"])
    except (KeyError, TypeError, ValueError) as error:
        return unproven(f"malformed evidence ({error})")
    if not all(type(s[5]) is bytes and len(s[5]) in (0, 32) and type(s[6]) is bytes for s in (first, second)):
        return unproven("malformed block hash or signature")
    authority, height, round, kind = first[:4]
    claimed.update(authority=authority, height=height, round=round, kind=kind)
    if first[:4] != second[:4]:
        return unproven("the two statements are not by one authority for one height, round and kind")
    if first[4] == second[4]:
        return unproven("the two statements say the same thing")
    if type(height) is not int or type(round) is not int or height < 1 or round < 0:
        return unproven("height or round out of range")
    member = history.at(height).authority_set.by_name(authority)
    if member is None:
        return unproven(f"{authority!r} is not an authority at height {height}")
    for statement in (first, second):
        try:
            crypto.verify(member.public_key, crypto.VOTE_CONTEXT,
                          _signed_bytes(chain_id, kind, height, round, statement[4]), statement[6])
        except (crypto.SignatureError, TypeError):
            return unproven(f"a statement is not signed by {authority}")
    blocks = " and ".join(statement[5].hex()[:16] + "..." if statement[5] else "nil" for statement in (first, second))
    return {**claimed, "verified": True, "detail": f"signed two {kind}s, for blocks {blocks}"}
