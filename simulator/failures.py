"""Failures, checkpoints and restarts of a training job: a discrete-event model and its closed form.

The model (Daly 2006, §2): a job needs `work_s` seconds of failure-free compute. It writes a
checkpoint (cost δ = `checkpoint_s`) after every `interval_s` (τ) of compute. Failures arrive as
a Poisson process with mean time between failures M = `mtbf_s` — for a cluster of N GPUs that
fail independently, M = MTBF_gpu / N. A failure loses the work since the last checkpoint
(including a checkpoint being written); the job then restarts (R = `restart_s`: requeue, process
start, checkpoint load), and a failure during a restart starts the restart again.

Closed form: one segment of length t = τ + δ completes in expected time
`E = M · e^{R/M} · (e^{t/M} − 1)` (Daly 2006, "A higher order estimate of the optimum checkpoint
interval for restart dumps", Future Generation Computer Systems 22(3), §3), so the whole job takes
`T_w = M · e^{R/M} · Σ_segments (e^{(τ_i+δ)/M} − 1)`, which is Daly's
`M e^{R/M} (e^{(τ+δ)/M} − 1) · W/τ` when τ divides W. By Wald's identity the expected number of
failures is `T_w / M`.

Optimal interval: Young (1974, "A first order approximation to the optimum checkpoint interval",
CACM 17(9)) τ = sqrt(2 δ M); Daly's higher-order form
τ = sqrt(2 δ M) · [1 + ⅓ sqrt(δ/(2M)) + ⅑ (δ/(2M))] − δ for δ < 2M, else τ = M.

`simulate_job` runs the same model as a SimPy process (a job process interrupted by a failure
process), so the closed form can be checked against it and the model extended where no closed
form exists (`tests/test_training_failures.py` compares the two).

Default failure rate: Meta's Llama 3 pre-training saw 419 unexpected interruptions in 54 days
on 16,384 H100s (Dubey et al. 2024, "The Llama 3 Herd of Models", §3.3.4), i.e. one per
16,384 × 54 × 24 / 419 ≈ 50,700 GPU-hours, hosts and network included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import simpy

from models.errors import LifecostError

LLAMA3_MTBF_GPU_H = 16_384 * 54 * 24 / 419  # ≈ 50,700 GPU-hours between interruptions
DEFAULT_RESTART_S = 600.0  # requeue + process start + checkpoint load: minutes (OPT-175B logbook; MegaScale, Jiang et al. 2024)


@dataclass(frozen=True)
class FailureModel:
    """How often a GPU fails and what a restart costs. `attempt_failure_prob` is the chance a
    finished run is unusable (diverged, bad data, wrong hyperparameters) and must be redone —
    set it from your team's history; 0 means every run is kept."""

    mtbf_gpu_h: float = LLAMA3_MTBF_GPU_H
    restart_s: float = DEFAULT_RESTART_S
    attempt_failure_prob: float = 0.0

    def __post_init__(self) -> None:
        if not self.mtbf_gpu_h > 0:
            raise LifecostError(f"must be > 0, got {self.mtbf_gpu_h}", field="failures.mtbf_gpu_h", fix="hours between failures of one GPU, e.g. 50000")
        if self.restart_s < 0:
            raise LifecostError(f"must be ≥ 0, got {self.restart_s}", field="failures.restart_s")
        if not 0.0 <= self.attempt_failure_prob < 1.0:
            raise LifecostError(
                f"must be in [0, 1), got {self.attempt_failure_prob}", field="failures.attempt_failure_prob", fix="a probability below 1"
            )

    def cluster_mtbf_s(self, num_gpus: int) -> float:
        """Independent failures: the first of N arrives N times as often (M = MTBF_gpu / N)."""
        return self.mtbf_gpu_h * 3600.0 / max(1, num_gpus)

    @property
    def expected_attempts(self) -> float:
        """Runs until one is kept, a geometric count: 1 / (1 − p)."""
        return 1.0 / (1.0 - self.attempt_failure_prob)


def young_interval_s(checkpoint_s: float, mtbf_s: float) -> float:
    """Young (1974): τ = sqrt(2 δ M)."""
    return math.sqrt(2.0 * checkpoint_s * mtbf_s)


def daly_interval_s(checkpoint_s: float, mtbf_s: float) -> float:
    """Daly (2006) §4: the higher-order optimum; falls back to M when δ ≥ 2M."""
    d, m = checkpoint_s, mtbf_s
    if d >= 2.0 * m:
        return m
    x = d / (2.0 * m)
    return math.sqrt(2.0 * d * m) * (1.0 + math.sqrt(x) / 3.0 + x / 9.0) - d


