"""How fast requests are generated and traces read (target: 1M requests well under a second).

Run from the repo root: `.venv/bin/python benchmarks/workload_speed.py [--sizes 100000,1000000]`.
Prints, per arrival process, the best-of-3 wall time to generate N requests of a two-class chat +
RAG workload with shared prefixes, and the time to read the shared Splitwise trace.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from simulator.scenario import ArrivalSpec, LengthDist, PrefixSpec, RequestClass, WorkloadSpec
from simulator.traces import read_trace
from simulator.workload import generate_requests

TRACE = Path(__file__).resolve().parents[2] / "shared" / "traces" / "splitwise_conv.csv"
CLASSES = [
    RequestClass(name="chat", weight=3.0),
    RequestClass(
        name="rag",
        prompt_tok=LengthDist(kind="uniform", low=1000, high=4000),
        prefix=PrefixSpec(num_prefixes=20, prefix_tok=800, share_prob=0.7, zipf_s=1.1),
    ),
]


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100000,1000000")
    args = ap.parse_args()
    print(f"{'arrival':<10}{'requests':>12}{'wall s':>10}{'M req/s':>10}")
    for kind in ("poisson", "gamma", "diurnal"):
        spec = WorkloadSpec(arrival=ArrivalSpec(kind=kind, rate_qps=20.0, cv=2.0), classes=CLASSES)
        for n in (int(s) for s in args.sizes.split(",")):
            wall_s = best_of(lambda: generate_requests(spec, seed=0, num_requests=n, max_model_len_tok=8192))
            print(f"{kind:<10}{n:>12,}{wall_s:>10.3f}{n / wall_s / 1e6:>10.2f}")
    if TRACE.is_file():
        rows = len(read_trace(TRACE))
        wall_s = best_of(lambda: read_trace(TRACE, rate_qps=10.0))
        print(f"{'trace':<10}{rows:>12,}{wall_s:>10.3f}{rows / wall_s / 1e6:>10.2f}   ({TRACE.name}, read + validate + rescale)")


if __name__ == "__main__":
    main()
