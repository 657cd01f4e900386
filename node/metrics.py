"""Prometheus metrics of one node, on a registry of its own (one per app)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.records_admitted = Counter("lacre_records_admitted", "Records admitted to the mempool", registry=r)
        self.records_refused = Counter(
            "lacre_records_refused", "Records refused on admission", ["reason"], registry=r
        )
        self.records_committed = Counter("lacre_records_committed", "Records committed", registry=r)
        self.blocks_committed = Counter("lacre_blocks_committed", "Blocks committed", registry=r)
        self.height = Gauge("lacre_height", "Height of the last committed block", registry=r)
        self.tree_size = Gauge("lacre_tree_size", "Leaves in the Merkle log", registry=r)
        self.mempool_depth = Gauge("lacre_mempool_depth", "Records waiting for a block", registry=r)
        self.commit_seconds = Histogram(
            "lacre_block_commit_seconds", "Time to build, sign and durably write a block",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5), registry=r,
        )
        self.overloaded = Counter("lacre_overloaded", "Requests answered 503", registry=r)
