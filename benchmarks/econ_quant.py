"""Quantization economics: int4 / fp8 vs bf16 weights and fp8 vs bf16 KV — capacity, throughput
at saturation and $ per million output tokens, for 8B and 70B on H100, A100 and L40S.

Capacity comes from the memory plan (`models.memory.serving_memory_plan`: weights at the
format's bytes, the rest of the budget as KV): max KV tokens, and max concurrency = KV tokens ÷
one 2,048-token request (prompt + output), vLLM's "maximum concurrency" figure. Throughput at
saturation: 600 requests (1,536-token prompts, 512-token outputs) all arriving at t = 0, roofline
predictor, output tokens ÷ makespan. $/1M tokens = $/GPU-hour (bundled price sheet, on-demand,
first provider that lists the GPU, `models.prices.price_per_gpu_hour`) × GPUs ÷ tokens per hour.
Each row uses the smallest tensor-parallel degree (1, 2, 4, 8) at which the model fits.

    .venv/bin/python benchmarks/econ_quant.py
"""

from __future__ import annotations

import sys

import numpy as np

from models.catalog import load_model
from models.errors import LifecostError
from models.gpus import load_gpu
from models.memory import serving_memory_plan
from models.prices import load_prices, price_per_gpu_hour, price_table
from simulator.engine import simulate
from simulator.scenario import Scenario
from simulator.workload import Requests

MODELS = ("Llama-3.1-8B", "Llama-3.1-70B")
GPUS = ("H100-SXM", "A100-80GB", "L40S")
FORMATS = (("bf16", "bf16"), ("bf16", "fp8"), ("fp8", "bf16"), ("fp8", "fp8"), ("int4-awq", "bf16"), ("int4-awq", "fp8"))
PROMPT_TOK, OUTPUT_TOK, NUM_REQUESTS = 1536, 512, 600
REQUEST_TOK = PROMPT_TOK + OUTPUT_TOK


def usd_per_gpu_hour(gpu: str) -> tuple[float, str]:
    sheet = load_prices()
    for provider in ("aws", "gcp", "azure", "coreweave", "lambda", "runpod"):
        if any(r["gpu"] == gpu and r["provider"] == provider and r["pricing"] == "on_demand" for r in price_table(sheet)):
            return price_per_gpu_hour(sheet, provider, gpu, "on_demand"), provider
    raise LifecostError(f"no on-demand price for {gpu}", field="gpu")


def scenario(model: str, gpu: str, quant: str, kv: str, tp: int) -> Scenario:
    return Scenario.model_validate({"model": {"name": model, "quant": quant, "kv_dtype": kv}, "gpu": {"name": gpu, "tensor_parallel": tp},
                                    "engine": {"profile": "roofline", "max_model_len_tok": 4096, "max_num_seqs": 256}})


def smallest_tp(model: str, gpu: str, quant: str, kv: str):
    card, g = load_model(model), load_gpu(gpu)
    for tp in (1, 2, 4, 8):
        if tp > 1 and not g.nvlink_gb_s:
            return None, None
        plan = serving_memory_plan(card, g, quant, kv, 0.9, tensor_parallel=tp, max_model_len_tok=4096, max_num_seqs=256)
        if plan.fits and plan.max_kv_tokens >= 4096:
            return tp, plan
    return None, None


def saturated_tok_s(s: Scenario) -> float:
    n = NUM_REQUESTS
    z = np.zeros(n, np.int64)
    reqs = Requests(arrival_s=np.zeros(n), prompt_tok=np.full(n, PROMPT_TOK), output_tok=np.full(n, OUTPUT_TOK), class_id=np.zeros(n, np.int16),
                    priority=z, prefix_id=np.full(n, -1), prefix_tok=z, class_names=("chat",))
    return simulate(s, reqs).summary()["throughput_tok_s"]


def main() -> None:
    print(f"# quantization: capacity, saturated throughput ({PROMPT_TOK}/{OUTPUT_TOK}-token requests) and $/1M output tokens, roofline")
    print(f"{'model':14s} {'gpu':9s} {'weights':9s} {'kv':4s} tp {'weights_gib':>11s} {'kv_tok':>9s} {'max_conc':>8s} {'tok/s':>8s} {'$/gpu-h':>8s} {'$/1M tok':>9s}")
    for model in MODELS:
        for gpu in GPUS:
            price, provider = usd_per_gpu_hour(gpu)
            for quant, kv in FORMATS:
                tp, plan = smallest_tp(model, gpu, quant, kv)
                if tp is None:
                    print(f"{model:14s} {gpu:9s} {quant:9s} {kv:4s}  - does not fit (and no NVLink for tensor parallel)" if not load_gpu(gpu).nvlink_gb_s else f"{model:14s} {gpu:9s} {quant:9s} {kv:4s}  - does not fit on 8 GPUs")
                    continue
                tok_s = saturated_tok_s(scenario(model, gpu, quant, kv, tp))
                usd_m = price * tp / (tok_s * 3600) * 1e6
                print(f"{model:14s} {gpu:9s} {quant:9s} {kv:4s} {tp:2d} {plan.weights_gib:11.1f} {plan.max_kv_tokens:9d} {plan.max_kv_tokens // REQUEST_TOK:8d} "
                      f"{tok_s:8.0f} {price:8.2f} {usd_m:9.3f}")
                sys.stdout.flush()
    print("\nprices: bundled sheet, on-demand (" + ", ".join(f"{g}: {usd_per_gpu_hour(g)[1]}" for g in GPUS) + "); weights_gib and kv_tok are per GPU")


if __name__ == "__main__":
    main()
