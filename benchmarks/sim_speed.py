"""How fast the serving simulator runs: wall time, simulated requests/s and peak RSS by size.

Each size runs in a fresh subprocess pinned to one CPU core, so its peak RSS (ru_maxrss) is its
own. Both wall time and the process's CPU time are printed: on a shared machine the wall time also
counts time spent waiting for the core; CPU time is what a dedicated core takes. Workload: the default scenario's chat class (lognormal prompts ~600 tokens, outputs ~250)
at Poisson arrivals on one replica (Llama-3.1-8B, H100-SXM, roofline step times, prefix caching
on). Target on one core: 1M requests ≤ 60 s, peak RSS ≤ 1 GB.

    .venv/bin/python benchmarks/sim_speed.py                 # 10k, 100k, 1M
    .venv/bin/python benchmarks/sim_speed.py --sizes 10000 100000 --qps 8 --json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

TARGET_1M_S = 60.0
TARGET_RSS_MB = 1024.0


def run_one(num_requests: int, qps: float | None, seed: int) -> dict:
    """Generate the workload, simulate it, summarise it; measure each phase (in this process)."""
    from simulator.engine import simulate
    from simulator.scenario import load_scenario
    from simulator.workload import generate_requests

    # the roofline, so the figures do not move when a calibration Profile is added for the GPU
    scenario = load_scenario(None).with_changes(**{"engine.profile": "roofline"})
    c0 = time.process_time()
    t0 = time.perf_counter()
    requests = generate_requests(scenario.workload, seed=seed, num_requests=num_requests, rate_qps=qps, max_model_len_tok=scenario.engine.max_model_len_tok)
    t1 = time.perf_counter()
    result = simulate(scenario, requests)
    t2 = time.perf_counter()
    summary = result.summary()
    t3 = time.perf_counter()
    c3 = time.process_time()
    return {
        "num_requests": num_requests,
        "generate_s": t1 - t0,
        "simulate_s": t2 - t1,
        "summary_s": t3 - t2,
        "wall_s": t3 - t0,
        "cpu_s": c3 - c0,  # this process's CPU time: what one dedicated core would take
        "sim_requests_per_s": num_requests / (t3 - t0),
        "step_runs": int(len(result.steps)),
        "steps": int(summary["num_steps"]),
        "simulated_s": summary["makespan_s"],
        "throughput_req_s": summary["throughput_req_s"],
        "ttft_p99_s": summary["ttft_s"]["p99"],
        "tpot_p99_s": summary["tpot_s"]["p99"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--qps", type=float, default=None, help="arrival rate (default: the scenario's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON object per size")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child is not None:  # one measurement, in its own process
        print(json.dumps(run_one(args.child, args.qps, args.seed)))
        return

    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    core = sorted(os.sched_getaffinity(0))[0]
    if not args.json:
        print(f"{'requests':>10} {'wall s':>8} {'CPU s':>8} {'req/s (CPU)':>12} {'step runs':>10} {'steps':>11} {'peak RSS MB':>12}", file=sys.stderr)
    for n in args.sizes:
        cmd = ["taskset", "-c", str(core), sys.executable, __file__, "--child", str(n), "--seed", str(args.seed)]
        if args.qps is not None:
            cmd += ["--qps", str(args.qps)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"size {n} failed:\n{proc.stderr}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        if args.json:
            print(json.dumps(row))
        else:
            print(f"{n:>10,} {row['wall_s']:>8.2f} {row['cpu_s']:>8.2f} {n / row['cpu_s']:>12,.0f} {row['step_runs']:>10,} {row['steps']:>11,} {row['peak_rss_mb']:>12,.0f}")
        if n == 1_000_000:
            ok_t, ok_m = row["cpu_s"] <= TARGET_1M_S, row["peak_rss_mb"] <= TARGET_RSS_MB
            print(f"1M target: CPU {row['cpu_s']:.1f} s on one core ({'meets' if ok_t else 'misses'} ≤ {TARGET_1M_S:.0f} s; wall {row['wall_s']:.1f} s "
                  f"includes waiting for a shared core), "
                  f"peak RSS {row['peak_rss_mb']:.0f} MB ({'meets' if ok_m else 'misses'} ≤ {TARGET_RSS_MB:.0f} MB)", file=sys.stderr)


if __name__ == "__main__":
    main()
