"""Autoscaling on a day of diurnal traffic: GPU-hours provisioned vs a fixed fleet, and the cost
of cold starts (issue 4, "many replicas": autoscaling with cold start, diurnal traffic).

Run from the repo root: `.venv/bin/python benchmarks/econ_autoscale.py [--qps 6] [--hours 24]`.
Chat traffic (default lengths) on Llama-3.1-8B / H100-SXM with max_num_seqs 32, arriving as a
Poisson process whose hourly rate follows an office-hours shape (peak 3× the mean at midday,
0.2× at night), least-outstanding-tokens router. Autoscaler: a decision every 5 min, 1-8
replicas, target 8k outstanding tokens per replica. Prints, per fleet: GPU-hours provisioned,
mean and peak replicas, TTFT p99, SLO attainment, $ for the day at the on-demand price, and the
simulator's wall time.
"""

from __future__ import annotations

import argparse
import time

from simulator.capacity import usd_per_gpu_hour
from simulator.engine import simulate
from simulator.scenario import Scenario

SHAPE = [0.2] * 6 + [1, 2, 3, 3, 3, 3, 3, 3, 2, 2, 2, 1, 1, 1, 0.5, 0.5, 0.3, 0.2]


def scenario(qps: float, cluster: dict) -> Scenario:
    return Scenario.model_validate({
        "model": {"name": "Llama-3.1-8B"},
        "gpu": {"name": "H100-SXM"},
        "engine": {"max_num_seqs": 32},
        "workload": {"arrival": {"kind": "diurnal", "rate_qps": qps, "diurnal_shape": SHAPE}},
        "cluster": {"router": "least_outstanding_tokens"} | cluster,
    })


def autoscaled(cold_start_s: float) -> dict:
    return {"autoscale": {"enabled": True, "min_replicas": 1, "max_replicas": 8, "interval_s": 300.0, "cold_start_s": cold_start_s, "target_outstanding_tok": 8_000}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--qps", type=float, default=6.0, help="mean rate over the day")
    ap.add_argument("--hours", type=float, default=24.0)
    args = ap.parse_args()
    n = int(args.qps * 3600 * args.hours)
    print(f"diurnal chat, mean {args.qps:g} req/s (peak {args.qps * 3 / (sum(SHAPE) / 24):.1f}), {args.hours:g} h, {n} requests, Llama-3.1-8B on H100-SXM")
    print(f"{'fleet':<28} {'GPU-h':>7} {'mean rep':>8} {'peak rep':>8} {'TTFT p99':>9} {'SLO att':>8} {'$/day':>8}")
    price = usd_per_gpu_hour(scenario(args.qps, {}))
    peak = 1
    for label, cluster in (("autoscaled, cold start 0 s", autoscaled(0.0)), ("autoscaled, cold start 600 s", autoscaled(600.0)), ("fixed at the peak", None)):
        if cluster is None:
            cluster = {"replicas": peak}
            label = f"fixed {peak} replicas"
        t0 = time.perf_counter()
        s = simulate(scenario(args.qps, cluster), num_requests=n, seed=0).summary()
        c = s["cluster"]
        scale = c.get("autoscale", {})
        peak = max(peak, scale.get("peak_replicas", 1))
        gpu_h = s["gpu_seconds"] / 3600.0
        mean_rep = scale.get("mean_replicas", c["replicas_provisioned"])
        peak_rep = scale.get("peak_replicas", c["replicas_provisioned"])
        print(f"{label:<28} {gpu_h:>7.1f} {mean_rep:>8.2f} {peak_rep:>8d} {s['ttft_s']['p99'] * 1e3:>7.0f}ms {s['slo_attainment']:>8.2%} {gpu_h * price:>8.0f}"
              f"   ({time.perf_counter() - t0:.0f} s wall)")


if __name__ == "__main__":
    main()
