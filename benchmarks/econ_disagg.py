"""Disaggregated prefill/decode vs colocated serving at equal GPU count (issue 4, table 5).

Run from the repo root: `.venv/bin/python benchmarks/econ_disagg.py [--gpus 4] [--requests 3000]`.
Two mixes on Llama-3.1-8B / H100-SXM (TP 1), each at two offered rates:
- prefill-heavy: arXiv summarization lengths (`../shared/traces/arxiv_...csv`: ~3k-token prompts,
  ~200-token summaries), resampled;
- decode-heavy: short prompts (50-300 tokens), long outputs (lognormal, mean 1,000 tokens).
For each mix it prints the colocated fleet (N replicas, least-outstanding-tokens router) and every
prefill/decode split of the same N GPUs over InfiniBand (50 GB/s per GPU): output throughput,
TTFT p99, TPOT p99, SLO attainment (TTFT ≤ 1 s and TPOT ≤ 60 ms, per request), attainment of a
tight interactive SLO (TTFT ≤ 1 s and TPOT ≤ 20 ms: where prefill interference in colocated
batches shows) and the median KV transfer time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from simulator.engine import simulate
from simulator.scenario import Scenario

ARXIV = Path(__file__).resolve().parents[2] / "shared" / "traces" / "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv"

MIXES = {
    "prefill-heavy (arXiv summarization)": (
        {"kind": "empirical", "path": str(ARXIV), "column": "num_prefill_tokens", "high": 7900},
        {"kind": "empirical", "path": str(ARXIV), "column": "num_decode_tokens", "high": 1000},
        (7.0, 9.0),  # offered req/s per GPU
    ),
    "decode-heavy (short prompts, long outputs)": (
        {"kind": "uniform", "low": 50, "high": 300},
        {"kind": "lognormal", "mean": 1000, "sigma": 0.6, "low": 16, "high": 4000},
        (8.0, 12.0),
    ),
}


def scenario(prompt: dict, output: dict, qps: float, cluster: dict) -> Scenario:
    return Scenario.model_validate({
        "model": {"name": "Llama-3.1-8B"},
        "gpu": {"name": "H100-SXM"},
        "engine": {"max_num_seqs": 256, "max_num_batched_tokens": 8192},
        "workload": {"arrival": {"rate_qps": qps}, "classes": [{"name": "mix", "prompt_tok": prompt, "output_tok": output}]},
        "slo": {"ttft_p99_s": 1.0, "tpot_p99_s": 0.060},
        "cluster": {"router": "least_outstanding_tokens"} | cluster,
    })


TIGHT_TPOT_S = 0.020


def row(label: str, res, wall_s: float) -> str:
    s, r = res.summary(), res.requests
    tight = float(((r["ttft_s"] <= 1.0) & ~(r["tpot_s"] > TIGHT_TPOT_S)).mean())
    transfer = s["cluster"].get("kv_transfer_s", {}).get("p50")
    transfer_txt = f"{transfer * 1e3:7.1f}ms" if transfer is not None else f"{'-':>9}"
    return (f"  {label:<22} {s['throughput_tok_s']:>8.0f} {s['ttft_s']['p99'] * 1e3:>8.0f}ms {s['tpot_s']['p99'] * 1e3:>7.1f}ms "
            f"{s['slo_attainment']:>8.1%} {tight:>8.1%} {transfer_txt}   ({wall_s:.1f} s wall)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpus", type=int, default=4)
    ap.add_argument("--requests", type=int, default=3000)
    args = ap.parse_args()
    n = args.gpus
    for mix, (prompt, output, per_gpu_rates) in MIXES.items():
        for per_gpu_qps in per_gpu_rates:
            table(mix, prompt, output, per_gpu_qps * n, n, args.requests)


def table(mix: str, prompt: dict, output: dict, qps: float, n: int, num_requests: int) -> None:
    print(f"{mix}: {qps:g} req/s on {n}× H100-SXM, Llama-3.1-8B, {num_requests} requests")
    print(f"  {'layout':<22} {'tok/s':>8} {'TTFT p99':>10} {'TPOT p99':>9} {'SLO att':>8} {'tight':>8} {'KV xfer':>9}")
    layouts = [(f"colocated {n} replicas", {"replicas": n})]
    layouts += [(f"disagg {p}P + {n - p}D", {"disaggregated": {"enabled": True, "prefill_replicas": p, "decode_replicas": n - p, "link": "infiniband"}}) for p in range(1, n)]
    for label, cluster in layouts:
        t0 = time.perf_counter()
        res = simulate(scenario(prompt, output, qps, cluster), num_requests=num_requests, seed=0)
        print(row(label, res, time.perf_counter() - t0))
    print()

if __name__ == "__main__":
    main()
