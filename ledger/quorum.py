"""Quorum arithmetic and proposer rotation, the whole of it.

n authorities tolerate f = floor((n - 1) / 3) Byzantine ones; any two quorums
of q = floor(2n / 3) + 1 intersect in at least f + 1 authorities, so in at
least one honest one, which is what makes a certificate final.
"""

from __future__ import annotations


def faults_tolerated(n: int) -> int:
    """f: the most Byzantine authorities n can tolerate."""
    if n < 1:
        raise ValueError("an authority set has at least one member")
    return (n - 1) // 3


def quorum(n: int) -> int:
    """q: signatures needed for a certificate among n authorities."""
    if n < 1:
        raise ValueError("an authority set has at least one member")
    return 2 * n // 3 + 1


def proposer_index(height: int, round: int, n: int) -> int:
    """Index of the proposer of (height, round): authorities[(h + r) mod n]."""
    if height < 0 or round < 0:
        raise ValueError("height and round are non-negative")
    return (height + round) % n
