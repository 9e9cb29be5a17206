"""Padded attention features (transformers CB engine) and the per-sequence host term."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calibrate.fit import attention_padding_of
from models.catalog import load_model
from models.gpus import load_gpu
from models.profile import AttentionPadding, FitStats, Profile, ProfileEngine, ProfileGpu, StepTimeCoeffs
from simulator.predictor import FittedPredictor, StepFeatures, padded_attention

H100 = load_gpu("H100-SXM")
L1B = load_model("Llama-3.2-1B")
PAD = AttentionPadding(q_interval_tok=64, kv_interval_tok=16384, max_q_tok=8192)


def profile(padding=None, **step) -> Profile:
    coeffs = {"c0_s": 0.004, "c1": 1.1, "c2": 1.2, "c3": 1.5, "c4": 1.3, "fit": FitStats(n_points=10, r2=0.99, mape=0.03)} | step
    return Profile(gpu=ProfileGpu(name="NVIDIA H100 80GB HBM3", catalog_name="H100-SXM"),
                   engine=ProfileEngine(name="transformers-cb", version="test"), created_utc="2026-11-22T00:00:00Z",
                   command="pytest (example profile, not a measurement)",
                   ceilings={"gemm_bf16_tflops": 770.0, "hbm_copy_tb_s": 2.96},
                   step_time=StepTimeCoeffs(**coeffs, attention_padding=padding))


def test_padded_sizes_equal_hand_computed_ones():
    # 3 decodes at contexts 100, 200, 300 (new token included) and a 50-token chunk after 20 cached
    f = StepFeatures(prefill_tok=50, decode_tok=3, decode_ctx_tok=600, prefill_ctx_tok=70, prefill_attn_pairs=0, num_seqs=4)
    q_pad, pairs, kv_tok = padded_attention(f, PAD)
    cached = 597 + 20  # 99 + 199 + 299 decode keys already cached, 20 before the chunk
    assert cached == 617
    assert q_pad == 64  # 53 queries → one 64-token interval
    assert kv_tok == 16384 + 64  # cached keys → one 16384 interval, then the step's own (padded) tokens
    assert pairs == 64 * (16384 + 64)
    # nothing cached still reads one interval; a big step is capped at max_batch_tokens
    assert padded_attention(StepFeatures(prefill_tok=9000, prefill_ctx_tok=9000, num_seqs=1), PAD)[::2] == (8192, 16384 + 8192)
    assert padded_attention(StepFeatures(decode_tok=1, decode_ctx_tok=16386, num_seqs=1), PAD)[2] == 2 * 16384 + 64


def test_without_padding_the_rule_is_a_dense_mask_over_the_batch():
    f = StepFeatures(prefill_tok=10, prefill_ctx_tok=10, decode_tok=2, decode_ctx_tok=40, num_seqs=3)
    q_pad, pairs, kv_tok = padded_attention(f, AttentionPadding())
    assert (q_pad, kv_tok, pairs) == (12, 38 + 12, 12 * 50)


def test_vllm_profile_features_unchanged_by_the_new_fields():
    # no padding and c0_seq_s = 0: the step time is the per-request formula, whatever num_seqs says
    base = FittedPredictor(profile(), L1B, H100)
    f = StepFeatures(prefill_tok=512, prefill_ctx_tok=512, prefill_attn_pairs=512 * 513 // 2, decode_tok=8, decode_ctx_tok=8 * 900, num_seqs=9)
    g = StepFeatures(prefill_tok=512, prefill_ctx_tok=512, prefill_attn_pairs=512 * 513 // 2, decode_tok=8, decode_ctx_tok=8 * 900, num_seqs=1)
    assert base.step_time_s(f) == base.step_time_s(g)
    c = base.costs
    expected = (0.004 + 1.2 * c.weight_bytes / 2.96e12 + 1.1 * c.linear_flops_per_tok * 520 / 770e12
                + 1.5 * c.attn_flops_per_pair * (512 * 513 // 2) / 770e12 + 1.3 * c.kv_bytes_per_tok * (512 + 7200) / 2.96e12)
    assert base.step_time_s(f) == pytest.approx(expected, rel=1e-12)


def test_padded_step_time_charges_the_padded_sizes():
    p = FittedPredictor(profile(PAD, c0_seq_s=1e-4), L1B, H100)
    c = p.costs
    f = StepFeatures(decode_tok=5, decode_ctx_tok=5 * 300, num_seqs=5)
    q_pad, pairs, kv_tok = padded_attention(f, PAD)
    # scores: one bf16 value per (query head, query, key) in every layer, c3 passes over them;
    # gathered keys: K/V bytes moved 3 + 2g times, g = 32 query heads / 8 KV heads = 4 on Llama-3.2-1B
    assert L1B.num_attention_heads // L1B.num_kv_heads == 4
    score_bytes = L1B.num_layers * L1B.num_attention_heads * 2 * pairs
    expected = (0.004 + 5 * 1e-4 + 1.2 * c.weight_bytes / 2.96e12 + 1.1 * c.linear_flops_per_tok * q_pad / 770e12
                + 1.5 * score_bytes / 2.96e12 + 1.3 * c.kv_bytes_per_tok * (3 + 2 * 4) * kv_tok / 2.96e12)
    assert p.step_time_s(f) == pytest.approx(expected, rel=1e-12)
    # one decode and 64 decodes pad to the same buffers: only the per-sequence host time differs
    one = StepFeatures(decode_tok=1, decode_ctx_tok=300, num_seqs=1)
    many = StepFeatures(decode_tok=64, decode_ctx_tok=64 * 200, num_seqs=64)
    assert p.step_time_s(many) - p.step_time_s(one) == pytest.approx(63 * 1e-4, rel=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 256), st.integers(1, 4000), st.integers(1, 300))
def test_padded_decode_runs_sum_their_steps_at_mean_growth(batch, ctx, k):
    """A run of k decode steps costs its first step k times plus the mean growth of the padded
    buffers (D keys per step), and never less than k first steps (padding only grows)."""
    p = FittedPredictor(profile(PAD, c0_seq_s=1e-4), L1B, H100)
    f = StepFeatures(decode_tok=batch, decode_ctx_tok=batch * ctx, num_seqs=batch)
    first = p.step_time_s(f)
    total = p.run_time_s(f, k)
    assert total >= k * first * (1 - 1e-12)
    q_pad = padded_attention(f, PAD)[0]
    slope = (p._s_per_score_pair * q_pad + p._s_per_gathered_key) * batch
    assert math.isclose(total, k * first + slope * k * (k - 1) / 2, rel_tol=1e-9)


def test_padding_rule_read_from_recorded_engine_settings():
    cb = {"use_cuda_graph": [True, True], "q_padding_interval_size": 64, "kv_padding_interval_size": 16384, "max_batch_tokens": 8192}
    rec = {"backend": "transformers", "engine_settings": {"attn_implementation": "paged|sdpa", "continuous_batching_config": cb}}
    assert attention_padding_of(rec) == PAD
    no_graphs = {**cb, "use_cuda_graph": [False, False]}
    rec2 = {"backend": "transformers", "engine_settings": {"attn_implementation": "paged|sdpa", "continuous_batching_config": no_graphs}}
    assert attention_padding_of(rec2) == AttentionPadding(q_interval_tok=1, kv_interval_tok=1, max_q_tok=8192)
    flash = {"backend": "transformers", "engine_settings": {"attn_implementation": "paged|flash_attention_2", "continuous_batching_config": cb}}
    assert attention_padding_of(flash) is None
    assert attention_padding_of({"backend": "vllm", "engine_settings": {"max_num_seqs": 256}}) is None
