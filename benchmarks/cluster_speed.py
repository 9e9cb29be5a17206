"""How fast the cluster simulator runs: the routed path vs the core single-replica path, and a
many-replica fleet.

Run from the repo root: `.venv/bin/python benchmarks/cluster_speed.py [--requests 50000] [--fleet-requests 400000]`.
Default chat scenario, Llama-3.1-8B on H100-SXM, roofline step times. Prints (1) one replica at
8 req/s simulated by `engine.simulate` (arrivals read from the sorted array) and by
`cluster.simulate_cluster` (a router process pushing every request; the results are identical),
and (2) 8 replicas behind least-outstanding-tokens at 64 req/s: wall time, simulated time and
requests per wall second.
"""

from __future__ import annotations

import argparse
import time

from simulator.cluster import simulate_cluster
from simulator.engine import simulate
from simulator.scenario import Scenario


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=50_000)
    ap.add_argument("--fleet-requests", type=int, default=400_000)
    args = ap.parse_args()
    s = Scenario.model_validate({"engine": {"profile": "roofline"}, "workload": {"arrival": {"rate_qps": 8}}})
    t0 = time.perf_counter()
    core = simulate(s, num_requests=args.requests, seed=0)
    t_core = time.perf_counter() - t0
    t0 = time.perf_counter()
    routed = simulate_cluster(s, num_requests=args.requests, seed=0)
    t_routed = time.perf_counter() - t0
    same = core.steps.equals(routed.steps)
    print(f"1 replica, {args.requests} requests: core path {t_core:.2f} s, routed path {t_routed:.2f} s (identical steps: {same})")
    fleet = s.with_changes(**{"cluster.replicas": 8, "cluster.router": "least_outstanding_tokens"})
    t0 = time.perf_counter()
    res = simulate(fleet, num_requests=args.fleet_requests, rate_qps=64, seed=0).summary()
    wall = time.perf_counter() - t0
    print(f"8 replicas, {args.fleet_requests} requests at 64 req/s: {wall:.1f} s wall for {res['makespan_s'] / 3600:.2f} h simulated "
          f"({args.fleet_requests / wall:,.0f} requests per wall second)")


if __name__ == "__main__":
    main()
