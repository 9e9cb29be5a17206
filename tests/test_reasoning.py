"""Reasoning workloads: thinking tokens on a fraction of traffic, budget forcing, split results."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.engine import simulate
from simulator.scenario import Scenario, WorkloadSpec
from simulator.workload import generate_requests


def workload(on_frac: float, budget: int | None = None, **extra) -> WorkloadSpec:
    reasoning = {"on_frac": on_frac, "thinking_tok": {"kind": "lognormal", "mean": 3000, "sigma": 0.8, "low": 16, "high": 32000}}
    if budget is not None:
        reasoning["thinking_budget_tok"] = budget
    return WorkloadSpec.model_validate({"classes": [{"reasoning": reasoning}, {"name": "plain", "weight": 0.5}]} | extra)


def test_reasoning_off_leaves_every_draw_unchanged():
    plain = generate_requests(WorkloadSpec.model_validate({"classes": [{}, {"name": "plain", "weight": 0.5}]}), seed=7, num_requests=3000)
    off = generate_requests(workload(0.0), seed=7, num_requests=3000)
    on = generate_requests(workload(0.5), seed=7, num_requests=3000)
    for name in ("arrival_s", "prompt_tok", "output_tok", "class_id", "prefix_id"):
        assert np.array_equal(getattr(plain, name), getattr(off, name)), name
    assert not off.reasoning_on.any() and not off.thinking_tok.any()
    # reasoning on adds thinking in front of the same answers
    assert np.array_equal(on.output_tok - on.thinking_tok, plain.output_tok)
    assert np.array_equal(on.arrival_s, plain.arrival_s)


def test_on_frac_and_budget_forcing():
    r = generate_requests(workload(0.3, budget=1500), seed=1, num_requests=20_000)
    chat = r.class_id == 0
    assert r.reasoning_on[chat].mean() == pytest.approx(0.3, abs=0.015)
    assert not r.reasoning_on[~chat].any()  # the other class does not reason
    thinking = r.thinking_tok[r.reasoning_on]
    assert thinking.max() == 1500 and thinking.min() >= 16
    assert (thinking == 1500).mean() > 0.2  # the budget binds for the long tail of a mean-3000 lognormal
    assert (r.thinking_tok[~r.reasoning_on] == 0).all()


def test_a_longer_workload_extends_a_shorter_one():
    short = generate_requests(workload(0.4), seed=3, num_requests=500)
    long = generate_requests(workload(0.4), seed=3, num_requests=2000)
    first = np.flatnonzero(long.class_id[:500] == 0)
    assert np.array_equal(short.thinking_tok[first], long.thinking_tok[:500][first])


def test_the_context_limit_cuts_the_answer_first_and_keeps_thinking_within_output():
    r = generate_requests(workload(1.0), seed=2, num_requests=2000, max_model_len_tok=8192)
    assert (r.thinking_tok <= r.output_tok).all()
    assert (r.prompt_tok + r.output_tok <= 8192).all()
    assert (r.prompt_tok + r.output_tok == 8192).any()  # the cap bit


def test_results_split_latency_by_reasoning_on_and_off():
    s = Scenario.model_validate({"model": {"name": "Llama-3.2-1B"}, "engine": {"profile": "roofline", "max_model_len_tok": 16384},
                                 "workload": workload(0.5).model_dump() | {"arrival": {"rate_qps": 5}}})
    res = simulate(s, num_requests=300, seed=5)
    frame, summary = res.requests, res.summary()
    assert {"thinking_tok", "reasoning_on"} <= set(frame.columns)
    on, off = summary["reasoning"]["on"], summary["reasoning"]["off"]
    assert on["num_requests"] + off["num_requests"] == 300
    assert on["num_requests"] == int(frame["reasoning_on"].sum())
    assert on["e2e_s"]["p50"] > 3 * off["e2e_s"]["p50"]  # thousands of thinking tokens before the answer
    assert summary["answer_tok_s"] < summary["throughput_tok_s"]
    assert off["thinking_tok_mean"] == 0
    # the answer starts after the thinking: between the first token and the last
    assert on["ttft_s"]["p50"] < on["ttfa_s"]["p50"] < on["e2e_s"]["p50"]
    assert off["ttfa_s"] == off["ttft_s"]


def test_reasoning_on_more_traffic_needs_more_gpu_time():
    def busy(frac):
        s = Scenario.model_validate({"model": {"name": "Llama-3.2-1B"}, "engine": {"profile": "roofline", "max_model_len_tok": 16384},
                                     "workload": workload(frac).model_dump() | {"arrival": {"rate_qps": 5}}})
        return float(simulate(s, num_requests=200, seed=6).steps["duration_s"].sum())

    assert busy(0.0) < busy(0.3) < busy(1.0)
