"""Bad input to the simulator gives a one-line LifecostError naming the field and the fix."""

from __future__ import annotations

import numpy as np
import pytest

from models.errors import LifecostError
from simulator.engine import simulate
from simulator.scenario import Scenario, parse_scenario
from simulator.workload import Requests

SMALL = Scenario.model_validate({"model": {"name": "Llama-3.2-1B"}, "engine": {"max_model_len_tok": 1024}})


def requests(prompt, output, arrival=None) -> Requests:
    n = len(prompt)
    return Requests(
        arrival_s=np.zeros(n) if arrival is None else np.asarray(arrival, float),
        prompt_tok=np.asarray(prompt),
        output_tok=np.asarray(output),
        class_id=np.zeros(n, np.int16),
        priority=np.zeros(n, np.int16),
        prefix_id=np.full(n, -1),
        prefix_tok=np.zeros(n),
        class_names=("chat",),
    )


def one_line_error(fn, *fields: str) -> str:
    with pytest.raises(LifecostError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg
    for f in fields:
        assert f in msg, (f, msg)
    return msg


def test_a_prompt_longer_than_the_context_limit_names_the_request_and_the_field():
    msg = one_line_error(lambda: simulate(SMALL, requests([100, 1500, 10], [5, 5, 5])), "engine.max_model_len_tok", "request 1")
    assert "1500" in msg


def test_outputs_that_run_past_the_context_limit_stop_there_as_in_vllm():
    r = simulate(SMALL, requests([1000], [500])).requests
    assert r["generated_tok"].tolist() == [24] and r["output_tok"].tolist() == [24]


def test_a_negative_or_zero_rate_is_refused():
    one_line_error(lambda: simulate(SMALL, num_requests=10, rate_qps=-1.0), "rate_qps")
    one_line_error(lambda: simulate(SMALL, num_requests=10, rate_qps=0.0), "rate_qps")


def test_zero_block_size_is_refused_when_the_scenario_is_read():
    one_line_error(lambda: parse_scenario("engine:\n  block_size_tok: 0\n"), "engine.block_size_tok", ":2")


def test_a_model_that_does_not_fit_the_gpu_says_how_much_it_needs():
    big = Scenario.model_validate({"model": {"name": "Llama-3.1-405B"}, "gpu": {"name": "H100-SXM"}})
    msg = one_line_error(lambda: simulate(big, num_requests=10), "model.name", "GiB")
    assert "Llama-3.1-405B" in msg and "H100-SXM" in msg


def test_a_token_budget_below_max_num_seqs_is_refused_as_vllm_does():
    s = SMALL.with_changes(**{"engine.max_num_seqs": 512, "engine.max_num_batched_tokens": 256})
    one_line_error(lambda: simulate(s, num_requests=10), "engine.max_num_batched_tokens")


def test_without_chunked_prefill_the_budget_must_hold_a_whole_prompt():
    s = SMALL.with_changes(**{"engine.enable_chunked_prefill": False, "engine.max_num_batched_tokens": 512})
    one_line_error(lambda: simulate(s, num_requests=10), "engine.max_num_batched_tokens", "chunked prefill")


def test_unsorted_arrivals_and_empty_requests_are_refused():
    one_line_error(lambda: simulate(SMALL, requests([10, 10], [5, 5], arrival=[1.0, 0.5])), "requests.arrival_s")
    one_line_error(lambda: simulate(SMALL, requests([], [])), "workload.num_requests")


def test_too_few_kv_blocks_for_one_sequence_are_refused():
    one_line_error(lambda: simulate(SMALL, requests([10], [5]), kv_blocks=10), "kv_blocks")
