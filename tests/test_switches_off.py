"""Every serving-economics switch off ⇒ the core simulator's results, exactly.

Tiered KV offload, speculative decoding and the other switches must leave a run that does not
ask for them untouched: the golden file below was recorded from the simulator *before* those
features existed (per-request timestamps and the whole step-run log of small runs), and each
run with the switches off must reproduce it bit for bit (to float round-off). A second check
runs the same scenario with the switches present but disabled (offload tiers configured,
`enabled: false`; a speculative config with `method: none`) — the configuration of a disabled
feature must not leak into the run either.

Re-record (only for a deliberate change of the core simulator, explained in the commit):
`LIFECOST_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_switches_off.py`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from simulator.engine import simulate
from simulator.scenario import Scenario

GOLDEN = Path(__file__).parent / "golden" / "switches_off.json"
UPDATE = os.environ.get("LIFECOST_UPDATE_GOLDEN") == "1"

CASES = {
    "8b-h100-chat": ({}, 120),
    "1b-prefix-chunked-small-kv": (
        {
            "model": {"name": "Llama-3.2-1B"},
            "engine": {"max_num_batched_tokens": 1024, "max_num_seqs": 32, "gpu_memory_utilization": 0.12, "max_model_len_tok": 4096},
            "workload": {"arrival": {"rate_qps": 30}, "classes": [{"prefix": {"num_prefixes": 6, "prefix_tok": 1500, "share_prob": 0.8}}]},
        },
        150,
    ),
    "1b-many-prefixes-evicting": (
        {
            "model": {"name": "Llama-3.2-1B"},
            "engine": {"max_num_batched_tokens": 2048, "max_num_seqs": 32, "max_model_len_tok": 4096},
            "workload": {"arrival": {"rate_qps": 20}, "classes": [{"prefix": {"num_prefixes": 40, "prefix_tok": 2000, "share_prob": 0.9, "zipf_s": 0.5}}]},
        },
        150,
    ),
}
KV_BLOCKS = {"1b-many-prefixes-evicting": 1200}  # a small cache, so prefixes are evicted

REQUEST_COLUMNS = ("queue_s", "ttft_s", "finish_s", "preemptions", "prefix_hit_tok", "generated_tok")
STEP_COLUMNS = ("start_s", "num_steps", "duration_s", "batch_size", "prefill_tok", "decode_tok", "kv_blocks_used")

DISABLED = {
    "offload": {"enabled": False, "tiers": [{"name": "host", "capacity_gib": 64.0, "read_gb_s": 20.0, "write_gb_s": 20.0}]},
    "speculative": {"method": "none", "num_draft_tok": 3, "acceptance_rate": 0.8},
}


def _scenario(name: str, extra: dict | None = None) -> Scenario:
    data, _ = CASES[name]
    data = data | {"engine": data.get("engine", {}) | {"profile": "roofline"}} | (extra or {})
    return Scenario.model_validate(data)


def _observed(name: str, scenario: Scenario, n: int) -> dict:
    res = simulate(scenario, num_requests=n, seed=5, kv_blocks=KV_BLOCKS.get(name))
    r, s = res.requests, res.steps
    out = {f"requests.{c}": [None if not np.isfinite(v) else float(v) for v in r[c].to_numpy(float)] for c in REQUEST_COLUMNS}
    out["meta.kv_evicted_blocks"] = [float(res.meta["kv_evicted_blocks"])]
    out |= {f"steps.{c}": s[c].to_numpy(float).tolist() for c in STEP_COLUMNS}
    return out


def _assert_same(got: dict, want: dict, label: str) -> None:
    assert set(want) <= set(got)
    for key, w in want.items():
        g = got[key]
        assert len(g) == len(w), f"{label} {key}: {len(g)} rows, golden {len(w)}"
        gw = np.array([np.nan if v is None else v for v in g], float)
        ww = np.array([np.nan if v is None else v for v in w], float)
        np.testing.assert_allclose(gw, ww, rtol=1e-12, atol=1e-12, equal_nan=True, err_msg=f"{label} {key}")


@pytest.mark.parametrize("name", sorted(CASES))
def test_switches_off_reproduce_the_pre_feature_simulator(name):
    got = _observed(name, _scenario(name), CASES[name][1])
    golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    if UPDATE:
        golden[name] = got
        tmp = GOLDEN.with_suffix(".tmp")
        tmp.write_text(json.dumps(golden, sort_keys=True) + "\n")
        tmp.replace(GOLDEN)
        return
    assert name in golden, f"no golden output for {name}: record it with LIFECOST_UPDATE_GOLDEN=1"
    _assert_same(got, golden[name], name)


@pytest.mark.parametrize("name", sorted(CASES))
def test_configured_but_disabled_switches_change_nothing(name):
    if UPDATE:
        pytest.skip("recording")
    golden = json.loads(GOLDEN.read_text())
    _assert_same(_observed(name, _scenario(name, DISABLED), CASES[name][1]), golden[name], name)
