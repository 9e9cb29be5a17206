"""Disaggregated prefill/decode: TTFT = prefill + KV transfer + first decode step; links contend."""

from __future__ import annotations

import numpy as np
import pytest

from models.catalog import load_model
from models.memory import kv_bytes_per_token_per_gpu
from simulator.disagg import LINK_GB_S, link_bytes_s
from simulator.engine import prepare, simulate
from simulator.predictor import StepFeatures
from simulator.scenario import DisaggSpec, Scenario
from simulator.workload import Requests


def scenario(**disagg) -> Scenario:
    return Scenario.model_validate({
        "model": {"name": "Llama-3.1-8B"}, "engine": {"profile": "roofline"},
        "cluster": {"disaggregated": {"enabled": True} | disagg},
    })


def requests(arrival, prompt, output) -> Requests:
    n = len(arrival)
    return Requests(arrival_s=np.asarray(arrival, float), prompt_tok=np.asarray(prompt), output_tok=np.asarray(output),
                    class_id=np.zeros(n, np.int16), priority=np.zeros(n, np.int16), prefix_id=np.full(n, -1), prefix_tok=np.zeros(n), class_names=("c",))


def test_link_defaults_and_override():
    assert LINK_GB_S == {"nvlink": 450.0, "infiniband": 50.0, "ethernet": 12.5}
    assert link_bytes_s(DisaggSpec(link="ethernet")) == 12.5e9
    assert link_bytes_s(DisaggSpec(link="ethernet", link_gb_s=3.0)) == 3.0e9


def test_ttft_of_a_lone_request_is_prefill_plus_transfer_plus_first_decode_step():
    s = scenario(link="ethernet")
    prompt, out = 4000, 6
    res = simulate(s, requests([0.0], [prompt], [out]))
    pred = prepare(s, requests([0.0], [prompt], [out])).predictor
    prefill = pred.step_time_s(StepFeatures(prompt, 0, 0, prompt, prompt * (prompt + 1) // 2, 1))
    transfer = (prompt - 1) * kv_bytes_per_token_per_gpu(load_model("Llama-3.1-8B"), "bf16", 1) / 12.5e9
    first_decode = pred.step_time_s(StepFeatures(1, 0, 0, prompt, prompt, 1))  # the last prompt token, on the decode side
    r = res.requests.iloc[0]
    assert r["kv_transfer_s"] == pytest.approx(transfer, rel=1e-12)
    assert r["prefill_end_s"] == pytest.approx(prefill, rel=1e-12)
    assert r["ttft_s"] == pytest.approx(prefill + transfer + first_decode, rel=1e-12)
    assert r["generated_tok"] == out
    assert res.meta["cluster"]["kv_moved_gb"] == pytest.approx(transfer * 12.5, rel=1e-12)


def test_transfers_from_one_prefill_replica_queue_on_its_link():
    """Two prompts prefilled in the same step leave together: the second waits for the first."""
    s = scenario(link_gb_s=0.5, decode_replicas=2)
    res = simulate(s, requests([0.0, 0.0], [3000, 3000], [4, 4]))
    t = np.sort(res.requests["kv_transfer_s"].to_numpy())
    assert t[1] == pytest.approx(2 * t[0], rel=1e-9)


def test_a_faster_link_lowers_ttft_and_leaves_decode_alone():
    slow = simulate(scenario(link="ethernet"), num_requests=200, seed=1).summary()
    fast = simulate(scenario(link="nvlink"), num_requests=200, seed=1).summary()
    assert fast["ttft_s"]["p50"] < slow["ttft_s"]["p50"]
    assert fast["cluster"]["kv_transfer_s"]["p50"] < slow["cluster"]["kv_transfer_s"]["p50"]


def test_decode_replicas_never_prefill_more_than_the_last_prompt_token_of_each_request():
    s = scenario(prefill_replicas=1, decode_replicas=2)
    res = simulate(s, num_requests=300, seed=2)
    steps = res.steps
    decode = steps[steps["replica"] >= 1]
    prefill = steps[steps["replica"] == 0]
    assert res.summary()["preemptions"] == 0
    assert (decode["prefill_tok"] <= decode["batch_size"]).all()
    assert (prefill["decode_tok"] == 0).all()  # a prefill replica's requests end at their first token
    assert sorted(res.requests["replica"].unique()) == [1, 2]
