"""Reasoning on for 0 / 30 / 100 % of traffic: GPUs needed at a fixed SLO and $/1M answer tokens
(issue 4, table 4).

Run from the repo root: `.venv/bin/python benchmarks/econ_reasoning.py [--peak-qps 100] [--requests 2000]`.
Chat traffic on Llama-3.1-8B / H100-SXM: prompts lognormal (mean 600), answers lognormal
(mean 250); a request with reasoning on first thinks for a lognormal 2,000 tokens (σ 0.8),
capped at a 4,096-token thinking budget (budget forcing). The SLO is TTFT ≤ 1 s and TPOT ≤ 60 ms
for 99 % of requests. For each share of reasoning traffic it prints the replicas (= GPUs, TP 1)
`simulator.capacity.replicas_needed` finds for the peak rate (verified by simulating the whole
fleet behind a least-outstanding-tokens router: N meets the SLO, N − 1 does not), the cost per hour at the scenario's on-demand price, $ per 1M
answer tokens (thinking tokens are paid for but are not the answer) and $ per 1M output tokens,
then the verified fleet's latency split by reasoning on/off (from a routed cluster simulation),
including when the answer starts (TTFT + the thinking, `result.time_to_first_answer_s`).
"""

from __future__ import annotations

import argparse
import time

from simulator.capacity import replicas_needed, usd_per_gpu_hour
from simulator.engine import simulate
from simulator.scenario import Scenario
from simulator.workload import generate_requests

SHARES = (0.0, 0.3, 1.0)


def scenario(on_frac: float) -> Scenario:
    return Scenario.model_validate({
        "model": {"name": "Llama-3.1-8B"},
        "gpu": {"name": "H100-SXM"},
        "engine": {"max_model_len_tok": 16384},
        "workload": {"classes": [{
            "name": "chat",
            "reasoning": {"on_frac": on_frac, "thinking_tok": {"kind": "lognormal", "mean": 2000, "sigma": 0.8, "low": 16, "high": 32000}, "thinking_budget_tok": 4096},
        }]},
        "slo": {"ttft_p99_s": 1.0, "tpot_p99_s": 0.060, "attainment": 0.99},
        "cluster": {"router": "least_outstanding_tokens"},
    })


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peak-qps", type=float, default=100.0)
    ap.add_argument("--requests", type=int, default=2000, help="requests per replica in each probe")
    args = ap.parse_args()
    print(f"Llama-3.1-8B on H100-SXM, peak {args.peak_qps:g} req/s, SLO TTFT ≤ 1 s and TPOT ≤ 60 ms for 99 % of requests")
    print(f"{'reasoning on':>12} {'think/req':>9} {'answer/req':>10} {'GPUs':>5} {'verified':>8} {'$/h':>8} {'$/1M answer':>11} {'$/1M output':>11}   fleet on/off: TPOT p99, first answer token p50, E2E p50")
    for share in SHARES:
        t0 = time.perf_counter()
        s = scenario(share)
        answer = replicas_needed(s, args.peak_qps, num_requests=args.requests, router=s.cluster.router)
        reqs = generate_requests(s.workload, seed=s.seed, num_requests=20_000, max_model_len_tok=s.engine.max_model_len_tok)
        think = float(reqs.thinking_tok.mean())
        ans = float((reqs.output_tok - reqs.thinking_tok).mean())
        gpus = answer.replicas * s.gpu.tensor_parallel
        usd_h = gpus * usd_per_gpu_hour(s)
        per_hour = args.peak_qps * 3600.0
        usd_answer = usd_h / (per_hour * ans / 1e6) if gpus else float("nan")
        usd_output = usd_h / (per_hour * (ans + think) / 1e6) if gpus else float("nan")
        split = ""
        if answer.replicas:
            fleet = s.with_changes(**{"cluster.replicas": answer.replicas})
            summ = simulate(fleet, num_requests=args.requests * answer.replicas, rate_qps=args.peak_qps).summary()
            on, off = summ.get("reasoning", {}).get("on"), summ.get("reasoning", {}).get("off")
            fmt = lambda part, key, p: f"{part[key][p] * 1e3:.0f}ms" if part and part["num_requests"] else "-"  # noqa: E731
            split = (f"{fmt(on, 'tpot_s', 'p99')}/{fmt(off, 'tpot_s', 'p99')}, {fmt(on, 'ttfa_s', 'p50')}/{fmt(off, 'ttfa_s', 'p50')}, "
                     f"{fmt(on, 'e2e_s', 'p50')}/{fmt(off, 'e2e_s', 'p50')}")
            if not on:
                split = f"-/{summ['tpot_s']['p99'] * 1e3:.0f}ms, -/{summ['ttft_s']['p50'] * 1e3:.0f}ms, -/{summ['e2e_s']['p50'] * 1e3:.0f}ms"
        print(f"{share:>12.0%} {think:>9.0f} {ans:>10.0f} {gpus:>5d} {str(answer.verified):>8} {usd_h:>8.2f} {usd_answer:>11.3f} {usd_output:>11.3f}   {split}  ({time.perf_counter() - t0:.0f} s wall)")


if __name__ == "__main__":
    main()
