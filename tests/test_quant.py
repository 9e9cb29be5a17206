"""Quantization end to end: weight and KV formats change the memory plan's KV capacity and the
predictor's step times, and a Profile's per-format factor scales a simulated run."""

from __future__ import annotations

import numpy as np
import pytest

from models.catalog import load_model
from models.gpus import load_gpu
from models.memory import serving_memory_plan
from models.profile import load_profile
from simulator.engine import kv_capacity_blocks, simulate
from simulator.predictor import RooflinePredictor, StepFeatures
from simulator.scenario import Scenario
from simulator.workload import Requests

CARD, GPU = load_model("Llama-3.1-8B"), load_gpu("H100-SXM")


def _scenario(quant: str = "bf16", kv: str = "bf16", profile: str = "roofline") -> Scenario:
    return Scenario.model_validate({"model": {"quant": quant, "kv_dtype": kv}, "engine": {"profile": profile, "max_model_len_tok": 4096}})


def _requests(n: int = 8) -> Requests:
    z = np.zeros(n, np.int64)
    return Requests(arrival_s=np.arange(n) * 0.5, prompt_tok=np.full(n, 700), output_tok=np.full(n, 120), class_id=np.zeros(n, np.int16),
                    priority=z, prefix_id=np.full(n, -1), prefix_tok=z, class_names=("chat",))


@pytest.mark.parametrize("quant", ["bf16", "fp8", "int4-awq"])
def test_fp8_kv_doubles_the_kv_tokens_of_bf16(quant):
    bf16 = kv_capacity_blocks(_scenario(quant, "bf16"), CARD, GPU)
    fp8 = kv_capacity_blocks(_scenario(quant, "fp8"), CARD, GPU)
    assert abs(fp8 - 2 * bf16) <= 1  # the same bytes, half per token (block rounding aside)


def test_smaller_weight_formats_leave_more_kv_and_a_faster_memory_bound_decode():
    blocks = [kv_capacity_blocks(_scenario(q), CARD, GPU) for q in ("bf16", "fp8", "int8", "int4-awq")]
    assert blocks[0] < blocks[1] == blocks[2] < blocks[3]
    decode = StepFeatures(decode_tok=1, decode_ctx_tok=2000, num_seqs=1)
    t = [RooflinePredictor(CARD, GPU, q).step_time_s(decode) for q in ("bf16", "fp8", "int4-awq")]
    assert t[0] > t[1] > t[2]
    # bytes per step set batch-1 decode: bf16 / int4 close to the weight-bytes ratio
    plans = [serving_memory_plan(CARD, GPU, q) for q in ("bf16", "int4-awq")]
    assert t[0] / t[2] == pytest.approx(plans[0].weights_gib / plans[1].weights_gib, rel=0.1)


def test_fp8_prefill_uses_the_fp8_tensor_cores_and_int4_computes_in_bf16():
    n = 4096
    prefill = StepFeatures(prefill_tok=n, prefill_ctx_tok=n, prefill_attn_pairs=n * (n + 1) // 2, num_seqs=1)
    bf16, fp8, int4 = (RooflinePredictor(CARD, GPU, q).step_time_s(prefill) for q in ("bf16", "fp8", "int4-awq"))
    assert fp8 < 0.75 * bf16  # compute-bound: the fp8 peak is 2× bf16 on H100
    assert int4 == pytest.approx(bf16, rel=1e-9)  # weight-only int4 dequantises to bf16 GEMMs


def test_a_profile_quant_factor_scales_every_simulated_step(tmp_path):
    base = load_profile("H100-SXM/transformers-cb")
    slow = base.model_copy(update={"step_time": base.step_time.model_copy(update={"quant_factors": {"int4-awq": 1.25}})})
    paths = {}
    for name, p in (("base", base), ("slow", slow)):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(p.model_dump_json())
    a = simulate(_scenario("int4-awq", profile=str(paths["base"])), _requests())
    b = simulate(_scenario("int4-awq", profile=str(paths["slow"])), _requests())
    # the first step (request 0's prefill, alone) is the same step in both runs: 1.25× its time
    assert b.steps["duration_s"].iloc[0] / a.steps["duration_s"].iloc[0] == pytest.approx(1.25, rel=1e-9)
    assert b.summary()["tpot_s"]["mean"] > 1.2 * a.summary()["tpot_s"]["mean"]
    # the factor applies to its own format only
    c = simulate(_scenario("bf16", profile=str(paths["slow"])), _requests())
    d = simulate(_scenario("bf16", profile=str(paths["base"])), _requests())
    assert c.steps["duration_s"].equals(d.steps["duration_s"])
