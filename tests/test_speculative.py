"""Speculative decoding: the draws, the speed-up shape, token conservation, memory and refusals."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.errors import LifecostError
from simulator.engine import kv_capacity_blocks, prepare, simulate
from simulator.scenario import Scenario, parse_scenario
from simulator.speculative import analytic_speedup, draw_tok_per_step, emitted_tok_per_step, expected_tok_per_step, target_steps_for
from simulator.workload import Requests


def _requests(n: int, prompt: int = 512, output: int = 512, gap_s: float = 0.0) -> Requests:
    z = np.zeros(n, np.int64)
    return Requests(arrival_s=np.arange(n) * gap_s, prompt_tok=np.full(n, prompt), output_tok=np.full(n, output), class_id=np.zeros(n, np.int16),
                    priority=z, prefix_id=np.full(n, -1), prefix_tok=z, class_names=("chat",))


def _scenario(batch: int, method: str = "none", alpha: float = 0.7, k: int = 4, **extra) -> Scenario:
    d = {"engine": {"profile": "roofline", "max_num_seqs": batch, "max_num_batched_tokens": max(8192, batch), "max_model_len_tok": 8192}} | extra
    if method != "none":
        d["speculative"] = {"method": method, "num_draft_tok": k, "acceptance_rate": alpha, "draft_model": "Llama-3.2-1B" if method == "draft" else None}
    return Scenario.model_validate(d)


def _speedup(batch: int, method: str, alpha: float, k: int) -> float:
    n = max(batch, 24)
    base = simulate(_scenario(batch), _requests(n)).summary()["tpot_s"]["mean"]
    spec = simulate(_scenario(batch, method, alpha, k), _requests(n)).summary()["tpot_s"]["mean"]
    return base / spec


def test_draws_follow_the_truncated_geometric_mean():
    rng = np.random.default_rng(1)
    for alpha, k in ((0.5, 2), (0.7, 4), (0.9, 8), (0.0, 3)):
        x = draw_tok_per_step(rng, alpha, k, 200_000)
        assert x.min() >= 1 and x.max() <= k + 1
        assert abs(x.mean() - expected_tok_per_step(alpha, k)) < 0.02 * expected_tok_per_step(alpha, k)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5000), st.floats(0.0, 0.99), st.integers(1, 16), st.integers(0, 2**31))
def test_emitted_tokens_sum_to_the_decode_length_with_the_last_step_truncated(n, alpha, k, seed):
    x = emitted_tok_per_step(n, alpha, k, np.random.default_rng(seed))
    assert x.sum() == n
    assert x.min() >= 1 and x.max() <= k + 1


def test_target_steps_match_the_expected_rate_on_average():
    out = np.full(400, 1001)
    steps = target_steps_for(out, np.full(400, 0.8), 4, seed=3)
    assert abs(1000 / steps.mean() - expected_tok_per_step(0.8, 4)) < 0.05
    assert target_steps_for(np.array([1]), np.array([0.8]), 4, 0)[0] == 0  # one token: no decode step


def test_ngram_speedup_at_batch_one_is_within_ten_percent_of_the_bound():
    # n-gram drafting is free (c = 0): the bound is E[X] itself
    for alpha, k in ((0.7, 4), (0.9, 2)):
        got = _speedup(1, "ngram", alpha, k)
        assert abs(got / analytic_speedup(alpha, k, 0.0) - 1) < 0.10, (alpha, k, got)


def test_speedup_shrinks_with_batch_and_turns_into_a_loss():
    small, large = _speedup(1, "draft", 0.5, 8), _speedup(256, "draft", 0.5, 8)
    assert large < 1.0 < _speedup(1, "ngram", 0.5, 8)
    assert large < small
    s = [_speedup(b, "eagle", 0.7, 4) for b in (1, 64, 256)]
    assert s[0] > 1.5 and s[0] >= s[1] > s[2]


def test_every_request_ends_with_exactly_its_output_tokens_under_speculation():
    s = _scenario(16, "draft", 0.6, 5)
    s = s.with_changes(**{"engine.max_model_len_tok": 8192, "workload": {"classes": [{"name": "a"}, {"name": "b", "spec_acceptance_rate": 0.95}]}})
    res = simulate(s, num_requests=120, rate_qps=30, seed=4, kv_blocks=700)  # small cache: preemptions too
    assert res.requests["preemptions"].sum() > 0
    r = res.requests
    assert r["finish_s"].notna().all()
    assert (r["generated_tok"] == r["output_tok"]).all()
    assert res.meta["kv_blocks_in_use_at_end"] == 0
    assert (r["spec_target_steps"] <= r["output_tok"] - 1).all()
    # the high-acceptance class needs fewer verification steps per token
    rate = (r["output_tok"] - 1) / r["spec_target_steps"].where(r["spec_target_steps"] > 0)
    assert rate[r["class"] == "b"].mean() > rate[r["class"] == "a"].mean()


def test_speculation_is_deterministic_per_seed():
    s = _scenario(8, "eagle", 0.7, 4)
    a = simulate(s, num_requests=40, rate_qps=10, seed=2).requests
    b = simulate(s, num_requests=40, rate_qps=10, seed=2).requests
    assert a.equals(b)


def test_a_draft_model_takes_its_memory_from_the_kv_cache():
    from models.catalog import load_model
    from models.gpus import load_gpu

    card, gpu = load_model("Llama-3.1-8B"), load_gpu("H100-SXM")
    plain = kv_capacity_blocks(_scenario(8), card, gpu)
    draft = kv_capacity_blocks(_scenario(8, "draft"), card, gpu)
    eagle = kv_capacity_blocks(_scenario(8, "eagle"), card, gpu)
    ngram = kv_capacity_blocks(_scenario(8, "ngram"), card, gpu)
    assert ngram == plain > eagle > draft


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"method": "draft"}, "speculative.draft_model"),
        ({"method": "draft", "draft_model": "Llama-3.1-70B"}, "speculative.draft_model"),
        ({"method": "draft", "draft_model": "Llama-3.2-1B"}, "speculative.draft_model"),  # target below is Qwen: another tokenizer
    ],
)
def test_nonsense_speculative_configs_are_refused_naming_the_field(spec, field):
    target = "Qwen2.5-7B" if spec.get("draft_model") == "Llama-3.2-1B" else "Llama-3.1-8B"
    s = Scenario.model_validate({"model": {"name": target}, "speculative": spec})
    with pytest.raises(LifecostError) as e:
        prepare(s, _requests(2))
    assert field in str(e.value)


@pytest.mark.parametrize(("text", "field"), [("speculative:\n  num_draft_tok: 0\n", "num_draft_tok"), ("speculative:\n  acceptance_rate: 1.0\n", "acceptance_rate"),
                                             ("workload:\n  classes:\n    - spec_acceptance_rate: -0.1\n", "spec_acceptance_rate")])
def test_out_of_range_k_and_alpha_are_refused_with_the_field(text, field):
    with pytest.raises(LifecostError) as e:
        parse_scenario(text)
    assert field in str(e.value)


def test_verification_tokens_share_the_step_token_budget():
    k, budget = 4, 160
    s = _scenario(64, "ngram", 0.7, k).with_changes(**{"engine.max_num_batched_tokens": budget})
    res = simulate(s, num_requests=200, rate_qps=80, seed=1)
    st_ = res.steps
    used = st_["prefill_tok"] + st_["decode_tok"] * (k + 1)
    assert ((st_["prefill_tok"] == 0) | (used <= budget)).all()
    assert (st_["prefill_tok"] > 0).any()
    # admission needs budget left after the verifications, so the decode batch stays below budget / (k+1)
    assert st_["decode_tok"].max() <= budget // (k + 1) + 1 < 64
    assert (res.requests["generated_tok"] == res.requests["output_tok"]).all()


def test_the_summary_reports_tokens_per_verification_step_near_the_expectation():
    s = _scenario(16, "ngram", 0.8, 3)
    sp = simulate(s, _requests(64), seed=9).summary()["speculative"]
    assert sp["tok_per_target_step"] == pytest.approx(expected_tok_per_step(0.8, 3), rel=0.03)
