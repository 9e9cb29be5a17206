"""The training-job model on the seed cases: verdicts, the shown arithmetic, and invariants."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.errors import LifecostError
from models.gpus import load_gpu
from models.prices import load_prices, price_per_gpu_hour
from simulator.scenario import Scenario
from simulator.training import Band, plan_training, plan_training_for

SEED = dict(samples=5000, epochs=3.0, mean_tokens=1200)


@pytest.fixture(scope="module")
def h100_lora():
    return plan_training_for("Llama-3.1-8B", "H100-SXM", "lora", lora_r=16, use_profile=False, **SEED)


def _step(plan, label):
    return next(s for s in plan.steps if s.label == label)


def test_llama8b_lora_r16_on_one_h100_fits_and_its_arithmetic_multiplies_out(h100_lora):
    p = h100_lora
    assert p.fits and p.verdict.startswith("fits: needs ")
    assert p.needed_gib <= p.available_gib == 80.0
    assert p.trainable_params == 41_943_040  # peft's count for r=16 on all seven projections
    assert _step(p, "tokens").value == 5000 * 3 * 1200 == 18_000_000
    assert "5,000 samples × 3 epochs × 1,200 tokens" in _step(p, "tokens").formula
    assert _step(p, "FLOPs").value == pytest.approx(18_000_000 * p.flops_per_tok)
    gpu = load_gpu("H100-SXM")
    compute_h = 18_000_000 * p.flops_per_tok / (gpu.bf16_tflops * 1e12 * gpu.mfu_training) / 3600
    assert _step(p, "compute time").value == pytest.approx(compute_h)
    assert p.gpu_hours.mid == pytest.approx(p.wall_s.mid / 3600)
    assert p.wall_s.mid >= p.compute_s.mid
    price = price_per_gpu_hour(load_prices(), "aws", "H100-SXM", "on_demand")
    assert _step(p, "cost").value == pytest.approx(p.gpu_hours.mid * price) == pytest.approx(p.usd.mid)
    assert _step(p, "energy").value == pytest.approx(p.energy_kwh.mid)


def test_lora_costs_two_thirds_of_full_finetune_flops_per_token_roughly(h100_lora):
    full = plan_training_for("Llama-3.1-8B", "H100-SXM", "full", use_profile=False, gradient_checkpointing=False, **SEED)
    lora_no_ckpt = h100_lora.flops_per_tok if not h100_lora.grad_ckpt else None
    assert lora_no_ckpt is not None
    assert 0.6 < lora_no_ckpt / full.flops_per_tok < 0.72  # (4N + 6Nₐ)/(6N) plus attention


def test_cheapest_fitting_choice_is_the_fastest_fitting_option(h100_lora):
    for plan in (h100_lora, plan_training_for("Llama-3.1-8B", "RTX-4090", "lora", provider="runpod", use_profile=False, **SEED)):
        fitting = [o for o in plan.options if o.fits]
        assert fitting
        chosen = next(o for o in fitting if (o.micro_batch, o.grad_ckpt) == (plan.micro_batch, plan.grad_ckpt))
        assert all(chosen.compute_s <= o.compute_s for o in fitting)
    # plenty of memory: no recompute is chosen
    assert h100_lora.grad_ckpt is False


def test_llama8b_lora_on_one_rtx4090_fits_only_by_shrinking_the_step(h100_lora):
    p = plan_training_for("Llama-3.1-8B", "RTX-4090", "lora", provider="runpod", use_profile=False, **SEED)
    assert p.fits and p.available_gib == 24.0 and p.needed_gib <= 24.0
    # 16 GiB of bf16 weights leave no room for the requested micro-batch 4 without checkpointing
    assert not next(o for o in p.options if o.micro_batch == 4 and not o.grad_ckpt).fits
    assert p.grad_ckpt or p.micro_batch < 4
    assert p.grad_accum * p.micro_batch >= 4  # the global batch is kept by accumulation
    assert p.compute_s.mid > h100_lora.compute_s.mid  # slower card
    assert p.price.provider == "runpod"


def test_llama70b_qlora_fits_one_a100_80gb_but_bf16_lora_does_not():
    q = plan_training_for("Llama-3.1-70B", "A100-80GB", "qlora", use_profile=False, **SEED)
    assert q.fits and q.needed_gib <= 80.0
    assert q.trainable_params > 0 and q.usd.mid > 0 and q.gpu_hours.mid > 0
    lora = plan_training_for("Llama-3.1-70B", "A100-80GB", "lora", use_profile=False, **SEED)
    assert not lora.fits and lora.needed_gib > 80.0


@pytest.mark.parametrize("gpu", ["H100-SXM", "H200", "B200", "MI300X", "A100-80GB"])
def test_llama70b_full_finetune_does_not_fit_one_gpu_and_says_needed_vs_available(gpu):
    p = plan_training_for("Llama-3.1-70B", gpu, "full", use_profile=False, provider="runpod" if gpu == "MI300X" else "aws", **SEED)
    assert not p.fits
    # 70B × 16 B/param of weights, gradients, master copy and AdamW states alone exceed 1,000 GiB
    assert p.needed_gib > 1000 > p.available_gib
    assert f"needs {p.needed_gib:,.1f} GiB, has {p.available_gib:,.1f} GiB" in p.verdict
    assert p.verdict.startswith("does not fit")


def test_forced_checkpointing_costs_one_more_forward(h100_lora):
    on = plan_training_for("Llama-3.1-8B", "H100-SXM", "lora", gradient_checkpointing=True, use_profile=False, **SEED)
    assert on.grad_ckpt and all(o.grad_ckpt for o in on.options)
    assert on.flops_per_tok > h100_lora.flops_per_tok
    assert on.compute_s.mid > h100_lora.compute_s.mid


def test_ranges_give_ordered_bands_and_the_middle_equals_the_point_plan(h100_lora):
    p = plan_training_for("Llama-3.1-8B", "H100-SXM", "lora", mfu=(0.3, 0.5), samples=5000, epochs=3.0, mean_tokens=(1000, 1400))
    for band in (p.dataset_tok, p.compute_s, p.wall_s, p.gpu_hours, p.energy_kwh, p.usd):
        assert band.low < band.mid < band.high
    assert p.dataset_tok.low == 5000 * 3 * 1000 and p.dataset_tok.high == 5000 * 3 * 1400
    point = plan_training_for("Llama-3.1-8B", "H100-SXM", "lora", mfu=0.4, **SEED)
    assert p.compute_s.mid == pytest.approx(point.compute_s.mid)
    assert p.compute_s.low == pytest.approx(point.compute_s.mid * (1000 / 1200) * (0.4 / 0.5))
    assert not h100_lora.usd.is_range


def test_a_measured_profile_mfu_replaces_the_card_default(tmp_path, monkeypatch):
    import models.profile as mp

    monkeypatch.setattr(mp, "PROFILES_DIR", tmp_path)
    prof = mp.Profile(
        gpu=mp.ProfileGpu(name="NVIDIA H100 80GB HBM3", catalog_name="H100-SXM"),
        engine=mp.ProfileEngine(name="vllm", version="0.32.0"),
        created_utc="2026-11-22T19:00:00Z",
        command="lifecost calibrate",
        training=mp.TrainingTerms(mfu=0.2, memory_overhead_gib=3.5),
    )
    mp.save_profile(prof, mp.profile_path("H100-SXM", "vllm", tmp_path))
    measured = plan_training_for("Llama-3.1-8B", "H100-SXM", "lora", **SEED)
    card = plan_training_for("Llama-3.1-8B", "H100-SXM", "lora", use_profile=False, **SEED)
    assert measured.mfu.mid == 0.2 and "measured" in measured.mfu_source
    assert measured.compute_s.mid == pytest.approx(card.compute_s.mid * card.mfu.mid / 0.2)
    assert measured.needed_gib == pytest.approx(card.needed_gib + 3.5)  # measured overhead on top of the plan


def test_multi_node_full_finetune_exposes_allreduce_time():
    # micro-batch 1: a short backward to hide a 16 GB gradient all-reduce behind
    one_node = plan_training_for("Llama-3.1-8B", "H200", "full", num_gpus=8, micro_batch=1, use_profile=False, **SEED)
    two_nodes = plan_training_for("Llama-3.1-8B", "H200", "full", num_gpus=16, micro_batch=1, use_profile=False, **SEED)
    assert one_node.comm.nodes == 1 and two_nodes.comm.nodes == 2
    assert two_nodes.comm.link_gb_s < one_node.comm.link_gb_s
    assert two_nodes.comm.efficiency < one_node.comm.efficiency <= 1.0
    assert any(s.label == "DP efficiency" for s in two_nodes.steps)


@settings(max_examples=25, deadline=None)
@given(factor=st.floats(0.05, 20.0))
def test_training_cost_scales_linearly_with_the_price(factor):
    base = Scenario().with_changes(**{"prices.usd_per_gpu_hour": 2.0})
    scaled = base.with_changes(**{"prices.usd_per_gpu_hour": 2.0 * factor})
    a = plan_training(base, use_profile=False)
    b = plan_training(scaled, use_profile=False)
    assert b.usd.mid == pytest.approx(a.usd.mid * factor, rel=1e-9)
    assert b.gpu_hours.mid == a.gpu_hours.mid


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 64), samples=st.integers(100, 200_000))
def test_more_gpus_never_use_fewer_gpu_hours_and_more_data_never_takes_less_time(n, samples):
    s = Scenario().with_changes(**{"training.samples": samples, "training.num_gpus": n, "training.method": "full", "model.name": "Llama-3.2-1B"})
    p = plan_training(s, use_profile=False)
    more_gpus = plan_training(s.with_changes(**{"training.num_gpus": n + 1}), use_profile=False)
    more_data = plan_training(s.with_changes(**{"training.samples": samples + 1000}), use_profile=False)
    assert more_gpus.gpu_hours.mid >= p.gpu_hours.mid * (1 - 1e-12)
    assert more_data.wall_s.mid >= p.wall_s.mid
    assert 0.0 < p.comm.efficiency <= 1.0


def test_bad_training_inputs_are_one_line_errors():
    with pytest.raises(LifecostError, match="trains nothing"):
        plan_training(Scenario().with_changes(**{"training.method": "none"}))
    with pytest.raises(LifecostError, match="mfu"):
        plan_training(Scenario(), mfu=1.5)
    with pytest.raises(LifecostError, match="no on_demand price for RTX-4090 on aws"):
        plan_training_for("Llama-3.1-8B", "RTX-4090", "lora")
    with pytest.raises(LifecostError, match="unknown"):
        plan_training_for("Llama-9", "H100-SXM", "lora")


def test_band_of_orders_a_reversed_pair():
    assert Band.of((5, 1)) == Band(1.0, 3.0, 5.0)
    assert not math.isnan(Band.of(2).mid)


def test_flops_per_token_step_multiplies_out_from_its_terms(h100_lora):
    from models.catalog import load_model
    from simulator.training import flop_terms

    s = Scenario()
    f = flop_terms(load_model("Llama-3.1-8B"), s.training, h100_lora.micro_batch, h100_lora.grad_ckpt)
    n, a, n_a = f.matmul_params, f.attn_fwd_flops, f.adapter_params
    assert h100_lora.flops_per_tok == pytest.approx(4 * n + 3 * a + 6 * n_a)
    ckpt = plan_training_for("Llama-3.1-8B", "H100-SXM", "lora", gradient_checkpointing=True, use_profile=False, **SEED)
    assert ckpt.flops_per_tok == pytest.approx(4 * n + 3 * a + 6 * n_a + (2 * n + a + 2 * n_a))
    full = plan_training_for("Llama-3.1-8B", "H100-SXM", "full", gradient_checkpointing=False, use_profile=False, **SEED)
    assert full.flops_per_tok == pytest.approx(6 * n + 3 * a)
    assert "4 × 7.5 G" in _step(h100_lora, "FLOPs/token").formula
