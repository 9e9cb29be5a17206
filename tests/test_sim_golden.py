"""Golden outputs: a few fixed scenarios' summaries, so any change in simulated behaviour is seen.

A change here is not necessarily a bug — a fidelity fix moves these numbers — but it must be
deliberate: re-record with `LIFECOST_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_sim_golden.py`
and explain the change in the commit message.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from simulator.engine import simulate
from simulator.scenario import Scenario

GOLDEN = Path(__file__).parent / "fixtures" / "sim_golden.json"
UPDATE = os.environ.get("LIFECOST_UPDATE_GOLDEN") == "1"

CASES = {
    "default-8b-h100": ({}, 400),
    "chat-1b-prefix-chunked": (
        {
            "model": {"name": "Llama-3.2-1B"},
            "engine": {"max_num_batched_tokens": 1024, "max_num_seqs": 64},
            "workload": {"arrival": {"rate_qps": 40}, "classes": [{"prefix": {"num_prefixes": 4, "prefix_tok": 400, "share_prob": 0.8}}]},
        },
        600,
    ),
    "overloaded-8b-small-kv-priority": (
        {
            "engine": {"gpu_memory_utilization": 0.3, "scheduling_policy": "priority", "max_num_seqs": 128},
            "workload": {
                "arrival": {"kind": "gamma", "rate_qps": 30, "cv": 2.0},
                "classes": [{"name": "a", "priority": 0}, {"name": "b", "priority": 1, "weight": 2.0}],
            },
        },
        500,
    ),
}

KEYS = ("throughput_tok_s", "throughput_req_s", "kv_peak_frac", "kv_mean_frac", "preemptions", "prefix_hit_frac", "slo_attainment", "num_steps")


def observed(name: str) -> dict:
    data, n = CASES[name]
    data = data | {"engine": data.get("engine", {}) | {"profile": "roofline"}}  # a stored Profile must not move them
    s = simulate(Scenario.model_validate(data), num_requests=n, seed=11).summary()
    out = {k: s[k] for k in KEYS}
    for k in ("ttft_s", "tpot_s", "e2e_s"):
        out[k] = {p: s[k][p] for p in ("p50", "p99")}
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_summary_matches_the_recorded_golden_output(name):
    got = observed(name)
    golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    if UPDATE:
        golden[name] = got
        GOLDEN.write_text(json.dumps(golden, indent=2, sort_keys=True) + "\n")
        return
    assert name in golden, f"no golden output for {name}: record it with LIFECOST_UPDATE_GOLDEN=1"
    want = golden[name]

    def close(a, b, path):
        if isinstance(a, dict):
            for k in b:
                close(a[k], b[k], f"{path}.{k}")
        else:
            assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), f"{path}: {a} != golden {b}"

    close(got, want, name)
