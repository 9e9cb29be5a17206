"""How well a Profile fitted on one model size predicts the runs it never saw (issue 5 targets).

Run from the repo root: `.venv/bin/python benchmarks/calibration_fidelity.py [--runs DIR ...]`.
For each committed calibration folder (default: the H100 and the CPU run logs under
`models/profiles/`) it fits a Profile in memory (`calibrate.fit.fit_profile`, nothing written),
replays every run in the simulator (`calibrate.validate.validate`) and prints, per set, the mean
and max |error| of the figures the targets name — held-out training step time and peak memory
(target ≤ 10 %), held-out serving throughput and TTFT/TPOT p50 (target ≤ 15 %) — plus the time
the fit and the replays took.

As extra information, clearly apart from the targets: the held-out training step-time error if
the GPU's zero-token intercept were fitted per decoder layer instead of per step
(`calibrate.fit.fit_training(intercept="layer")`). The fit model's runs cannot tell the two apart
(both fit them equally); the difference on the held-out sizes is the model-form uncertainty a
user should know about.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from calibrate.fit import fit_profile, fit_training, load_runs
from calibrate.validate import SERVING_TARGET, TRAINING_TARGET, validate

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RUNS = [ROOT / "models" / "profiles" / "h100-sxm" / "runs", ROOT / "models" / "profiles" / "cpu-amd-epyc" / "vllm-cpu" / "runs"]
METRICS = ("output_throughput_tok_s", "ttft_s_p50", "tpot_s_p50", "step_time_s", "peak_memory_gib")


def intercept_sensitivity(runs, result) -> dict[str, float]:
    """{held-out model/method: mean |step-time error| with a per-layer GPU intercept}."""
    from calibrate.fit import gpu_card_for
    from calibrate.validate import check_training

    prof = result.profile
    if prof.training is None or not prof.training.host_layer_s:
        return {}
    gpu = gpu_card_for(prof.gpu.catalog_name, prof.ceilings, runs.probe)
    alt = fit_training(runs.records, prof.training.fit_model, gpu, prof.ceilings, intercept="layer")
    alt_prof = prof.model_copy(update={"training": alt.terms})
    errs: dict[str, list[float]] = {}
    for rec in runs.of("train"):
        if rec.get("model") == prof.training.fit_model or rec.get("error") or not rec.get("step_time_s"):
            continue
        res = check_training(rec, alt_prof, gpu)
        errs.setdefault(f"{rec['model']} {rec['method']}", []).append(abs(res["step_time_s"]["error"]))
    return {k: sum(v) / len(v) for k, v in sorted(errs.items())}


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
        alt = intercept_sensitivity(runs, result)
        if alt:
            print("  extra information, not the target: held-out training step time with the GPU intercept per layer")
            for what, err in alt.items():
                print(f"    {what:<34} mean |err| {err:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
