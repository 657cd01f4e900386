"""Status proofs at scale: the authenticated map (`ledger.smt`) over LevelDB.

For each size, a map of that many random credentials (random 32-byte keys
and value hashes) is loaded into a fresh LevelDB store in a temporary
directory and compacted, as a long-running node's store would be. Then the
map is reopened with its upper tiles cached, as a running node has them,
and measured, each figure the best of ROUNDS rounds (other processes on
the machine only ever slow a round down):

- status proofs built per second, for random present keys (each round new
  keys, after an untimed warm-up round);
- the same proofs verified per second, as an offline verifier does;
- one block's state update: 10,000 changed credentials (half new, half
  updated) computed; and the same written (synced) and committed.

`bench_status_proofs` returns rows for `client.bench`'s table and prints
nothing.
"""

from __future__ import annotations

import gc
import random
import tempfile
import time
from pathlib import Path

from ledger.leveldb_store import LevelDBStore
from ledger.smt import SparseMerkleMap
from ledger.smt_proof import verify
from ledger.store import WriteBatch

PROOFS_PER_S_MIN = 10_000
VERIFICATIONS_PER_S_MIN = 20_000
UPDATE_S_MAX = 0.5
UPDATE_KEYS = 10_000
ROUNDS = 3
MAP_PREFIX = b"zc"


def _random_pairs(rng: random.Random, count: int) -> list[tuple[bytes, bytes]]:
    pairs = []
    for start in range(0, count, 1 << 20):  # randbytes takes at most 2**28 bytes at once
        chunk = min(1 << 20, count - start)
        keys = rng.randbytes(32 * chunk)
        values = rng.randbytes(32 * chunk)
        pairs += [(keys[i:i + 32], values[i:i + 32]) for i in range(0, 32 * chunk, 32)]
    return pairs


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def bench_map(directory: Path, size: int, proofs: int, seed: int = 1) -> dict[str, float]:
    """Load a map of `size` random credentials under `directory` and measure
    it; returns build_s, proofs_per_s, verifications_per_s, update_s,
    update_written_s, proof_bytes_mean."""
    rng = random.Random(seed)
    pairs = _random_pairs(rng, size)
    store = LevelDBStore(directory / "state.ldb")
    try:
        began = time.perf_counter()
        SparseMerkleMap(store, MAP_PREFIX).load(pairs)
        store.compact()
        build_s = time.perf_counter() - began

        tree = SparseMerkleMap(store, MAP_PREFIX)  # reopened, as a restarted node
        tree.warm_cache()
        root = tree.root()
        rounds = [[pairs[rng.randrange(size)] for _ in range(proofs)] for _ in range(ROUNDS + 1)]
        del pairs
        gc.collect()  # the bulk load's garbage is not the proofs' to collect

        for key, _ in rounds[0]:  # warm-up
            tree.prove(key)
        proof_s = verify_s = float("inf")
        for sample in rounds[1:]:
            began = time.perf_counter()
            built = [tree.prove(key) for key, _ in sample]
            proof_s = min(proof_s, time.perf_counter() - began)
            began = time.perf_counter()
            for (key, value_hash), proof in zip(sample, built):
                verify(root, key, value_hash, proof)
            verify_s = min(verify_s, time.perf_counter() - began)
        proof_bytes_mean = sum(len(proof.encode()) for proof in built) / proofs

        update_s = written_s = float("inf")
        for sample in rounds[1:]:
            changes = dict(_random_pairs(rng, UPDATE_KEYS // 2))
            changes.update((key, rng.randbytes(32)) for key, _ in sample[:UPDATE_KEYS - len(changes)])
            began = time.perf_counter()
            update = tree.update(changes)
            update_s = min(update_s, time.perf_counter() - began)
            batch = WriteBatch()
            update.add_to(batch)
            store.write(batch, sync=True)
            tree.committed(update)
            written_s = min(written_s, time.perf_counter() - began)
    finally:
        store.close()
    return {
        "build_s": build_s,
        "proofs_per_s": _rate(proofs, proof_s),
        "verifications_per_s": _rate(proofs, verify_s),
        "update_s": update_s,
        "update_written_s": written_s,
        "proof_bytes_mean": proof_bytes_mean,
    }


def bench_status_proofs(sizes: tuple[int, ...] = (1_000_000, 10_000_000), quick: bool = False) -> list[dict]:
    """Rows {"figure", "measured", "target", "ok"} for each map size
    (`quick`: 100,000 credentials only)."""
    if quick:
        sizes = (100_000,)
    rows = []
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="lacre-bench-state-") as directory:
            figures = bench_map(Path(directory), size, proofs=UPDATE_KEYS if not quick else 5_000)
        at = f"at {size:,} credentials"
        rows += [
            {"figure": f"status map load + compaction {at} (s)", "measured": figures["build_s"],
             "target": "report", "ok": None},
            {"figure": f"status proofs built/s {at}", "measured": figures["proofs_per_s"],
             "target": f">= {PROOFS_PER_S_MIN:,}", "ok": figures["proofs_per_s"] >= PROOFS_PER_S_MIN},
            {"figure": f"status proofs verified/s {at}", "measured": figures["verifications_per_s"],
             "target": f">= {VERIFICATIONS_PER_S_MIN:,}",
             "ok": figures["verifications_per_s"] >= VERIFICATIONS_PER_S_MIN},
            {"figure": f"status proof bytes (mean) {at}", "measured": figures["proof_bytes_mean"],
             "target": "report", "ok": None},
            {"figure": f"state update of {UPDATE_KEYS:,} credentials {at} (s)",
             "measured": figures["update_s"], "target": f"< {UPDATE_S_MAX}",
             "ok": figures["update_s"] < UPDATE_S_MAX},
            {"figure": f"the same, written (synced) and committed {at} (s)",
             "measured": figures["update_written_s"], "target": "report", "ok": None},
        ]
    return rows