def _segments(work_s: float, interval_s: float) -> tuple[int, float]:
    if not interval_s > 0:
        raise LifecostError(f"checkpoint interval must be > 0 s, got {interval_s}", field="checkpoint_interval_s")
    n_full = int(work_s // interval_s)
    rest = work_s - n_full * interval_s
    if rest <= 1e-9 * interval_s:
        rest = 0.0
    return n_full, rest


def expected_wall_s(work_s: float, interval_s: float, checkpoint_s: float, restart_s: float, mtbf_s: float) -> float:
    """Expected wall-clock of the job under the model above (exact; the last segment may be short)."""
    if work_s <= 0:
        return 0.0
    n_full, rest = _segments(work_s, interval_s)
    lam = 1.0 / mtbf_s
    per_full = math.expm1(lam * (interval_s + checkpoint_s))
    last = math.expm1(lam * (rest + checkpoint_s)) if rest > 0 else 0.0
    return mtbf_s * math.exp(lam * restart_s) * (n_full * per_full + last)


def daly_wall_s(work_s: float, interval_s: float, checkpoint_s: float, restart_s: float, mtbf_s: float) -> float:
    """Daly (2006) as published: M e^{R/M} (e^{(τ+δ)/M} − 1) · W/τ (continuous segment count)."""
    return mtbf_s * math.exp(restart_s / mtbf_s) * math.expm1((interval_s + checkpoint_s) / mtbf_s) * work_s / interval_s


@dataclass(frozen=True)
class FailureSim:
    """Outcome of `runs` simulated executions of one job."""

    runs: int
    mean_wall_s: float
    std_wall_s: float
    mean_failures: float
    walls_s: np.ndarray

    @property
    def sem_wall_s(self) -> float:
        """Standard error of the mean wall-clock."""
        return self.std_wall_s / math.sqrt(self.runs)


def _job(env: simpy.Environment, segments: list[float], checkpoint_s: float, restart_s: float, log: dict):
    """Run each segment (compute + checkpoint write); a failure (an Interrupt) sends us back to the
    last checkpoint after a restart, which a failure can also interrupt."""
    for seg in segments:
        while True:
            try:
                yield env.timeout(seg + checkpoint_s)
                break
            except simpy.Interrupt:
                log["failures"] += 1
                while True:  # restart until one completes
                    try:
                        yield env.timeout(restart_s)
                        break
                    except simpy.Interrupt:
                        log["failures"] += 1
    log["done_s"] = env.now


def _failures(env: simpy.Environment, job: simpy.Process, mtbf_s: float, rng: np.random.Generator):
    while job.is_alive:
        yield env.timeout(rng.exponential(mtbf_s))
        if job.is_alive:
            job.interrupt("gpu failure")


def simulate_job(
    work_s: float,
    interval_s: float,
    checkpoint_s: float,
    restart_s: float,
    mtbf_s: float,
    runs: int = 1000,
    seed: int = 0,
) -> FailureSim:
    """Simulate `runs` independent executions (SimPy), each with its own seeded failure stream."""
    n_full, rest = _segments(work_s, interval_s)
    segments = [interval_s] * n_full + ([rest] if rest > 0 else [])
    walls = np.empty(runs)
    fails = np.empty(runs)
    streams = np.random.SeedSequence(seed).spawn(runs)
    for i in range(runs):
        env = simpy.Environment()
        log = {"failures": 0, "done_s": 0.0}
        job = env.process(_job(env, segments, checkpoint_s, restart_s, log))
        env.process(_failures(env, job, mtbf_s, np.random.default_rng(streams[i])))
        env.run(until=job)
        walls[i] = log["done_s"]
        fails[i] = log["failures"]
    return FailureSim(
        runs=runs,
        mean_wall_s=float(walls.mean()),
        std_wall_s=float(walls.std(ddof=1)) if runs > 1 else 0.0,
        mean_failures=float(fails.mean()),
        walls_s=walls,
    )


@dataclass(frozen=True)
class CheckpointPlan:
    """What failures do to one training run on `num_gpus` GPUs."""

    num_gpus: int
    work_s: float
    cluster_mtbf_s: float
    checkpoint_s: float
    restart_s: float
    young_interval_s: float
    daly_interval_s: float
    interval_s: float  # the one used: Daly's optimum, capped at the job length
    expected_wall_s: float
    expected_failures: float

    @property
    def overhead_fraction(self) -> float:
        """Extra wall-clock from checkpoints, lost work and restarts, relative to failure-free compute."""
        return self.expected_wall_s / self.work_s - 1.0 if self.work_s > 0 else 0.0


def plan_checkpoints(work_s: float, num_gpus: int, checkpoint_s: float, failures: FailureModel = FailureModel()) -> CheckpointPlan:
    """Expected wall-clock of a job of `work_s` failure-free seconds on `num_gpus` GPUs, checkpointing
    at Daly's optimum interval (never longer than the job: a short job writes one final checkpoint)."""
    m = failures.cluster_mtbf_s(num_gpus)
    daly = daly_interval_s(checkpoint_s, m)
    tau = max(min(daly, work_s) if work_s > 0 else daly, 1e-9)
    wall = expected_wall_s(work_s, tau, checkpoint_s, failures.restart_s, m)
    return CheckpointPlan(
        num_gpus=num_gpus,
        work_s=work_s,
        cluster_mtbf_s=m,
        checkpoint_s=checkpoint_s,
        restart_s=failures.restart_s,
        young_interval_s=young_interval_s(checkpoint_s, m),
        daly_interval_s=daly,
        interval_s=tau,
        expected_wall_s=wall,
        expected_failures=wall / m,
    )
