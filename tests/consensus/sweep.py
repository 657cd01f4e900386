"""Run many simulation seeds, in parallel processes, with progress; behind scripts/simulate."""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from collections.abc import Iterable

from tests.consensus.simulator import Result, run_seed

FAULT_PHASE_MS_MAX = 6_000


def _run(arguments: tuple[int, int]) -> Result:
    seed, fault_phase_ms_max = arguments
    return run_seed(seed, fault_phase_ms_max)


def run_seeds(
    seeds: Iterable[int], processes: int = 2, fault_phase_ms_max: int = FAULT_PHASE_MS_MAX,
    progress_every: int = 0, out=sys.stderr,
) -> list[Result]:
    """Failing results of `seeds` (all are run). Each process runs whole seeds, so results are exact."""
    seeds = list(seeds)
    failures: list[Result] = []
    start = time.monotonic()
    work = [(seed, fault_phase_ms_max) for seed in seeds]
    if processes <= 1:
        results = map(_run, work)
        pool = None
    else:
        pool = multiprocessing.get_context("fork").Pool(processes)
        results = pool.imap_unordered(_run, work, chunksize=16)
    try:
        for done, result in enumerate(results, 1):
            if result.failure is not None:
                failures.append(result)
                print(f"FAIL seed {result.seed}: {result.failure}\n  options: {result.options.describe()}\n"
                      f"  replay: {result.replay}", file=out, flush=True)
            if progress_every and done % progress_every == 0:
                elapsed = time.monotonic() - start
                print(f"{done}/{len(seeds)} seeds, {len(failures)} failing, {done / elapsed:.0f} seeds/s", file=out, flush=True)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return sorted(failures, key=lambda r: r.seed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/simulate", description="Deterministic consensus simulation over many seeds.")
    parser.add_argument("--seeds", type=int, default=1000, help="how many seeds to run")
    parser.add_argument("--start", type=int, default=0, help="first seed")
    parser.add_argument("--seed", type=int, help="replay exactly this one seed, verbosely")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--fault-phase-ms-max", type=int, default=FAULT_PHASE_MS_MAX)
    arguments = parser.parse_args(argv)
    if arguments.seed is not None:
        result = run_seed(arguments.seed, arguments.fault_phase_ms_max)
        print(f"seed {result.seed}: {result.options.describe()}")
        print(f"heights {result.heights} after {result.time_ms} ms virtual, {result.deliveries} deliveries, "
              f"{result.evidence} evidence, {result.acknowledged} records acknowledged")
        print("FAIL: " + result.failure if result.failure else "ok")
        return 1 if result.failure else 0
    start = time.monotonic()
    seeds = range(arguments.start, arguments.start + arguments.seeds)
    failures = run_seeds(seeds, arguments.processes, arguments.fault_phase_ms_max, max(1, arguments.seeds // 20))
    elapsed = time.monotonic() - start
    print(f"{arguments.seeds} seeds from {arguments.start}: {len(failures)} failing, "
          f"{elapsed:.1f} s, {arguments.seeds / elapsed:.1f} seeds/s on {arguments.processes} processes")
    for result in failures:
        print(f"  {result.replay}")
    return 1 if failures else 0
