"""Autoscaling: replicas follow the outstanding tokens, new ones serve after a cold start, and
the GPU time booked is what was provisioned."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.autoscale import Autoscaler
from simulator.engine import simulate
from simulator.scenario import AutoscaleSpec, Scenario
from simulator.workload import Requests


def burst_requests(seed: int = 0) -> Requests:
    """60 s quiet (2 req/s), 60 s busy (40 req/s), 120 s quiet: a compressed diurnal swing."""
    rng = np.random.default_rng(seed)
    arrival = []
    t = 0.0
    for rate, until in ((2.0, 60.0), (40.0, 120.0), (2.0, 240.0)):
        while True:
            t += rng.exponential(1.0 / rate)
            if t >= until:
                t = until
                break
            arrival.append(t)
    n = len(arrival)
    return Requests(arrival_s=np.array(arrival), prompt_tok=rng.integers(200, 1200, n), output_tok=rng.integers(50, 400, n),
                    class_id=np.zeros(n, np.int16), priority=np.zeros(n, np.int16), prefix_id=np.full(n, -1), prefix_tok=np.zeros(n), class_names=("c",))


def run(autoscale: dict | None, replicas: int = 1):
    cluster = {"replicas": replicas, "router": "least_outstanding_tokens"}
    if autoscale is not None:
        cluster["autoscale"] = {"enabled": True, "min_replicas": 1, "max_replicas": 6, "interval_s": 5.0, "target_outstanding_tok": 8000} | autoscale
    s = Scenario.model_validate({"model": {"name": "Llama-3.1-8B"}, "engine": {"profile": "roofline", "max_num_seqs": 16}, "cluster": cluster})
    return simulate(s, burst_requests())


def test_autoscaling_follows_the_burst_and_books_less_gpu_time_than_a_fixed_peak_fleet():
    auto = run({"cold_start_s": 10.0})
    fixed = run(None, replicas=6)
    a, f = auto.summary(), fixed.summary()
    info = a["cluster"]["autoscale"]
    assert info["scale_outs"] >= 1 and info["scale_ins"] >= 1
    assert 1 < info["peak_replicas"] <= 6
    assert a["gpu_seconds"] < 0.7 * f["gpu_seconds"]
    assert a["gpu_seconds"] >= a["makespan_s"]  # min_replicas = 1 is always provisioned
    assert a["gpu_seconds"] >= float(auto.steps["duration_s"].sum())  # busy time fits in provisioned time
    assert f["gpu_seconds"] == pytest.approx(6 * f["makespan_s"], rel=1e-9)


def test_a_longer_cold_start_hurts_the_burst_tail():
    warm = run({"cold_start_s": 0.0}).summary()
    cold = run({"cold_start_s": 60.0}).summary()
    assert cold["ttft_s"]["p99"] > warm["ttft_s"]["p99"]


def test_new_replicas_take_requests_only_after_their_cold_start():
    res = run({"cold_start_s": 30.0})
    r = res.requests
    later = r[r["replica"] > 0]
    assert len(later)
    first_burst_arrival = 60.0
    assert later["arrival_s"].min() >= first_burst_arrival + 30.0 - 1e-9  # the first decision after the burst, plus the warm-up


def test_desired_replicas_clamp_to_min_and_max():
    spec = AutoscaleSpec(enabled=True, min_replicas=2, max_replicas=5, target_outstanding_tok=1000)
    scaler = Autoscaler.__new__(Autoscaler)  # desired() reads only the spec
    scaler.spec = spec
    assert [scaler.desired(x) for x in (0, 1500, 2500, 10**9)] == [2, 2, 3, 5]
