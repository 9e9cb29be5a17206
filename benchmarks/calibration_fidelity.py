"""How well a Profile fitted on one model size predicts the runs it never saw (issue 5 targets).

Run from the repo root: `.venv/bin/python benchmarks/calibration_fidelity.py [--runs DIR ...]`.
For each committed calibration folder (default: the H100 and the CPU run logs under
`models/profiles/`) it fits a Profile in memory (`calibrate.fit.fit_profile`, nothing written),
replays every run in the simulator (`calibrate.validate.validate`) and prints, per set, the mean
and max |error| of the figures the targets name — held-out training step time and peak memory
(target ≤ 10 %), held-out serving throughput and TTFT/TPOT p50 (target ≤ 15 %) — plus the time
the fit and the replays took.

As extra information, clearly apart from the targets (which are judged on every held-out run as
measured), it prints the held-out training step-time error over the *steady* runs only: those
whose timed steps spread by less than `STEADY_SPREAD` of their median. Launch-bound steps (small
micro-batches: the host enqueues kernels slower than the GPU runs them) spread by 10–60 % and
moved by ±15 % between two measurements of the same run (`runs/train_repeat.jsonl`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from calibrate.fit import fit_profile, load_runs
from calibrate.validate import SERVING_TARGET, TRAINING_TARGET, validate

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RUNS = [ROOT / "models" / "profiles" / "h100-sxm" / "runs", ROOT / "models" / "profiles" / "cpu-amd-epyc" / "vllm-cpu" / "runs"]
METRICS = ("output_throughput_tok_s", "ttft_s_p50", "tpot_s_p50", "step_time_s", "peak_memory_gib")
STEADY_SPREAD = 0.05  # (max − min) / median of a run's timed steps below which it is compute-bound


def step_spread(rec: dict) -> float | None:
    """(max − min) / median of a training record's timed steps (after its warm-up), None if unrecorded."""
    times = rec.get("step_times_s") or []
    timed = sorted(times[int(rec.get("warmup_steps") or 0):])
    if len(timed) < 2:
        return None
    return (timed[-1] - timed[0]) / timed[len(timed) // 2]


def steady_training_errors(runs, fid) -> dict[str, tuple[int, int, float]]:
    """{held-out model: (steady runs, all runs, mean |step-time error| over the steady ones)}."""
    by_key = {r.get("key"): r for r in runs.of("train")}
    out: dict[str, list] = {}
    for row in fid.training:
        if row["set"] != "held-out" or "metrics" not in row:
            continue
        spread = step_spread(by_key.get(row["key"], {}))
        entry = out.setdefault(row["model"], [0, 0, []])
        entry[1] += 1
        if spread is not None and spread < STEADY_SPREAD:
            entry[0] += 1
            entry[2].append(abs(row["metrics"]["step_time_s"]["error"]))
    return {m: (n, total, sum(e) / len(e) if e else float("nan")) for m, (n, total, e) in out.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="*", type=Path, default=DEFAULT_RUNS, help="calibration run-log folders")
    a = ap.parse_args()
    targets = {**SERVING_TARGET, **TRAINING_TARGET}
    for folder in a.runs:
        t0 = time.perf_counter()
        runs = load_runs(folder)
        result = fit_profile(runs, command=f"benchmarks/calibration_fidelity.py --runs {folder}")
        t_fit = time.perf_counter() - t0
        t0 = time.perf_counter()
        fid = validate(runs, result.profile)
        t_val = time.perf_counter() - t0
        print(f"\n{folder}  ({result.profile.gpu.name}, {result.profile.engine.name} {result.profile.engine.version}; "
              f"fit {t_fit:.1f} s, {len(fid.serving)} serving replays + {len(fid.training)} training runs checked in {t_val:.1f} s)")
        print(f"  {'set':<36} {'metric':<24} {'mean |err|':>10} {'max |err|':>10}  target")
        for name, block in fid.summary().items():
            for m, st in block["metrics"].items():
                if m not in METRICS:
                    continue
                tgt = block.get("targets", {}).get(m)
                mark = "" if tgt is None else f"≤{targets[m]:.0%} {'met' if tgt['met'] else 'MISSED'}"
                print(f"  {name:<36} {m:<24} {st['mean_abs_error']:>9.1%} {st['max_abs_error']:>10.1%}  {mark}")
        steady = steady_training_errors(runs, fid)
        if steady:
            print(f"  extra information, not the target: held-out training step time over steady runs only "
                  f"(timed steps spread < {STEADY_SPREAD:.0%})")
            for model, (n, total, err) in sorted(steady.items()):
                print(f"    {model:<34} {n} of {total} runs steady: mean |err| {err:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
