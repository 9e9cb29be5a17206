"""Router comparison under prefix-heavy traffic (issue 4, table 6).

Run from the repo root: `.venv/bin/python benchmarks/econ_router.py [--replicas 4] [--requests 4000] [--qps 52]`.
Traffic: one chat class whose requests mostly start with one of 200 shared system prompts of
1,500 tokens (Zipf popularity s = 1.0, 90 % of requests share), 8B model on H100-SXM, the KV
cache trimmed to 30 % of HBM so the replicas cannot each hold every prompt. Prints, per router,
the prefix hit rate (prompt tokens served from cache), TTFT p50/p99, TPOT p99, output
throughput, SLO attainment and how many requests each replica took.
"""

from __future__ import annotations

import argparse
import time

from simulator.engine import simulate
from simulator.scenario import Scenario

ROUTER_NAMES = ("round_robin", "random", "least_outstanding_tokens", "prefix_affinity")


def scenario(router: str, replicas: int, qps: float) -> Scenario:
    return Scenario.model_validate({
        "model": {"name": "Llama-3.1-8B"},
        "gpu": {"name": "H100-SXM"},
        "engine": {"gpu_memory_utilization": 0.30, "max_num_seqs": 128},
        "workload": {
            "arrival": {"kind": "poisson", "rate_qps": qps},
            "classes": [{
                "name": "chat",
                "prompt_tok": {"kind": "lognormal", "mean": 1900, "sigma": 0.3, "low": 1600, "high": 6000},
                "output_tok": {"kind": "lognormal", "mean": 200, "sigma": 0.7, "low": 4, "high": 1500},
                "prefix": {"num_prefixes": 200, "prefix_tok": 1500, "share_prob": 0.9, "zipf_s": 1.0},
            }],
        },
        "cluster": {"replicas": replicas, "router": router},
    })


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--qps", type=float, default=52.0)
    args = ap.parse_args()
    print(f"prefix-heavy chat, Llama-3.1-8B on {args.replicas}× H100-SXM, {args.qps:g} req/s, {args.requests} requests")
    print(f"{'router':<26} {'hit rate':>8} {'TTFT p50':>9} {'TTFT p99':>9} {'TPOT p99':>9} {'tok/s':>8} {'SLO att':>8}  requests per replica")
    for name in ROUTER_NAMES:
        t0 = time.perf_counter()
        s = simulate(scenario(name, args.replicas, args.qps), num_requests=args.requests, seed=0).summary()
        wall = time.perf_counter() - t0
        spread = s["cluster"]["requests_per_replica"]
        print(f"{name:<26} {s['prefix_hit_frac']:>8.1%} {s['ttft_s']['p50'] * 1e3:>7.0f}ms {s['ttft_s']['p99'] * 1e3:>7.0f}ms "
              f"{s['tpot_s']['p99'] * 1e3:>7.1f}ms {s['throughput_tok_s']:>8.0f} {s['slo_attainment']:>8.1%}  {spread}  ({wall:.1f} s wall, {s['predictor']})")


if __name__ == "__main__":
    main()
