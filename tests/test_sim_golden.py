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

import numpy as np
import pytest

from simulator.engine import simulate
from simulator.scenario import Scenario
from simulator.workload import Requests

GOLDEN = Path(__file__).parent / "fixtures" / "sim_golden.json"
UPDATE = os.environ.get("LIFECOST_UPDATE_GOLDEN") == "1"

def requests(n: int, rate_qps: float, *, num_prefixes: int = 0, prefix_tok: int = 0, classes: int = 1, seed: int = 11) -> Requests:
    """A fixed chat-like workload from its own RNG stream: independent of `simulator.workload`, so
    only the serving simulator (and the model/GPU cards' math) can move the golden numbers."""
    rng = np.random.default_rng(seed)
    prompt = np.clip(rng.lognormal(np.log(600), 0.8, n), 16, 6000).astype(np.int64)
    output = np.clip(rng.lognormal(np.log(250), 0.7, n), 4, 2000).astype(np.int64)
    pid = rng.integers(0, num_prefixes, n) if num_prefixes else np.full(n, -1)
    use = rng.random(n) < 0.8 if num_prefixes else np.zeros(n, bool)
    pid = np.where(use, pid, -1)
    prompt = np.where(use, np.maximum(prompt, prefix_tok + 1), prompt)
    cls = rng.integers(0, classes, n).astype(np.int16)
    return Requests(
        arrival_s=np.cumsum(rng.exponential(1.0 / rate_qps, n)),
        prompt_tok=prompt,
        output_tok=output,
        class_id=cls,
        priority=cls,
        prefix_id=pid,
        prefix_tok=np.where(use, prefix_tok, 0),
        class_names=tuple(f"c{i}" for i in range(classes)),
    )


# name: (scenario fields, requests, KV blocks per replica)
CASES = {
    "default-8b-h100": ({}, lambda: requests(400, 4.0), 20_000),
    "chat-1b-prefix-chunked": (
        {"model": {"name": "Llama-3.2-1B"}, "engine": {"max_num_batched_tokens": 1024, "max_num_seqs": 64}},
        lambda: requests(600, 40.0, num_prefixes=4, prefix_tok=400),
        20_000,
    ),
    "overloaded-8b-small-kv-priority": (
        {"engine": {"scheduling_policy": "priority", "max_num_seqs": 128}},
        lambda: requests(500, 30.0, classes=2),
        3_000,
    ),
    "overloaded-8b-small-kv-swap": (
        {"engine": {"preemption_mode": "swap", "max_num_seqs": 128}},
        lambda: requests(500, 30.0),
        3_000,
    ),
}

KEYS = ("throughput_tok_s", "throughput_req_s", "kv_peak_frac", "kv_mean_frac", "preemptions", "prefix_hit_frac", "slo_attainment", "num_steps")


def observed(name: str) -> dict:
    data, reqs, kv_blocks = CASES[name]
    data = data | {"engine": data.get("engine", {}) | {"profile": "roofline"}}  # a stored Profile must not move them
    s = simulate(Scenario.model_validate(data), reqs(), kv_blocks=kv_blocks).summary()
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
