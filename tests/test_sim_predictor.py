"""The step-time predictor: physics of the roofline, the fitted form, and the closed-form runs."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.catalog import load_model
from models.errors import LifecostError
from models.gpus import load_gpu
from models.memory import weight_bytes
from models.profile import FitStats, Profile, ProfileEngine, ProfileGpu, StepTimeCoeffs, save_profile
from simulator.predictor import FittedPredictor, RooflinePredictor, StepFeatures, make_predictor
from simulator.scenario import Scenario

H100 = load_gpu("H100-SXM")
L8B = load_model("Llama-3.1-8B")
L1B = load_model("Llama-3.2-1B")


def decode(batch: int, ctx: int) -> StepFeatures:
    return StepFeatures(decode_tok=batch, decode_ctx_tok=batch * ctx, num_seqs=batch)


def prefill(tokens: int) -> StepFeatures:
    return StepFeatures(prefill_tok=tokens, prefill_ctx_tok=tokens, prefill_attn_pairs=tokens * (tokens + 1) // 2, num_seqs=1)


def example_profile(**step) -> Profile:
    coeffs = {"c0_s": 0.004, "c1": 1.1, "c2": 1.2, "c3": 1.5, "c4": 1.3, "fit": FitStats(n_points=10, r2=0.99, mape=0.03)} | step
    return Profile(
        gpu=ProfileGpu(name="NVIDIA H100 80GB HBM3", catalog_name="H100-SXM"),
        engine=ProfileEngine(name="vllm", version="test"),
        created_utc="2026-11-22T00:00:00Z",
        command="pytest (example profile, not a measurement)",
        ceilings={"gemm_bf16_tflops": 770.0, "hbm_copy_tb_s": 2.96},
        step_time=StepTimeCoeffs(**coeffs),
    )


def test_small_batch_decode_is_bound_by_streaming_the_weights():
    p = RooflinePredictor(L8B, H100)
    t = p.step_time_s(decode(1, 100))
    weights_s = weight_bytes(L8B, "bf16") / (H100.hbm_tb_s * 1e12 * H100.hbm_efficiency)
    assert weights_s <= t <= weights_s * 1.01


def test_decode_batch_is_nearly_free_until_compute_catches_up():
    p = RooflinePredictor(L8B, H100)
    assert p.step_time_s(decode(32, 100)) < 1.05 * p.step_time_s(decode(1, 100))
    # a long prefill is compute bound: twice the tokens, about twice the time
    t4k, t8k = p.step_time_s(prefill(4096)), p.step_time_s(prefill(8192))
    assert 1.9 < t8k / t4k < 2.4


def test_quantized_weights_speed_up_memory_bound_decode():
    bf16 = RooflinePredictor(L8B, H100, "bf16").step_time_s(decode(1, 100))
    int4 = RooflinePredictor(L8B, H100, "int4-awq").step_time_s(decode(1, 100))
    assert int4 < 0.5 * bf16


def test_tensor_parallel_splits_the_weights_and_pays_for_all_reduce():
    tp1 = RooflinePredictor(L8B, H100, tp=1).step_time_s(decode(1, 100))
    tp2 = RooflinePredictor(L8B, H100, tp=2).step_time_s(decode(1, 100))
    assert 0.5 * tp1 < tp2 < 0.6 * tp1


@pytest.mark.parametrize("make", [lambda: RooflinePredictor(L8B, H100), lambda: FittedPredictor(example_profile(), L8B, H100)], ids=["roofline", "fitted"])
@settings(max_examples=60, deadline=None)
@given(batch=st.integers(1, 600), ctx=st.integers(1, 8000), k=st.integers(1, 3000))
def test_run_time_equals_the_sum_of_its_steps(make, batch, ctx, k):
    p = make()
    f = decode(batch, ctx)
    k = min(k, 400)  # the explicit sum is the slow reference
    explicit = sum(p.step_time_s(replace(f, decode_ctx_tok=f.decode_ctx_tok + batch * j)) for j in range(k))
    assert math.isclose(p.run_time_s(f, k), explicit, rel_tol=1e-9)


def test_a_run_crossing_from_compute_to_memory_bound_is_summed_piecewise():
    p = RooflinePredictor(L8B, H100)
    f = decode(512, 64)  # big batch, short context: compute bound, then KV reads take over
    first, last = f, replace(f, decode_ctx_tok=f.decode_ctx_tok + 512 * 3999)
    c_first, m_first = (a for a, _ in p._lines(first))
    c_last, m_last = (a for a, _ in p._lines(last))
    assert c_first > m_first and m_last > c_last  # the crossover lies inside the run
    explicit = sum(p.step_time_s(replace(f, decode_ctx_tok=f.decode_ctx_tok + 512 * j)) for j in range(4000))
    assert math.isclose(p.run_time_s(f, 4000), explicit, rel_tol=1e-9)


@settings(max_examples=200, deadline=None)
@given(batch=st.integers(1, 600), ctx=st.integers(1, 8000), budget_s=st.floats(1e-6, 200.0), max_steps=st.integers(1, 10**6))
def test_run_until_stops_at_the_step_during_which_the_deadline_passes(batch, ctx, budget_s, max_steps):
    p = RooflinePredictor(L8B, H100)
    f = decode(batch, ctx)
    k, dt = p.run_until_s(f, max_steps, budget_s)
    assert 1 <= k <= max_steps
    assert math.isclose(dt, p.run_time_s(f, k), rel_tol=1e-12)
    if k < max_steps:
        assert p.run_time_s(f, k) >= budget_s
    if k > 1:
        assert p.run_time_s(f, k - 1) < budget_s
    assert p.run_until_s(f, max_steps, math.inf)[0] == max_steps


def test_fitted_step_time_is_the_design_formula_with_measured_ceilings():
    prof = example_profile()
    p = FittedPredictor(prof, L1B, H100)
    f = StepFeatures(prefill_tok=300, decode_tok=20, decode_ctx_tok=20 * 500, prefill_ctx_tok=300, prefill_attn_pairs=300 * 301 // 2, num_seqs=21)
    c = p.costs
    peak, bw = 770e12, 2.96e12
    by_hand = (
        0.004
        + 1.1 * c.linear_flops_per_tok * 320 / peak
        + 1.2 * c.weight_bytes / bw
        + 1.5 * c.attn_flops_per_pair * f.prefill_attn_pairs / peak
        + 1.3 * c.kv_bytes_per_tok * (f.decode_ctx_tok + f.prefill_ctx_tok) / bw
    )
    assert math.isclose(p.step_time_s(f), by_hand, rel_tol=1e-12)


def test_a_profile_quant_factor_scales_the_step_time():
    base = FittedPredictor(example_profile(), L8B, H100, "int4-awq").step_time_s(decode(8, 100))
    slowed = FittedPredictor(example_profile(quant_factors={"int4-awq": 1.25}), L8B, H100, "int4-awq").step_time_s(decode(8, 100))
    assert math.isclose(slowed, 1.25 * base, rel_tol=1e-12)


def test_make_predictor_uses_the_stored_profile_when_auto_and_the_roofline_otherwise(tmp_path):
    scenario = Scenario.model_validate({"model": {"name": "Llama-3.2-1B"}, "gpu": {"name": "H100-SXM"}})
    assert make_predictor(scenario, profiles_dir=tmp_path).name == "roofline"
    other = example_profile().model_copy(update={"engine": ProfileEngine(name="transformers-cb", version="test")})
    cb = save_profile(other, tmp_path / "H100-SXM" / "transformers-cb.json")
    assert make_predictor(scenario, profiles_dir=tmp_path).name == "roofline"  # another engine's fit: only when named
    assert make_predictor(scenario.with_changes(**{"engine.profile": str(cb)})).name == "fitted"
    save_profile(example_profile(), tmp_path / "H100-SXM" / "vllm.json")
    assert make_predictor(scenario, profiles_dir=tmp_path).name == "fitted"
    forced = scenario.with_changes(**{"engine.profile": "roofline"})
    assert make_predictor(forced, profiles_dir=tmp_path).name == "roofline"
    by_path = scenario.with_changes(**{"engine.profile": str(tmp_path / "H100-SXM" / "vllm.json")})
    assert make_predictor(by_path).name == "fitted"


def test_a_profile_without_step_time_falls_back_on_auto_and_is_refused_when_named(tmp_path):
    partial = example_profile().model_copy(update={"step_time": None})
    path = save_profile(partial, tmp_path / "H100-SXM" / "vllm.json")
    scenario = Scenario.model_validate({"model": {"name": "Llama-3.2-1B"}})
    assert make_predictor(scenario, profiles_dir=tmp_path).name == "roofline"
    with pytest.raises(LifecostError, match="no step_time"):
        make_predictor(scenario.with_changes(**{"engine.profile": str(path)}))


def test_a_fit_that_makes_decode_steps_free_is_refused():
    with pytest.raises(LifecostError, match="c0_s"):
        FittedPredictor(example_profile(c0_s=0.0, c2=0.0), L1B, H100)


def test_moe_decode_reads_only_the_experts_its_tokens_pick():
    mixtral = load_model("Mixtral-8x7B-v0.1")  # 8 experts, 2 per token
    p = RooflinePredictor(mixtral, H100)
    c = p.costs
    assert 0.9 * c.weight_bytes < c.routed_expert_bytes < c.weight_bytes  # experts are most of the weights
    one = c.weight_bytes_streamed(1)
    assert math.isclose(one, c.weight_bytes - c.routed_expert_bytes * 0.75, rel_tol=1e-12)  # 2 of 8 experts
    assert c.weight_bytes_streamed(64) > 0.999 * c.weight_bytes  # a big batch touches them all
    # batch-1 decode is memory bound on the touched bytes only
    assert p.step_time_s(decode(1, 100)) < 0.5 * c.weight_bytes / p.bytes_s
    assert RooflinePredictor(L8B, H100).costs.weight_bytes_streamed(1) == RooflinePredictor(L8B, H100).costs.weight_bytes


@settings(max_examples=30, deadline=None)
@given(batch=st.integers(1, 64), ctx=st.integers(1, 4000), k=st.integers(1, 300))
def test_moe_runs_still_sum_in_closed_form(batch, ctx, k):
    p = RooflinePredictor(load_model("Qwen3-30B-A3B"), H100)
    f = decode(batch, ctx)
    explicit = sum(p.step_time_s(replace(f, decode_ctx_tok=f.decode_ctx_tok + batch * j)) for j in range(k))
    assert math.isclose(p.run_time_s(f, k), explicit, rel_tol=1e-9)
