"""The deterministic simulation as tests: pinned regression seeds, exact replay, a 500-seed sweep."""

from __future__ import annotations

import pytest

from tests.consensus import sim_app
from tests.consensus.regressions import REGRESSION_SEEDS
from tests.consensus.simulator import run_seed
from tests.consensus.sweep import run_seeds

CI_SEEDS = range(0, 500)
CI_FAULT_PHASE_MS_MAX = 2_500  # short runs: 500 of them stay well under a minute on 2 cores


@pytest.mark.parametrize(("seed", "fault_phase_ms_max", "found"), REGRESSION_SEEDS, ids=[str(s[0]) for s in REGRESSION_SEEDS])
def test_regression_seed(seed: int, fault_phase_ms_max: int, found: str) -> None:
    result = run_seed(seed, fault_phase_ms_max)
    assert result.failure is None, f"{result.failure} (replay: {result.replay}; once found: {found})"


def test_replay_is_exact() -> None:
    first, second = run_seed(12345), run_seed(12345)
    assert (first.heights, first.time_ms, first.deliveries, first.evidence) == (
        second.heights, second.time_ms, second.deliveries, second.evidence)


def test_byzantine_seeds_produce_evidence() -> None:
    """The sweep is not vacuous: with an equivocating authority, honest nodes record evidence."""
    results = [run_seed(seed) for seed in range(40)]
    byzantine = [r for r in results if r.options.byzantine_index is not None]
    assert byzantine and any(r.evidence > 0 for r in byzantine)
    assert all(r.failure is None for r in results)


def test_seed_sweep() -> None:
    failures = run_seeds(CI_SEEDS, processes=2, fault_phase_ms_max=CI_FAULT_PHASE_MS_MAX)
    assert not failures, "\n".join(
        f"seed {r.seed}: {r.failure}; replay: {r.replay} --fault-phase-ms-max {CI_FAULT_PHASE_MS_MAX}" for r in failures)


def test_records_are_acknowledged() -> None:
    """The exactly-once check is not vacuous: clients' records get committed and acknowledged."""
    results = [run_seed(seed, CI_FAULT_PHASE_MS_MAX) for seed in range(10)]
    assert all(r.failure is None for r in results)
    assert all(r.acknowledged > 0 for r in results)


def test_a_block_repeating_a_record_is_invalid() -> None:
    assert sim_app.is_valid(2, sim_app.make_value(2, b"n", [b"a", b"b"]), committed={b"c"})
    assert not sim_app.is_valid(2, sim_app.make_value(2, b"n", [b"a", b"a"]))
    assert not sim_app.is_valid(2, sim_app.make_value(2, b"n", [b"a", b"c"]), committed={b"c"})
