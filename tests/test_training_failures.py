"""Failures and checkpoint restarts: the SimPy process agrees with Young/Daly's closed forms."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.errors import LifecostError
from simulator.failures import (
    LLAMA3_MTBF_GPU_H,
    FailureModel,
    daly_interval_s,
    daly_wall_s,
    expected_wall_s,
    plan_checkpoints,
    simulate_job,
    young_interval_s,
)


def test_young_interval_is_sqrt_of_twice_checkpoint_cost_times_mtbf():
    assert young_interval_s(300.0, 36_000.0) == pytest.approx(math.sqrt(2 * 300 * 36_000))


def test_daly_interval_approaches_young_minus_delta_when_checkpoints_are_cheap():
    d, m = 1.0, 1e7
    assert daly_interval_s(d, m) == pytest.approx(young_interval_s(d, m) - d, rel=1e-3)
    assert daly_interval_s(3.0 * m, m) == m  # δ ≥ 2M: checkpoint every M


def test_daly_interval_is_near_the_minimum_of_the_expected_wall_clock():
    work, d, r, m = 200 * 3600.0, 600.0, 900.0, 8 * 3600.0
    tau = daly_interval_s(d, m)
    best = min(daly_wall_s(work, t, d, r, m) for t in [tau * f for f in (0.5, 0.7, 0.85, 1.15, 1.4, 2.0)])
    assert daly_wall_s(work, tau, d, r, m) <= best


def test_des_mean_wall_clock_matches_the_closed_form():
    work, m, d, r = 100 * 3600.0, 10 * 3600.0, 300.0, 600.0
    tau = daly_interval_s(d, m)
    sim = simulate_job(work, tau, d, r, m, runs=800, seed=7)
    analytic = expected_wall_s(work, tau, d, r, m)
    assert abs(sim.mean_wall_s - analytic) < 4 * sim.sem_wall_s
    assert sim.mean_failures == pytest.approx(analytic / m, rel=0.05)  # Wald: E[failures] = E[wall] / M


def test_des_agrees_with_the_closed_form_at_a_non_optimal_interval_and_a_short_last_segment():
    work, m, d, r = 37 * 3600.0 + 1234.0, 5 * 3600.0, 120.0, 300.0
    tau = 2 * 3600.0
    sim = simulate_job(work, tau, d, r, m, runs=800, seed=3)
    assert abs(sim.mean_wall_s - expected_wall_s(work, tau, d, r, m)) < 4 * sim.sem_wall_s


def test_daly_published_form_equals_the_exact_sum_when_the_interval_divides_the_work():
    assert daly_wall_s(40_000.0, 4_000.0, 60.0, 120.0, 30_000.0) == pytest.approx(expected_wall_s(40_000.0, 4_000.0, 60.0, 120.0, 30_000.0))


def test_same_seed_same_runs_different_seed_different_runs():
    a = simulate_job(20_000.0, 3_000.0, 60.0, 120.0, 9_000.0, runs=50, seed=1)
    b = simulate_job(20_000.0, 3_000.0, 60.0, 120.0, 9_000.0, runs=50, seed=1)
    c = simulate_job(20_000.0, 3_000.0, 60.0, 120.0, 9_000.0, runs=50, seed=2)
    assert (a.walls_s == b.walls_s).all() and not (a.walls_s == c.walls_s).all()


def test_no_failures_means_wall_clock_is_work_plus_checkpoints():
    sim = simulate_job(10_000.0, 2_500.0, 10.0, 100.0, 1e15, runs=5)
    assert sim.mean_wall_s == pytest.approx(10_000.0 + 4 * 10.0)
    assert sim.mean_failures == 0


@settings(max_examples=60, deadline=None)
@given(
    work_h=st.floats(0.1, 5_000),
    gpus=st.integers(1, 16_384),
    ckpt_s=st.floats(1, 1_800),
)
def test_more_gpus_never_shorten_the_failure_overhead_and_the_wall_clock_covers_the_work(work_h, gpus, ckpt_s):
    few = plan_checkpoints(work_h * 3600, gpus, ckpt_s)
    many = plan_checkpoints(work_h * 3600, gpus * 2, ckpt_s)
    assert few.expected_wall_s >= few.work_s
    assert many.overhead_fraction >= few.overhead_fraction - 1e-12
    assert few.cluster_mtbf_s == pytest.approx(LLAMA3_MTBF_GPU_H * 3600 / gpus)


def test_a_16k_gpu_cluster_fails_every_few_hours_like_llama3():
    plan = plan_checkpoints(54 * 24 * 3600.0, 16_384, 60.0)
    assert plan.cluster_mtbf_s / 3600 == pytest.approx(3.09, abs=0.05)
    assert 0.0 < plan.overhead_fraction < 0.2


def test_failed_attempts_are_a_geometric_count():
    assert FailureModel(attempt_failure_prob=0.25).expected_attempts == pytest.approx(4 / 3)
    with pytest.raises(LifecostError, match="attempt_failure_prob"):
        FailureModel(attempt_failure_prob=1.0)
    with pytest.raises(LifecostError, match="mtbf_gpu_h"):
        FailureModel(mtbf_gpu_h=0)
