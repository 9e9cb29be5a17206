"""A sweep of 240 small scenarios on a local Ray cluster gives the same table as local worker
processes (same seeds ⇒ same rows, whatever the executor and completion order)."""

from __future__ import annotations

import pandas as pd
import pytest

from simulator.capacity import Probe, probe_row
from simulator.scenario import Scenario
from simulator.sweep import LocalExecutor, RayExecutor, run_sweep


def small_scenarios(n: int) -> dict[str, Probe]:
    """n distinct tiny scenarios: seed, max_num_seqs, GPU and rate vary (60 requests each)."""
    base = Scenario().with_changes(**{"model.name": "Llama-3.2-1B", "workload.num_requests": 60, "slo.tpot_p99_s": 0.002, "engine.profile": "roofline"})
    gpus = ("H100-SXM", "A100-80GB", "L4")
    items = {}
    for i in range(n):
        s = base.with_changes(**{"seed": i, "engine.max_num_seqs": (8, 32, 128)[i % 3], "gpu.name": gpus[(i // 3) % 3]})
        items[f"s{i:04d}"] = Probe(s, rate_qps=5.0 + 7.0 * (i % 11), num_requests=60)
    return items


@pytest.mark.slow
def test_a_ray_sweep_of_240_scenarios_matches_local_processes(tmp_path):
    items = small_scenarios(240)
    with LocalExecutor(2) as local:
        expected = run_sweep(probe_row, items, tmp_path / "local.parquet", local, progress=False)
    pytest.importorskip("ray")
    with RayExecutor(num_cpus=2) as ray_ex:
        got = run_sweep(probe_row, items, tmp_path / "ray.parquet", ray_ex, progress=False)
    assert len(got) == 240 and got["key"].is_unique
    pd.testing.assert_frame_equal(got, expected)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "ray.parquet"), expected)
    assert expected["meets_slo"].any() and not expected["meets_slo"].all()  # the sweep is not degenerate
