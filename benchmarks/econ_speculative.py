"""Speculative decoding economics: decode speed-up vs batch size, next to the batch-1 analytic bound.

For each method (draft model / EAGLE head / n-gram), α ∈ {0.5, 0.7, 0.9} and k ∈ {2, 4, 8} it
simulates closed batches of B identical requests (512-token prompts, 512-token outputs, all
arriving at t = 0, max_num_seqs = B) with and without speculation on the roofline predictor, and
prints the ratio of mean TPOT (decode speed-up). Next to batch 1 it prints the analytic bound
E[X]/(1 + k·c) (Leviathan et al. 2023, §3.4), c = draft step ÷ target step at batch 1 from the
same predictors; the plain E[X] = (1−α^(k+1))/(1−α) is shown too.

    .venv/bin/python benchmarks/econ_speculative.py [--model Llama-3.1-8B] [--gpu H100-SXM] [--draft Llama-3.2-1B]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from simulator.engine import simulate
from simulator.predictor import StepFeatures
from simulator.scenario import Scenario
from simulator.speculative import analytic_speedup, expected_tok_per_step
from simulator.workload import Requests

BATCHES = (1, 4, 16, 64, 256)
ALPHAS = (0.5, 0.7, 0.9)
KS = (2, 4, 8)
PROMPT_TOK = OUTPUT_TOK = 512


def _requests(n: int) -> Requests:
    z = np.zeros(n, np.int64)
    return Requests(arrival_s=np.zeros(n), prompt_tok=np.full(n, PROMPT_TOK), output_tok=np.full(n, OUTPUT_TOK), class_id=np.zeros(n, np.int16),
                    priority=z, prefix_id=np.full(n, -1), prefix_tok=z, class_names=("chat",))


def scenario(model: str, gpu: str, batch: int, method: str = "none", alpha: float = 0.7, k: int = 4, draft: str | None = None) -> Scenario:
    d = {"model": {"name": model}, "gpu": {"name": gpu},
         "engine": {"profile": "roofline", "max_num_seqs": batch, "max_num_batched_tokens": max(8192, batch), "max_model_len_tok": 2048}}
    if method != "none":
        d["speculative"] = {"method": method, "num_draft_tok": k, "acceptance_rate": alpha, "draft_model": draft if method == "draft" else None}
    return Scenario.model_validate(d)


def tpot_mean_s(s: Scenario, batch: int, seed: int = 0) -> float:
    n = max(batch, 24)  # batch 1: 24 requests one after another, so the per-request draws average out
    return simulate(s, _requests(n), seed=seed).summary()["tpot_s"]["mean"]


def speedup(model: str, gpu: str, batch: int, method: str, alpha: float, k: int, draft: str | None) -> float:
    return tpot_mean_s(scenario(model, gpu, batch), batch) / tpot_mean_s(scenario(model, gpu, batch, method, alpha, k, draft), batch)


def draft_cost_frac(model: str, gpu: str, method: str, draft: str | None, head_step_frac: float = 0.05) -> float:
    """c: one draft step ÷ one target decode step at batch 1, mid-output context, from the same predictors."""
    from simulator.engine import prepare

    if method == "ngram":
        return 0.0
    if method == "eagle":
        return head_step_frac
    f = StepFeatures(0, 1, PROMPT_TOK + OUTPUT_TOK // 2, 0, 0, 1)
    t = prepare(scenario(model, gpu, 1), _requests(1)).predictor
    d = prepare(scenario(draft, gpu, 1), _requests(1)).predictor
    return d.step_time_s(f) / t.step_time_s(f)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="Llama-3.1-8B")
    ap.add_argument("--gpu", default="H100-SXM")
    ap.add_argument("--draft", default="Llama-3.2-1B")
    ap.add_argument("--methods", default="draft,eagle,ngram")
    a = ap.parse_args(argv)
    print(f"# speculative decoding speed-up (mean TPOT without ÷ with) — {a.model} on {a.gpu}, roofline, {PROMPT_TOK}/{OUTPUT_TOK} tok")
    head = "method  alpha  k   E[X]  bound@1  " + "  ".join(f"B={b:<4d}" for b in BATCHES) + "  err@1"
    for method in a.methods.split(","):
        c = draft_cost_frac(a.model, a.gpu, method, a.draft)
        print(f"\n{method} (c = draft/target step at batch 1 = {c:.3f})")
        print(head)
        for alpha in ALPHAS:
            for k in KS:
                bound = analytic_speedup(alpha, k, c)
                row = [speedup(a.model, a.gpu, b, method, alpha, k, a.draft) for b in BATCHES]
                err = row[0] / bound - 1
                print(f"{method:7s} {alpha:4.1f} {k:3d} {expected_tok_per_step(alpha, k):6.2f} {bound:8.2f}  " + "  ".join(f"{x:6.2f}" for x in row) + f"  {err:+6.1%}")
                sys.stdout.flush()


if __name__ == "__main__":
    main()
