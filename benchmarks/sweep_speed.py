"""Sweep speed: the same sweep of small serving simulations, serial, on local worker processes
and on a local Ray cluster; prints wall times, speed-ups and checks the tables are identical.

    .venv/bin/python benchmarks/sweep_speed.py [--items 160] [--requests 400] [--workers 1 2] [--chunksize 4] [--no-ray]

Each item is one replica simulated at one rate (`simulator.capacity.Probe`), the unit of work of
a capacity search. Speed-up is bounded by the machine's free cores: on a shared 2-core machine
expect at most ~2×, less the process start-up (spawn imports numpy/pandas/simpy per worker) and,
for Ray, the cluster start (reported separately, it is paid once per session).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from simulator.capacity import Probe, probe_row  # noqa: E402
from simulator.scenario import Scenario  # noqa: E402
from simulator.sweep import LocalExecutor, RayExecutor, run_sweep  # noqa: E402


def items(n: int, num_requests: int) -> dict[str, Probe]:
    base = Scenario().with_changes(**{"model.name": "Llama-3.2-1B", "workload.num_requests": num_requests, "slo.tpot_p99_s": 0.002})
    out = {}
    for i in range(n):
        s = base.with_changes(**{"seed": i, "engine.max_num_seqs": (16, 64, 256)[i % 3], "gpu.name": ("H100-SXM", "A100-80GB")[(i // 3) % 2]})
        out[f"s{i:05d}"] = Probe(s, rate_qps=10.0 + 10.0 * (i % 13), num_requests=num_requests)
    return out


def warm(_: int) -> int:
    """Start-up a worker pays once: importing the simulator stack and filling its caches (model
    and GPU cards, price sheet) with one tiny simulation of each GPU the sweep uses."""
    for probe in items(2, 20).values():
        probe_row(probe)
    time.sleep(0.3)  # long enough that every worker picks up one warm-up task
    return os.getpid()


def start(label: str, executor, workers: int) -> None:
    t0 = time.perf_counter()
    list(executor.map_unordered(warm, range(workers)))
    print(f"{label + ' start':<28} {time.perf_counter() - t0:8.2f} s (once per session, not in the sweep time)", flush=True)


def timed(label: str, executor, work) -> tuple[float, pd.DataFrame]:
    t0 = time.perf_counter()
    table = run_sweep(probe_row, work, None, executor, progress=False)
    wall = time.perf_counter() - t0
    print(f"{label:<28} {wall:8.2f} s", flush=True)
    return wall, table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=160)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--chunksize", type=int, default=4, help="items per task (local processes and Ray)")
    ap.add_argument("--no-ray", action="store_true")
    args = ap.parse_args()
    work = items(args.items, args.requests)
    print(f"sweep: {args.items} simulations × {args.requests} requests, {args.chunksize} per task; cpu_count={os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    results: dict[str, float] = {}
    tables: dict[str, pd.DataFrame] = {}
    for w in args.workers:
        with LocalExecutor(w, chunksize=args.chunksize) as ex:
            label = "serial (in-process)" if w == 1 else f"local, {w} processes"
            if w > 1:
                start(label, ex, w)
            results[label], tables[label] = timed(label, ex, work)
    if not args.no_ray:
        with RayExecutor(num_cpus=max(args.workers), chunksize=1) as ex:
            label = f"ray, {max(args.workers)} CPUs"
            start(label, ex, max(args.workers))  # cluster start + worker imports
            ex.chunksize = args.chunksize
            results[label], tables[label] = timed(label, ex, work)
    base_label = next(iter(results))
    print(f"\nspeed-up vs {base_label}:")
    for label, wall in results.items():
        print(f"  {label:<28} {results[base_label] / wall:5.2f}×   ({args.items / wall:6.1f} simulations/s)")
    ref = tables[base_label]
    same = all(t.equals(ref) for t in tables.values())
    print(f"identical tables across executors: {same}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
